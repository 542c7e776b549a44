"""The engine that changes nothing: the template re-timed to the audio, without lip-sync.

Useful to check a deployment end to end (inbox to link) before any face work, and as the
baseline that measures what the pipeline itself costs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lipsync.engine import EngineSession, FrameChunk, FrameEngine, RenderContext


class PassthroughSession(EngineSession):
    def process(self, chunk: FrameChunk) -> np.ndarray:
        return chunk.frames


class PassthroughEngine(FrameEngine):
    name = "passthrough"
    prepare_share = 0.0  # nothing to prepare
    uses_device = False

    def __init__(self, **_options: Any) -> None:
        # device, checkpoint, batch size... mean nothing here
        super().__init__()

    def start(self, ctx: RenderContext) -> EngineSession:
        ctx.progress(1.0)
        return PassthroughSession()
