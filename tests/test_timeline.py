"""Output frame -> template frame mapping, and how many frames cover the audio."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync.timeline import output_frame_count, template_index, template_indices


def test_pingpong_runs_forward_then_back_without_repeating_the_turning_frames():
    got = [template_index(i, 4) for i in range(14)]
    assert got == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1, 0, 1]


def test_pingpong_never_shows_the_same_frame_twice_in_a_row():
    for n in (2, 3, 7, 50):
        seq = [template_index(i, n) for i in range(5 * n)]
        assert all(a != b for a, b in zip(seq, seq[1:])), n
        assert all(abs(a - b) == 1 for a, b in zip(seq, seq[1:])), n  # no jump cuts either


def test_a_template_longer_than_the_output_is_trimmed():
    assert [template_index(i, 100) for i in range(60)] == list(range(60))


def test_a_single_frame_is_held():
    assert {template_index(i, 1) for i in range(100)} == {0}
    assert template_indices(np.arange(10), 1).tolist() == [0] * 10


def test_loop_mode_wraps_around():
    assert [template_index(i, 3, "loop") for i in range(7)] == [0, 1, 2, 0, 1, 2, 0]


@pytest.mark.parametrize("mode", ["pingpong", "loop"])
@pytest.mark.parametrize("n", [1, 2, 5, 31, 64])
def test_vectorised_mapping_matches_the_scalar_one(n, mode):
    out = np.arange(0, 700, dtype=np.int64)
    got = template_indices(out, n, mode)
    assert got.dtype == np.int64
    assert got.tolist() == [template_index(int(i), n, mode) for i in out]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="mode"):
        template_index(0, 5, "bounce")
    with pytest.raises(ValueError, match="at least one frame"):
        template_indices(np.arange(3), 0)
    with pytest.raises(ValueError):
        template_index(-1, 5)
    with pytest.raises(ValueError):
        output_frame_count(1.0, 0)


@pytest.mark.parametrize("seconds, fps, frames", [
    (2.0, 25, 50),            # exact: no extra frame from float noise
    (2.0 + 1e-12, 25, 50),
    (2.01, 25, 51),           # a partial frame still gets a frame: the audio is never cut
    (6.923, 25, 174),
    (0.0, 25, 1),             # never an empty video
    (1e-4, 30, 1),
    (10.0, 30000 / 1001, 300),
])
def test_output_frames_cover_the_whole_audio(seconds, fps, frames):
    n = output_frame_count(seconds, fps)
    assert n == frames
    assert n / fps >= seconds - 1e-6
    assert n / fps - seconds < 1 / fps + 1e-9 or seconds == 0.0
