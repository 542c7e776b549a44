"""Finishing touches after the lip-sync: size and shape, frame rate, watermark, intro and
outro clips, subtitles (see :mod:`lipsync.finish.finisher`).

:mod:`lipsync.finish.spec` (the options and their checks) needs only the standard
library; the finisher, with its media libraries, is imported when first used, so that
checking a job's options stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lipsync.finish.spec import ASPECTS, POSITIONS, SUBTITLE_MODES, FinishSpec, Watermark, output_size

if TYPE_CHECKING:
    from lipsync.finish.finisher import FinishReport, finish_video

__all__ = ["ASPECTS", "POSITIONS", "SUBTITLE_MODES", "FinishReport", "FinishSpec", "Watermark", "finish_video",
           "output_size"]


def __getattr__(name: str) -> Any:
    if name in ("FinishReport", "finish_video"):
        from lipsync.finish import finisher

        return getattr(finisher, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
