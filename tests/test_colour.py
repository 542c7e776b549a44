"""Colours survive every encode: a template's colours, read as a player reads them, come
back within 1 level after the render and again after a finishing re-encode -- for sources
tagged BT.709 or BT.601 and for untagged ones (SD read as BT.601, HD as BT.709) -- and a
HeyGem result re-encoded for publishing keeps its own.

The reference (tests/colour_reference.py) converts YUV to RGB with the standard's
equations in numpy, honouring the tags; it shares no code with lipsyncd's conversions.
"""

from __future__ import annotations

from fractions import Fraction

import av
import pytest

from lipsync.engine import RenderOptions
from lipsync.engines import create_engine
from lipsync.finish.finisher import finish_video
from lipsync.finish.spec import FinishSpec
from lipsync.media.remux import remux_with_audio
from lipsync.render import render
from tests.colour_reference import PATCHES, patch_means, write_patches_video
from tests.media_factory import write_tone

OPTIONS = RenderOptions(device="cpu", crf=18, preset="ultrafast")
SOURCES = {  # name: (size, matrix, full range, tagged)
    "hd-untagged": ((1280, 720), "bt709", False, False),
    "hd-bt709": ((1280, 720), "bt709", False, True),
    "sd-untagged": ((640, 480), "bt601", False, False),
    "sd-bt601": ((640, 480), "bt601", False, True),
}


def drift(a, b) -> float:
    return max(abs(x - y) for p, q in zip(a, b) for x, y in zip(p, q))


def tags(path) -> tuple[int, int, int, int]:
    with av.open(str(path)) as c:
        ctx = c.streams.video[0].codec_context
        return ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    return write_tone(tmp_path_factory.mktemp("colour") / "tone.wav", seconds=1.0)


@pytest.mark.parametrize("name", SOURCES)
def test_colours_hold_through_render_and_finish(tmp_path, audio, name):
    size, matrix, full, tagged = SOURCES[name]
    source = write_patches_video(tmp_path / f"{name}.mp4", size, matrix=matrix, full=full, tagged=tagged)
    rendered = render(audio, source, tmp_path / "rendered.mp4", engine=create_engine("passthrough", device="cpu"),
                      options=OPTIONS).path
    finished = finish_video(rendered, tmp_path / "finished.mp4", FinishSpec(fps=20.0), OPTIONS).path
    want = patch_means(source)
    assert drift(want, patch_means(rendered)) <= 1.0, (want, patch_means(rendered))
    assert drift(want, patch_means(finished)) <= 1.0, (want, patch_means(finished))
    # the output says which matrix it is in: BT.709 for HD, BT.601 (SMPTE 170M) for SD
    expected = (1, 1, 1, 1) if matrix == "bt709" else (6, 6, 6, 1)
    assert tags(rendered) == tags(finished) == expected


def test_a_full_range_source_is_written_as_limited_range_in_its_matrix(tmp_path, audio):
    source = write_patches_video(tmp_path / "phone.mp4", (1280, 720), matrix="bt709", full=True, tagged=True)
    rendered = render(audio, source, tmp_path / "rendered.mp4", engine=create_engine("passthrough", device="cpu"),
                      options=OPTIONS).path
    # one rounding to the coarser limited range on top of the decode: within 2 levels
    assert drift(patch_means(source), patch_means(rendered)) <= 2.0
    assert tags(rendered) == (1, 1, 1, 1)


def test_a_remote_renderers_result_keeps_its_colours_when_re_encoded(tmp_path, audio):
    # HeyGem results that are not H.264 are re-encoded for publishing (H.264 is copied, tags and all)
    remote = tmp_path / "remote.mkv"
    source = write_patches_video(tmp_path / "remote-h264.mp4", (640, 480), matrix="bt601", full=False, tagged=False)
    with av.open(str(source)) as src, av.open(str(remote), "w") as out:
        stream = out.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        stream.options = {"qscale": "1"}
        for i, frame in enumerate(src.decode(video=0)):
            frame.pts, frame.time_base = i, Fraction(1, 25)
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode(None):
            out.mux(p)
    published = remux_with_audio(remote, audio, tmp_path / "published.mp4", OPTIONS)
    assert drift(patch_means(remote), patch_means(published)) <= 1.0
    assert tags(published)[0] == 6  # an untagged SD picture stays BT.601, now said so
    copied = remux_with_audio(source, audio, tmp_path / "copied.mp4", OPTIONS)
    assert drift(patch_means(source), patch_means(copied)) == 0.0


@pytest.mark.parametrize("matrix", ["bt601", "bt709"])
@pytest.mark.parametrize("full", [False, True])
def test_the_reference_equations_invert_each_other(matrix, full):
    import numpy as np

    from tests.colour_reference import rgb_to_yuv, yuv_to_rgb

    rgb = np.array([PATCHES], np.float64)
    back = yuv_to_rgb(*rgb_to_yuv(rgb, matrix, full), matrix, full)
    assert np.abs(back - rgb).max() < 1e-6
    # and they are the standard's: BT.709 white is Y 235, BT.601 black Y 16 (limited range)
    y, _u, _v = rgb_to_yuv(np.array([[[255, 255, 255], [0, 0, 0]]]), matrix, full)
    assert y[0].round().tolist() == ([255, 0] if full else [235, 16])
