"""Finishing touches after the lip-sync: size and shape, frame rate, watermark, intro and
outro clips, subtitles (see :mod:`lipsync.finish.finisher`)."""

from lipsync.finish.finisher import FinishReport, finish_video
from lipsync.finish.spec import ASPECTS, POSITIONS, SUBTITLE_MODES, FinishSpec, Watermark, output_size

__all__ = ["ASPECTS", "POSITIONS", "SUBTITLE_MODES", "FinishReport", "FinishSpec", "Watermark", "finish_video",
           "output_size"]
