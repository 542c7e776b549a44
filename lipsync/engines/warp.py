"""The default engine: lips that move with the speech, without any model download.

Per render, :meth:`WarpEngine.start` analyses the template's face and takes samples of its
open mouth where it has any (both cached by content), and turns the audio into per-frame
visemes (:mod:`lipsync.mouth`). Per chunk,
:meth:`WarpSession.process <lipsync.engines.warp_session.WarpSession.process>` cuts the
mouth-and-jaw region out of every frame that has a face, warps those crops together in
one batch on the render device (:mod:`lipsync.engines.warp_field`) and pastes them back.
Pixels outside that region, and whole frames without a face, are returned exactly as they
came in.

This module imports neither torch nor the warp: both load in :meth:`WarpEngine.start`,
when the render's decoding is already under way (:func:`lipsync.render.render`), so the
second or so torch takes to import overlaps with it instead of delaying the whole job.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lipsync.engine import FrameEngine, RenderContext
from lipsync.mouth import MouthSettings

if TYPE_CHECKING:
    from lipsync.engines.warp_session import WarpSession


class WarpEngine(FrameEngine):
    name = "warp"

    def __init__(self, device: str = "auto", mouth: MouthSettings | None = None, **_ignored: object):
        super().__init__()
        self.device = device  # the pipeline resolves it into RenderContext.device
        self.mouth_settings = mouth or MouthSettings()
        # the landmark model (about 100 MB) loads on the first template that is not in the
        # analysis cache, once per process (lipsync.face.landmarks), as for wav2lip

    def start(self, ctx: RenderContext) -> WarpSession:
        from lipsync.engines.warp_session import start_session

        return start_session(ctx, self.mouth_settings)
