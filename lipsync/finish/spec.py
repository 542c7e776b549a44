"""What a job asks of its finished video besides the lip-sync: size, shape, rate, branding,
subtitles. Parsed and checked here (every problem at once), applied by
:func:`lipsync.finish.finish_video`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ASPECTS = ("keep", "16:9", "9:16", "1:1", "4:5")
POSITIONS = ("top-left", "top-right", "bottom-left", "bottom-right", "center")
SUBTITLE_MODES = ("soft", "burn", "off")
_NAMED_RESOLUTIONS = {"2160p": 2160, "4k": 2160, "1440p": 1440, "1080p": 1080, "720p": 720, "540p": 540,
                      "480p": 480, "360p": 360}
MAX_SIDE = 3840
MIN_SIDE = 64


@dataclass(frozen=True)
class Watermark:
    image: Path  # a PNG (with transparency) or JPEG from the template library
    position: str = "bottom-right"  # one of POSITIONS
    margin: float = 0.03  # gap to the frame's edges, as a share of the frame's shorter side
    opacity: float = 0.85  # 0..1, times the image's own alpha
    scale: float = 0.15  # the watermark's width as a share of the frame's width


@dataclass(frozen=True)
class FinishSpec:
    resolution: str = "keep"  # "keep", "1080p" (the shorter side), "1280x720"
    aspect: str = "keep"  # one of ASPECTS
    fps: float | None = None  # None: the render's own rate
    watermark: Watermark | None = None
    intro: Path | None = None  # clips joined before and after the lip-synced video
    outro: Path | None = None
    subtitles: Path | None = None  # an .srt or .vtt file, timed against the speech
    subtitle_mode: str = "soft"  # soft: a track players can switch on; burn: also drawn in; off

    @property
    def reframes(self) -> bool:
        return self.resolution != "keep" or self.aspect != "keep"

    @property
    def burns(self) -> bool:
        return self.subtitles is not None and self.subtitle_mode == "burn"

    @property
    def soft_subtitles(self) -> bool:
        return self.subtitles is not None and self.subtitle_mode in ("soft", "burn")

    @property
    def redraws(self) -> bool:
        """Whether the picture itself changes (a decode and re-encode is needed)."""
        return self.reframes or self.fps is not None or self.watermark is not None or self.burns

    @property
    def is_noop(self) -> bool:
        return not (self.redraws or self.intro or self.outro or self.soft_subtitles)


def parse_resolution(value: str) -> tuple[int, int] | int | None:
    """"keep" -> None; "1080p" -> 1080 (the shorter side); "1280x720" -> (1280, 720).
    Raises ValueError with a message fit for a user."""
    text = str(value).strip().lower()
    if text in ("", "keep"):
        return None
    if text in _NAMED_RESOLUTIONS:
        return _NAMED_RESOLUTIONS[text]
    m = re.fullmatch(r"(\d{2,5})\s*[x×]\s*(\d{2,5})", text)
    if m:
        w, h = int(m.group(1)), int(m.group(2))
        if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
            raise ValueError(f"{value!r}: each side must be {MIN_SIDE} to {MAX_SIDE} pixels")
        if w % 2 or h % 2:
            raise ValueError(f"{value!r}: H.264 needs even sides (e.g. {w + w % 2}x{h + h % 2})")
        return (w, h)
    raise ValueError(f"{value!r} is not a resolution: use keep, 2160p, 1440p, 1080p, 720p, 540p, 480p, 360p "
                     "or WIDTHxHEIGHT (e.g. 1280x720)")


def aspect_ratio(aspect: str) -> float | None:
    if aspect == "keep":
        return None
    w, h = aspect.split(":")
    return int(w) / int(h)


def _even(x: float) -> int:
    return max(2, int(round(x / 2.0)) * 2)


def output_size(source: tuple[int, int], resolution: str, aspect: str) -> tuple[int, int]:
    """The finished video's (width, height) for a ``source`` (width, height)."""
    sw, sh = source
    res = parse_resolution(resolution)
    if isinstance(res, tuple):
        return res
    ratio = aspect_ratio(aspect) or sw / sh
    if res is None:  # the source's own scale: the largest window of the new shape inside it
        if ratio < sw / sh:
            return _even(sh * ratio), _even(sh)
        return _even(sw), _even(sw / ratio)
    short = res  # "1080p": the shorter side, whatever the orientation
    return (_even(short * ratio), _even(short)) if ratio >= 1 else (_even(short), _even(short / ratio))


def check(spec_values: dict) -> list[tuple[str, str]]:
    """(option, message) for every value of a finish option that is wrong, all at once.

    ``spec_values`` holds the raw values as written (resolution, aspect, fps, watermark
    position/margin/opacity/scale, subtitle mode); files are checked where they are found.
    Each message starts with what it is about ("watermark.scale: ...").
    """
    problems: list[tuple[str, str]] = []
    resolution = spec_values.get("resolution")
    if resolution is not None:
        try:
            res = parse_resolution(resolution)
        except ValueError as e:
            problems.append(("resolution", f"resolution: {e}"))
            res = None
    else:
        res = None
    aspect = spec_values.get("aspect")
    if aspect is not None and aspect not in ASPECTS:
        problems.append(("aspect", f"aspect: {aspect!r} is not one of {', '.join(ASPECTS)}"))
    elif isinstance(res, tuple) and aspect not in (None, "keep"):
        ratio = aspect_ratio(aspect)
        if abs(res[0] / res[1] - ratio) > 0.02:
            problems.append(("resolution", f"resolution {resolution!r} and aspect {aspect!r} disagree: give one "
                                           "of them, or both of the same shape"))
    fps = spec_values.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 1 <= fps <= 120):
        problems.append(("fps", f"fps: {fps!r} must be a number of frames per second from 1 to 120"))
    mode = spec_values.get("subtitles")
    if mode is not None and mode not in SUBTITLE_MODES:
        problems.append(("subtitles", f"subtitles: {mode!r} is not one of {', '.join(SUBTITLE_MODES)}"))
    mark = spec_values.get("watermark")
    if mark is not None:
        if isinstance(mark, str):
            mark = {"image": mark}
        if not isinstance(mark, dict):
            problems.append(("watermark", "watermark: expected an image name or a table {image, position, margin, "
                                          "opacity, scale}"))
            return problems
        unknown = sorted(set(mark) - {"image", "position", "margin", "opacity", "scale"})
        if unknown:
            problems.append(("watermark", f"watermark: unknown key(s) {', '.join(unknown)}; allowed: image, "
                                          "position, margin, opacity, scale"))
        image = mark.get("image")
        if not isinstance(image, str) or not image.lower().endswith((".png", ".jpg", ".jpeg")):
            problems.append(("watermark", "watermark.image: name a .png (transparency kept) or .jpg in the "
                                          "template library"))
        if mark.get("position", "bottom-right") not in POSITIONS:
            problems.append(("watermark", f"watermark.position: {mark.get('position')!r} is not one of "
                                          f"{', '.join(POSITIONS)}"))
        for key, low, high in (("margin", 0.0, 0.25), ("opacity", 0.0, 1.0), ("scale", 0.01, 1.0)):
            v = mark.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high):
                problems.append(("watermark", f"watermark.{key}: {v!r} must be a number from {low:g} to {high:g}"))
    return problems
