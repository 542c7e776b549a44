"""Builders for hostile and broken inputs: what careless users, broken copies and attackers drop.

Every builder writes a real file (or link) and returns its path. Files that must *lie*
about themselves are made by encoding real media and then patching the header fields a
demuxer trusts: a WAV's sample rate and chunk sizes, an MP4's movie/track durations and
sample table, and the H.264 sequence parameter set (SPS) inside the MP4's ``avcC`` box,
which is where decoders take the picture size from (the ``tkhd``/``stsd`` sizes are
patched as well, so every layer tells the same lie). Such a file is tiny on disk but
declares, say, a 12000 x 12000 picture or a 100-hour track: a daemon that decodes before
checking limits would allocate gigabytes.
"""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import av

from tests.media_factory import encode_tone, write_plain_video, write_tone

# Names that break naive shell scripts, URL builders and S3 key makers; all legal on Linux.
HOSTILE_STEMS = (
    "a b;$(touch x)'\"é",
    "naïve Überweisung 名前 🎤",
    "-rf --help",
    "semi;colon|pipe&amp`id`",
    "percent%20and+plus#hash?q=1",
)


# --------------------------------------------------------------------------- plainly broken


def zero_byte(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def text_file(path: Path, text: str = "This is a meeting note, not audio.\n" * 40) -> Path:
    """A text file under a media name (``notes.wav``)."""
    path.write_text(text)
    return path


def truncated(src: Path, dst: Path, *, keep: float | int = 0.5) -> Path:
    """The first ``keep`` bytes (an int) or fraction (a float) of ``src``: an interrupted copy."""
    data = src.read_bytes()
    n = keep if isinstance(keep, int) else int(len(data) * keep)
    dst.write_bytes(data[:n])
    return dst


def truncated_mp4(path: Path, *, size: tuple[int, int] = (128, 128), seconds: float = 1.0) -> Path:
    """An MP4 whose copy stopped half-way: the index (moov, written last) never arrived."""
    src = write_plain_video(path.with_name(path.name + ".src.mp4"), seconds=seconds, size=size)
    assert _box_offsets(src.read_bytes())["moov"] > len(src.read_bytes()) // 2, "moov must be at the end"
    truncated(src, path, keep=0.5)
    src.unlink()
    return path


def corrupt_mp4(path: Path, *, seed: int = 1) -> Path:
    """An MP4 of the right size whose index (moov) is random bytes: a damaged disk or share."""
    src = write_plain_video(path.with_name(path.name + ".src.mp4"), seconds=1.0, size=(128, 128))
    data = bytearray(src.read_bytes())
    src.unlink()
    moov = _box_offsets(bytes(data))["moov"]
    rng = random.Random(seed)
    data[moov + 8:] = bytes(rng.randrange(256) for _ in range(len(data) - moov - 8))
    path.write_bytes(bytes(data))
    return path


def truncated_wav(path: Path, *, keep: int = 30) -> Path:
    """A WAV cut inside its header (``keep`` bytes): not even the format is complete."""
    src = write_tone(path.with_name(path.name + ".src.wav"), seconds=1.0)
    truncated(src, path, keep=keep)
    src.unlink()
    return path


def truncated_wav_data(path: Path, *, keep: float = 0.6) -> Path:
    """A WAV whose copy stopped inside the samples: the header still declares them all."""
    src = write_tone(path.with_name(path.name + ".src.wav"), seconds=1.0)
    truncated(src, path, keep=keep)
    src.unlink()
    return path


def garbage_mp3(path: Path, *, size: int = 64 * 1024, seed: int = 2) -> Path:
    """An ID3 tag followed by noise: looks like an MP3 to a file-type sniffer, holds no frames."""
    rng = random.Random(seed)
    noise = bytes(rng.randrange(256) for _ in range(size))
    # MP3 frames start with 11 set bits; clearing every 0xFF byte leaves no sync word to find
    noise = noise.replace(b"\xff", b"\x00")
    tag = b"ID3" + bytes([4, 0, 0]) + _syncsafe(0)
    path.write_bytes(tag + noise)
    return path


def truncated_mp3(path: Path, *, keep: int = 200) -> Path:
    """The first ``keep`` bytes of a real MP3: less than one frame of sound."""
    src = write_mp3(path.with_name(path.name + ".src.mp3"), seconds=1.0)
    truncated(src, path, keep=keep)
    src.unlink()
    return path


def _syncsafe(n: int) -> bytes:
    return bytes([(n >> 21) & 0x7F, (n >> 14) & 0x7F, (n >> 7) & 0x7F, n & 0x7F])


# --------------------------------------------------------------------------- wrong streams


def write_mp3(path: Path, *, seconds: float = 1.0, rate: int = 44100, freq: float = 220.0) -> Path:
    """A real MP3 (LAME) tone."""
    with av.open(str(path), "w", format="mp3") as out:
        st = out.add_stream("libmp3lame", rate=rate, layout="mono")
        encode_tone(out, st, seconds, freq)
    return path


def audio_only_mp4(path: Path, *, seconds: float = 1.0) -> Path:
    """An MP4 with an AAC track and no picture, dropped as a template."""
    with av.open(str(path), "w", format="mp4") as out:
        st = out.add_stream("aac", rate=48000, layout="mono")
        encode_tone(out, st, seconds, 220.0)
    return path


def video_only_audio(path: Path, *, seconds: float = 1.0) -> Path:
    """A silent H.264 clip under an audio name (``talk.m4a``): no sound to lip-sync to."""
    tmp = write_plain_video(path.with_name(path.name + ".src.mp4"), seconds=seconds, size=(64, 48))
    os.replace(tmp, path)
    return path


# --------------------------------------------------------------------------- lying headers


def wav_declaring(path: Path, *, seconds: float) -> Path:
    """A small real WAV whose header declares ``seconds`` of sound.

    The samples and chunk sizes are real, but the header's sample rate is lowered to 1 Hz,
    so every sample "lasts" a second: a demuxer reports ``seconds`` without decoding
    anything, and a decoder resampling it to speech rate would produce gigabytes.
    """
    samples = max(1, int(seconds))
    src = write_tone(path.with_name(path.name + ".src.wav"), seconds=samples / 8000, rate=8000)
    data = bytearray(src.read_bytes())
    src.unlink()
    fmt = data.find(b"fmt ")
    assert data[:4] == b"RIFF" and fmt > 0
    channels, = struct.unpack_from("<H", data, fmt + 10)
    bits, = struct.unpack_from("<H", data, fmt + 22)
    struct.pack_into("<I", data, fmt + 12, 1)  # sample rate
    struct.pack_into("<I", data, fmt + 16, channels * bits // 8)  # byte rate
    path.write_bytes(bytes(data))
    return path


def mp4_declaring(path: Path, *, width: int | None = None, height: int | None = None,
                  seconds: float | None = None, frames: int | None = None) -> Path:
    """A 1-second 128x128 H.264 MP4 whose headers declare another picture size or length.

    ``width``/``height`` (multiples of 16) go into the SPS, ``tkhd`` and ``stsd``;
    ``seconds`` into ``mvhd``, ``mdhd`` and the sample durations (``stts``); ``frames``
    into the sample count of ``stts`` (the frame count a demuxer reports).
    """
    src = write_plain_video(path.with_name(path.name + ".src.mp4"), seconds=1.0, size=(128, 128))
    data = bytearray(src.read_bytes())
    src.unlink()
    boxes = _find_boxes(bytes(data))
    if width is not None or height is not None:
        w, h = width or 128, height or 128
        assert w % 16 == 0 and h % 16 == 0, "SPS sizes are whole macroblocks"
        tkhd = boxes["tkhd"]
        end = tkhd + int.from_bytes(data[tkhd:tkhd + 4], "big")
        struct.pack_into(">II", data, end - 8, w << 16, h << 16)
        entry = boxes["stsd"] + 16  # first sample entry (avc1)
        struct.pack_into(">HH", data, entry + 32, w, h)
        data = _replace_sps(data, w // 16, h // 16)
        boxes = _find_boxes(bytes(data))
    if seconds is not None or frames is not None:
        mdhd = boxes["mdhd"]
        timescale, = struct.unpack_from(">I", data, mdhd + 20)
        stts = boxes["stts"]
        count, delta = struct.unpack_from(">II", data, stts + 16)
        new_count = frames or count
        length = seconds if seconds is not None else count * delta / timescale
        if length * timescale > 0xFFFFFFFF:  # coarser ticks, so the duration fits in 32 bits
            timescale = max(1, int(0xFFFFFFFF // length))
            struct.pack_into(">I", data, mdhd + 20, timescale)
        total = int(length * timescale)
        new_delta = max(1, total // new_count)
        struct.pack_into(">II", data, stts + 16, new_count, new_delta)
        struct.pack_into(">I", data, mdhd + 24, min(0xFFFFFFFF, new_count * new_delta))
        mvhd = boxes["mvhd"]
        movie_scale, = struct.unpack_from(">I", data, mvhd + 20)
        movie_duration = min(0xFFFFFFFF, int(new_count * new_delta / timescale * movie_scale))
        struct.pack_into(">I", data, mvhd + 24, movie_duration)
        struct.pack_into(">I", data, boxes["tkhd"] + 28, movie_duration)
        if "elst" in boxes:  # the edit list would otherwise still play just the first second
            struct.pack_into(">I", data, boxes["elst"] + 16, movie_duration)
    path.write_bytes(bytes(data))
    return path


def webm_declaring(path: Path, *, width: int, height: int) -> Path:
    """A 1-second 256x256 VP9 WebM whose headers declare a ``width`` x ``height`` picture.

    The size goes into the track's PixelWidth/PixelHeight and into the uncompressed
    header of every keyframe, where the VP9 decoder takes it from. 256 is the smallest
    size whose PixelWidth is stored in two bytes, so any size up to 65535 is patched in
    place without moving an element.
    """
    assert 256 <= width < 1 << 16 and 256 <= height < 1 << 16
    src = write_plain_video(path.with_name(path.name + ".src.webm"), seconds=1.0, size=(256, 256),
                            codec="libvpx-vp9")
    data = bytearray(src.read_bytes())
    src.unlink()
    patched = {"width": 0, "height": 0, "keyframes": 0}
    for eid, content, end in _ebml_tree(bytes(data)):
        if eid in (0xB0, 0xBA):  # PixelWidth, PixelHeight
            assert end - content == 2, "a 256-pixel size takes two bytes"
            value, key = (width, "width") if eid == 0xB0 else (height, "height")
            struct.pack_into(">H", data, content, value)
            patched[key] += 1
        elif eid == 0xA3 and data[content] & 0x80:  # SimpleBlock of track 1 (one-byte track number)
            frame = content + 4  # after the track number, 16-bit timecode and flags
            if _is_vp9_keyframe(data[frame:frame + 5]):
                data[frame:frame + 9] = _vp9_header_with_size(bytes(data[frame:frame + 9]), width, height)
                patched["keyframes"] += 1
    assert patched["width"] == patched["height"] == 1 and patched["keyframes"] >= 1, patched
    path.write_bytes(bytes(data))
    return path


def _is_vp9_keyframe(head: bytes) -> bool:
    # first byte: frame marker 0b10, profile 0, show_existing_frame 0, frame_type 0 (key);
    # then the 3-byte sync code
    return head[0] >> 6 == 0b10 and not head[0] & 0b00111100 and head[1:4] == b"\x49\x83\x42"


def _vp9_header_with_size(head: bytes, width: int, height: int) -> bytes:
    """The first 9 bytes of a profile-0 VP9 keyframe with another frame size.

    After the 8 bits of frame type flags and the 24-bit sync code come 3 bits of colour
    space and 1 of colour range, then width-1 and height-1 in 16 bits each (bits 36..67).
    """
    bits = int.from_bytes(head, "big")
    assert (bits >> 72 - 35) & 0b111 != 7, "an RGB colour space has no colour range bit"
    size_bits = (width - 1) << 16 | (height - 1)
    shift = 72 - 36 - 32
    bits = bits & ~(((1 << 32) - 1) << shift) | size_bits << shift
    return bits.to_bytes(9, "big")


# Matroska elements whose content is more elements: Segment, Tracks, TrackEntry, Video, Cluster.
_EBML_MASTERS = {0x18538067, 0x1654AE6B, 0xAE, 0xE0, 0x1F43B675}


def _ebml_tree(data: bytes, start: int = 0, end: int | None = None):
    """(id, content start, content end) of every element, depth first (sizes must be known)."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        eid, pos = _vint(data, pos, keep_marker=True)
        size, pos = _vint(data, pos, keep_marker=False)
        yield eid, pos, pos + size
        if eid in _EBML_MASTERS:
            yield from _ebml_tree(data, pos, pos + size)
        pos += size


def _vint(data: bytes, pos: int, *, keep_marker: bool) -> tuple[int, int]:
    length = 9 - data[pos].bit_length()
    value = data[pos] if keep_marker else data[pos] & (0xFF >> length)
    for byte in data[pos + 1:pos + length]:
        value = value << 8 | byte
    return value, pos + length


_CONTAINERS = {b"moov", b"trak", b"edts", b"mdia", b"minf", b"stbl", b"udta"}


def _box_offsets(data: bytes) -> dict[str, int]:
    """Offsets of the top-level boxes by type."""
    out: dict[str, int] = {}
    pos = 0
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        out.setdefault(data[pos + 4:pos + 8].decode("latin-1"), pos)
        if size < 8:
            break
        pos += size
    return out


def _find_boxes(data: bytes, start: int = 0, end: int | None = None, found: dict | None = None,
                parents: list[int] | None = None) -> dict[str, int]:
    """Offset of the first box of each type anywhere in the tree (``avcC`` inside ``stsd`` too);
    ``found["_parents_<type>"]`` lists the offsets of its enclosing boxes, outermost first."""
    found = {} if found is None else found
    parents = [] if parents is None else parents
    end = len(data) if end is None else end
    pos = start
    while pos + 8 <= end:
        size = int.from_bytes(data[pos:pos + 4], "big")
        kind = data[pos + 4:pos + 8]
        if size < 8:
            break
        name = kind.decode("latin-1")
        if name not in found:
            found[name] = pos
            found["_parents_" + name] = list(parents)
        if kind in _CONTAINERS:
            _find_boxes(data, pos + 8, pos + size, found, parents + [pos])
        elif kind == b"stsd":
            _find_boxes(data, pos + 16, pos + size, found, parents + [pos])
        elif kind in (b"avc1", b"avc3"):
            _find_boxes(data, pos + 86, pos + size, found, parents + [pos])  # after the visual sample entry
        pos += size
    return found


def _replace_sps(data: bytearray, mb_width: int, mb_height: int) -> bytearray:
    """Rewrite the picture size in the avcC's SPS, fixing the sizes of every enclosing box.

    The moov must follow the mdat (as PyAV writes it), so no chunk offset moves.
    """
    boxes = _find_boxes(bytes(data))
    avcc = boxes["avcC"]
    assert boxes["moov"] > boxes["mdat"], "moov must follow mdat"
    size = int.from_bytes(data[avcc:avcc + 4], "big")
    body = data[avcc + 8:avcc + size]
    assert body[5] & 0x1F == 1, "one SPS expected"
    sps_len = int.from_bytes(body[6:8], "big")
    sps = bytes(body[8:8 + sps_len])
    new_sps = _sps_with_size(sps, mb_width, mb_height)
    new_body = body[:6] + len(new_sps).to_bytes(2, "big") + new_sps + body[8 + sps_len:]
    growth = len(new_body) - len(body)
    for parent in boxes["_parents_avcC"] + [avcc]:
        old = int.from_bytes(data[parent:parent + 4], "big")
        data[parent:parent + 4] = (old + growth).to_bytes(4, "big")
    return data[:avcc + 8] + new_body + data[avcc + size:]


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.bits = "".join(f"{b:08b}" for b in data)
        self.pos = 0

    def u(self, n: int) -> int:
        v = int(self.bits[self.pos:self.pos + n], 2)
        self.pos += n
        return v

    def ue(self) -> int:
        zeros = 0
        while self.bits[self.pos + zeros] == "0":
            zeros += 1
        v = int(self.bits[self.pos + zeros:self.pos + 2 * zeros + 1], 2) - 1
        self.pos += 2 * zeros + 1
        return v


def _ue_bits(v: int) -> str:
    code = f"{v + 1:b}"
    return "0" * (len(code) - 1) + code


_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def _sps_with_size(nal: bytes, mb_width: int, mb_height: int) -> bytes:
    rbsp = _unescape(nal[1:])
    r = _Bits(rbsp)
    profile = r.u(8)
    r.u(16)  # constraint flags, level
    r.ue()  # seq_parameter_set_id
    if profile in _HIGH_PROFILES:
        if r.ue() == 3:  # chroma_format_idc
            r.u(1)
        r.ue()
        r.ue()  # bit depths
        r.u(1)
        assert r.u(1) == 0, "scaling matrices not supported here"
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()
    assert poc_type != 1, "pic_order_cnt_type 1 not supported here"
    r.ue()  # max_num_ref_frames
    r.u(1)  # gaps_in_frame_num_value_allowed_flag
    head = r.bits[:r.pos]
    r.ue()
    r.ue()  # the old width and height
    frame_mbs_only = r.bits[r.pos]
    assert frame_mbs_only == "1", "interlaced SPS not supported here"
    bits = head + _ue_bits(mb_width - 1) + _ue_bits(mb_height - 1) + r.bits[r.pos:]
    # the tail ends with the RBSP stop bit and zero padding; re-pad to whole bytes
    bits = bits.rstrip("0")
    bits += "0" * (-len(bits) % 8)
    out = bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))
    return nal[:1] + _escape(out)


def _unescape(data: bytes) -> bytes:
    return data.replace(b"\x00\x00\x03", b"\x00\x00")


def _escape(data: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for b in data:
        if zeros >= 2 and b <= 3:
            out.append(3)
            zeros = 0
        out.append(b)
        zeros = zeros + 1 if b == 0 else 0
    return bytes(out)


# --------------------------------------------------------------------------- the file system


def symlink_out_of_inbox(link: Path, target: Path) -> Path:
    """``link`` in the inbox pointing at ``target`` outside it (e.g. /etc/passwd renamed .wav)."""
    link.symlink_to(target)
    return link


def long_audio(path: Path, *, seconds: float) -> Path:
    """A genuine WAV of ``seconds`` (over a configured maximum); 8 kHz keeps it small."""
    return write_tone(path, seconds=seconds, rate=8000)
