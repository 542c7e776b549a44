"""The default engine: lips that move with the speech, without any model download.

Per render, :meth:`WarpEngine.start` analyses the template's face and takes samples of its
open mouth where it has any (both cached by content), and turns the audio into per-frame
visemes (:mod:`lipsync.mouth`). Per chunk,
:meth:`WarpSession.process <lipsync.engines.warp_session.WarpSession.process>` cuts the
mouth-and-jaw region out of every frame that has a face, warps those crops together in
one batch and pastes them back. Pixels outside that region, and whole frames without a
face, are returned exactly as they came in.

It runs on the CPU, whatever ``device`` says, in loops compiled by numba: the motion model
on a coarse grid (:mod:`lipsync.engines.warp_field`), the crops sampled through it
(:mod:`lipsync.engines.warp_kernels`) and the lips and the opening per pixel
(:mod:`lipsync.engines.warp_mouth`). They release the GIL while the pipeline decodes and
encodes beside them. A GPU would gain it nothing: the encoder sets the pace.

The preparation (:func:`prepare`: face analysis, mouth samples, visemes) is numpy, dlib and
FFmpeg; the compiled loops load only after it, in :meth:`WarpEngine.start`, while the
render's decoding is already under way (:func:`lipsync.render.render`). A template
without a face therefore fails before they load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from lipsync.engine import FrameEngine, RenderContext
from lipsync.mouth import MouthSettings

if TYPE_CHECKING:
    from lipsync.engines.warp_geometry import MouthGeometry
    from lipsync.engines.warp_samples import MouthSamples
    from lipsync.engines.warp_session import WarpSession
    from lipsync.face.analysis import TemplateAnalysis
    from lipsync.mouth import MouthTrack

_ANALYSIS_SHARE = 0.85  # of the preparation progress; mouth samples and the audio features take the rest


@dataclass(frozen=True)
class PreparedRender:
    """What a render of the warp engine needs before its first chunk."""

    analysis: TemplateAnalysis
    geometry: MouthGeometry
    samples: MouthSamples
    track: MouthTrack


def prepare(ctx: RenderContext, settings: MouthSettings) -> PreparedRender:
    """Analyse the template (or read its cache), sample its open mouths, and turn the audio
    into visemes: numpy, dlib and FFmpeg, before the compiled loops load."""
    from concurrent.futures import ThreadPoolExecutor

    from lipsync.engines.warp_geometry import mouth_geometry
    from lipsync.engines.warp_samples import MouthSamples, mouth_samples
    from lipsync.face.analysis import analyze_template
    from lipsync.mouth import mouth_track_from_file

    analysis = analyze_template(ctx.template, cache_dir=ctx.options.cache_dir,
                                progress=lambda f: ctx.progress(_ANALYSIS_SHARE * f))
    geometry = mouth_geometry(analysis.landmarks, analysis.has_face, ctx.template.width, ctx.template.height)
    # a template seen for the first time is decoded again for its samples (FFmpeg, mostly
    # outside the GIL) while the audio features are computed here; a photo's only open
    # mouth is the one the warp already keeps in place
    with ThreadPoolExecutor(1, thread_name_prefix="lipsync-mouth-samples") as pool:
        sampling = None if ctx.template.is_still else pool.submit(
            mouth_samples, ctx.template, analysis.landmarks, geometry.valid, cache_dir=ctx.options.cache_dir,
            digest=analysis.digest)
        track = mouth_track_from_file(ctx.audio_path, ctx.fps, ctx.frame_count, settings)
    samples = sampling.result() if sampling is not None else MouthSamples.none()
    ctx.progress(1.0)
    return PreparedRender(analysis, geometry, samples, track)


class WarpEngine(FrameEngine):
    name = "warp"

    uses_device = False  # the CPU, always (see the module's docstring)

    def __init__(self, device: str = "auto", mouth: MouthSettings | None = None, **_ignored: object):
        super().__init__()
        self.device = device  # accepted as every engine's is, and not used
        self.mouth_settings = mouth or MouthSettings()
        # the landmark models load on the first template that is not in the analysis cache,
        # once per process (lipsync.face.landmarks: 65 MB, mapped from their copies), as for wav2lip

    def start(self, ctx: RenderContext) -> WarpSession:
        prepared = prepare(ctx, self.mouth_settings)
        from lipsync.engines.warp_session import WarpSession

        return WarpSession(ctx, prepared)
