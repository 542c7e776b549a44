"""A video's colour description, carried from the template to every file lipsyncd writes.

YUV video says how its numbers become colours with four tags: the matrix (YUV <-> RGB),
the range (limited 16-235 or full 0-255), the primaries and the transfer curve. A frame is
turned into RGB with the *source's* matrix and range, processed, and turned back with the
same ones, and the output is tagged as the source was: a flat navy stays that navy through
the render, the finishing re-encode and a re-mux, however often it is encoded.

Full-range sources (many phones, MJPEG) are read as full range but written as limited
range, with their matrix, primaries and transfer: swscale's full-range RGB -> YUV is up to
2 levels off in chroma, its limited-range path is exact, and every player reads limited
range.

Untagged sources are read the way players read them: SD as BT.601, HD (1280 wide or more
than 576 lines, either way round) as BT.709, limited range. Still pictures are RGB already;
their video is written as BT.709 (BT.601 when SD), limited range, and tagged so.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation
from PIL import Image

# AVColorSpace values (the matrix tag) -> the matrices swscale implements
_MATRIX_OF_TAG = {1: "bt709", 5: "bt601", 6: "bt601", 7: "smpte240m", 4: "fcc", 9: "bt2020", 10: "bt2020"}
_SWSCALE = {"bt709": Colorspace.ITU709, "bt601": Colorspace.ITU601, "smpte240m": Colorspace.SMPTE240M,
            "fcc": Colorspace.FCC, "bt2020": Colorspace.BT2020}
# the tags a matrix implies when the source gave none: (AVColorSpace, primaries, transfer)
_DEFAULT_TAGS = {"bt709": (1, 1, 1), "bt601": (6, 6, 6)}
UNSPECIFIED = 2  # AVCOL_PRI / AVCOL_TRC / AVCOL_SPC _UNSPECIFIED
# YUV -> RGB with full chroma interpolation and accurate rounding: swscale's default path
# truncates, and a frame decoded and encoded again lost 1-3 levels every time (a navy
# 2-3 levels darker per encode). This one holds within 1 level over repeated encodes, for
# about 9 ms a 1080p frame (4 ms before). RGB -> YUV is accurate on the default path.
_DECODE = Interpolation.POINT | Interpolation.FULL_CHR_H_INT | Interpolation.ACCURATE_RND
_DECODE_SCALED = Interpolation.BILINEAR | Interpolation.FULL_CHR_H_INT | Interpolation.ACCURATE_RND
# 8-bit formats whose first plane is the luma, one byte a pixel
_Y_PLANE_FIRST = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21"})
# limited-range luma (16-235) to full range, as swscale expands it
_FULL_LUMA = np.clip(np.round((np.arange(256) - 16) * 255.0 / 219.0), 0, 255).astype(np.uint8)


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 grey of an (H, W, 3) uint8 RGB picture (PIL's "L": ITU-R 601 weights);
    what faces are found in when there is no decoder luma to read (a still, a rendered frame)."""
    return np.asarray(Image.fromarray(rgb).convert("L"))


@dataclass(frozen=True)
class ColorInfo:
    """How a video's YUV numbers are colours: the matrix and range used to convert, and the
    tags (AVColorSpace, AVColorPrimaries, AVColorTransferCharacteristic) it carries."""

    matrix: str = "bt709"  # bt709 | bt601 | smpte240m | fcc | bt2020
    full_range: bool = False
    colorspace: int = 1
    primaries: int = 1
    transfer: int = 1

    @classmethod
    def for_size(cls, width: int, height: int) -> ColorInfo:
        """What an untagged source of this size is taken to be (and what stills become)."""
        long, short = max(width, height), min(width, height)
        matrix = "bt709" if long >= 1280 or short > 576 else "bt601"
        spc, pri, trc = _DEFAULT_TAGS[matrix]
        return cls(matrix, False, spc, pri, trc)

    @classmethod
    def of_frame(cls, frame: av.VideoFrame) -> ColorInfo:
        """The description a decoded frame carries; untagged parts by its size."""
        default = cls.for_size(frame.width, frame.height)
        if frame.format.name.startswith(("rgb", "bgr", "gray", "pal", "argb", "abgr")):
            return default  # a picture in RGB: nothing to carry but our own choice
        spc = frame.colorspace
        matrix = _MATRIX_OF_TAG.get(spc)
        if matrix is None:
            matrix, spc = default.matrix, default.colorspace
        full = frame.color_range == 2 or frame.format.name.startswith("yuvj")
        primaries = frame.color_primaries if frame.color_primaries not in (0, UNSPECIFIED) else \
            _DEFAULT_TAGS.get(matrix, (0, default.primaries, 0))[1]
        transfer = frame.color_trc if frame.color_trc not in (0, UNSPECIFIED) else \
            _DEFAULT_TAGS.get(matrix, (0, 0, default.transfer))[2]
        return cls(matrix, full, spc, primaries, transfer)

    @property
    def swscale(self) -> Colorspace:
        return _SWSCALE[self.matrix]

    @property
    def range(self) -> ColorRange:
        return ColorRange.JPEG if self.full_range else ColorRange.MPEG

    def to_rgb(self, frame: av.VideoFrame, **size: int) -> np.ndarray:
        """``frame`` as RGB uint8, converted with this matrix and range (``width``/``height``: scale)."""
        if frame.format.name.startswith(("rgb", "bgr", "gray", "pal")):
            return frame.to_ndarray(format="rgb24", **size)
        return frame.to_ndarray(format="rgb24", src_colorspace=self.swscale, dst_colorspace=self.swscale,
                                src_color_range=self.range, dst_color_range=ColorRange.JPEG,
                                interpolation=_DECODE_SCALED if size else _DECODE, **size)

    def to_gray(self, frame: av.VideoFrame, **size: int) -> np.ndarray:
        """``frame``'s luma as full-range uint8 (H, W) (face detection needs no colour).

        Of 8-bit YUV at its own size, the Y plane itself, its range expanded by a table:
        0.9 ms at 720p, where swscale's grey (made through RGB) takes 3-4 ms and RGB 5."""
        if not size and frame.format.name in _Y_PLANE_FIRST:
            plane = frame.planes[0]
            luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:frame.height, :frame.width]
            full = self.full_range or frame.format.name.startswith("yuvj")
            return luma.copy() if full else np.take(_FULL_LUMA, luma)
        if frame.format.name.startswith(("rgb", "bgr", "gray", "pal")):
            return frame.to_ndarray(format="gray", **size)
        return frame.to_ndarray(format="gray", src_colorspace=self.swscale, dst_colorspace=self.swscale,
                                src_color_range=self.range, dst_color_range=ColorRange.JPEG, **size)

    def for_output(self) -> ColorInfo:
        """The description of video written from frames read with this one (limited range)."""
        return ColorInfo(self.matrix, False, self.colorspace, self.primaries, self.transfer)

    def to_yuv420p(self, rgb: np.ndarray) -> av.VideoFrame:
        """An RGB uint8 frame as yuv420p in this matrix and range, tagged so."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame = frame.reformat(format="yuv420p", src_colorspace=self.swscale, dst_colorspace=self.swscale,
                               src_color_range=ColorRange.JPEG, dst_color_range=self.range)
        self.tag(frame)
        return frame

    def scaled_to_yuv420p(self, rgb: np.ndarray, width: int, height: int) -> av.VideoFrame:
        """An RGB uint8 picture scaled (bicubic) to ``width`` x ``height`` and converted as
        :meth:`to_yuv420p` does, in one pass of swscale: several times faster than scaling
        in RGB and converting after (its planar YUV scaler is vectorised, its RGB one is not)."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame = frame.reformat(width, height, format="yuv420p", interpolation=Interpolation.BICUBIC,
                               src_colorspace=self.swscale, dst_colorspace=self.swscale,
                               src_color_range=ColorRange.JPEG, dst_color_range=self.range)
        self.tag(frame)
        return frame

    def tag(self, target) -> None:
        """Set the four tags on a frame or a codec context."""
        target.colorspace = self.colorspace
        target.color_range = int(self.range)
        target.color_primaries = self.primaries
        target.color_trc = self.transfer
