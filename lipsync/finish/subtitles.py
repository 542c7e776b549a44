"""Subtitles: read from .srt / .vtt (FFmpeg's own parsers, through PyAV), stored as a soft
mov_text track, and drawn into the picture with a font that ships with lipsyncd's
dependencies (Noto Sans CJK, from the ``notojp-matplotlib`` package: Latin, Chinese,
Japanese and Korean in one file), so nothing depends on the fonts a host happens to have.
"""

from __future__ import annotations

from importlib import resources
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from lipsync.errors import EngineUnavailableError, MediaError

FONT_PACKAGE = "notojp_matplotlib"
FONT_FILE = "NotoSansCJKjp-Regular.otf"
_TAGS = re.compile(r"<[^>]*>|\{\\[^}]*\}")  # <i>, <font ...>, {\an8}: styling we do not carry


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str  # plain text, lines separated by "\n"


def read_cues(path: Path) -> list[Cue]:
    """The cues of an .srt or .vtt file, in time order. Raises MediaError naming the file
    when it is not a subtitle file FFmpeg can read, or holds no cue."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.subtitles:
                raise MediaError("not a subtitle file (.srt or .vtt)", path=path)
            stream = container.streams.subtitles[0]
            base = float(stream.time_base or 0.001)
            cues = []
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                text = _TAGS.sub("", bytes(packet).decode("utf-8", "replace")).replace("\r", "").strip()
                start = packet.pts * base
                end = start + (packet.duration or 0) * base
                if text and end > start:
                    cues.append(Cue(start, end, text))
    except av.error.FFmpegError as e:
        raise MediaError(f"cannot read the subtitles: {e}", path=path) from None
    if not cues:
        raise MediaError("the subtitle file has no cues (expected .srt or .vtt timings)", path=path)
    return sorted(cues, key=lambda c: c.start)


def shifted(cues: list[Cue], by: float, until: float | None = None) -> list[Cue]:
    """``cues`` moved ``by`` seconds later, cut off at ``until``."""
    out = []
    for c in cues:
        start, end = c.start + by, c.end + by
        if until is not None:
            end = min(end, until)
        if end > start:
            out.append(Cue(start, end, c.text))
    return out


def font_path() -> Path:
    """The packaged CJK font file (package data of ``notojp_matplotlib``, a dependency)."""
    try:
        font = resources.files(FONT_PACKAGE).joinpath("fonts", FONT_FILE)
        if font.is_file():
            return Path(str(font))  # an installed package's files are on disk: PIL needs a path
    except ModuleNotFoundError:
        pass
    raise EngineUnavailableError(f"the subtitle font {FONT_FILE} was not found; install it with: "
                                 "pip install notojp-matplotlib")


@lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(font_path()), size)


class SubtitleBurner:
    """The cue showing at a time as a picture to draw into frames: white text with a dark
    outline, centred near the bottom, wrapped to the frame. Each cue is rendered once."""

    def __init__(self, cues: list[Cue], width: int, height: int):
        self.cues = cues
        self.width, self.height = width, height
        self.size = max(12, int(round(min(width, height) * 0.055)))
        self._rendered: dict[int, tuple[np.ndarray, np.ndarray, int, int]] = {}

    def cue_at(self, t: float) -> int | None:
        for i, c in enumerate(self.cues):  # a few hundred cues at most: a scan is fine
            if c.start <= t < c.end:
                return i
        return None

    def picture(self, i: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """Cue ``i`` drawn: (RGB (h, w, 3) float32, alpha (h, w) 0..1, x, y in the frame)."""
        if i in self._rendered:
            return self._rendered[i]
        from PIL import Image, ImageDraw

        font = _font(self.size)
        lines = _wrap(self.cues[i].text, font, int(self.width * 0.9))
        outline = max(1, self.size // 12)
        spacing = self.size // 4
        probe = ImageDraw.Draw(Image.new("L", (1, 1)))
        box = probe.multiline_textbbox((0, 0), "\n".join(lines), font=font, spacing=spacing, align="center",
                                       stroke_width=outline)
        tw, th = box[2] - box[0] + 2 * outline, box[3] - box[1] + 2 * outline
        img = Image.new("RGBA", (tw, th), (0, 0, 0, 0))
        ImageDraw.Draw(img).multiline_text((outline - box[0], outline - box[1]), "\n".join(lines), font=font,
                                           fill=(255, 255, 255, 255), spacing=spacing, align="center",
                                           stroke_width=outline, stroke_fill=(0, 0, 0, 255))
        arr = np.asarray(img, np.float32)
        x = max(0, (self.width - tw) // 2)
        y = max(0, self.height - th - int(self.height * 0.06))
        arr = arr[: self.height - y, : self.width - x]
        self._rendered[i] = (arr[..., :3], arr[..., 3] / 255.0, x, y)
        return self._rendered[i]


def _wrap(text: str, font, max_width: int) -> list[str]:
    """Lines no wider than ``max_width``: at spaces where there are any, else (CJK) anywhere."""
    out: list[str] = []
    for paragraph in text.split("\n"):
        words = paragraph.split(" ") if " " in paragraph else list(paragraph)
        joiner = " " if " " in paragraph else ""
        line = ""
        for word in words:
            trial = f"{line}{joiner}{word}" if line else word
            if line and font.getlength(trial) > max_width:
                out.append(line)
                line = word
            else:
                line = trial
        if line:
            out.append(line)
    return out
