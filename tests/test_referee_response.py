"""bench/referee_response.py: the warp engine driven by a held staircase of openness, read
by the referee -- the instrument that tells a mouth the reader misreads from a mouth that
does not move."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.referee_response import HOLD, LEAD_IN, LEVELS, SETTLE, largest_step, measure, staircase, step_readings
from tests import media_factory as mf

PAINTED = Path(__file__).parent / "data" / "portraits" / "painted.jpg"


def test_the_staircase_holds_each_openness_for_its_frames_while_speaking():
    frames = LEAD_IN + HOLD * len(LEVELS) + 5
    track = staircase("rounded", frames, 25.0)
    assert len(track) == frames and track.fps == 25.0
    assert np.all(track.openness[:LEAD_IN] == 0)
    for k, level in enumerate(LEVELS):
        start = LEAD_IN + k * HOLD
        assert np.allclose(track.openness[start:start + HOLD], level), k
    assert np.all(track.openness[-5:] == 1.0)  # the last level held to the end
    assert np.all(track.spread == -1) and np.all(track.protrusion == 1) and np.all(track.activity == 1)


def test_readings_are_each_steps_median_after_it_settles_and_a_jump_is_found_where_it_is():
    response = [0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.2, 0.21, 0.22, 0.23, 0.24]  # a snap between 0.5 and 0.6
    gap = np.concatenate([np.full(LEAD_IN, 0.03)] + [np.full(HOLD, r) for r in response])
    for k in range(len(LEVELS)):  # the settling frames still show the step before; one frame lost its face
        start = LEAD_IN + k * HOLD
        gap[start:start + SETTLE] = response[k - 1] if k else 0.03
        gap[start + HOLD - 1] = np.nan
    rest, read = step_readings(gap)
    assert rest == 0.03 and read == response
    assert largest_step(read) == {"between": [0.5, 0.6], "over_mean_step": round(0.12 / 0.021, 2)}
    assert largest_step(list(np.linspace(0.0, 0.5, 11)))["over_mean_step"] == 1.0  # a reader that follows
    assert largest_step([0.1] * 11) == {"between": None, "over_mean_step": None}  # one that never moves


@pytest.fixture(scope="module")
def responses(tmp_path_factory) -> dict:
    from PIL import Image

    work = tmp_path_factory.mktemp("referee-response")
    smile = work / "astronaut.png"
    Image.fromarray(mf.astronaut()).save(smile)
    return measure({"painted": PAINTED, "smile": smile}, work)


def test_the_painted_face_is_read_opening_as_the_staircase_rises(responses):
    figures = responses["painted"]
    neutral = figures["neutral"]
    # the painted mouth is 0.34 of its face's width: the full opening, 0.185 face widths, is
    # about 0.54 of its mouth's
    assert 0.45 < neutral["drawn"][-1] < 0.65 and neutral["drawn"][0] == 0.0, neutral
    read = np.array(neutral["read"])
    assert neutral["rest"] < 0.06, neutral  # held shut, the painted lips meet
    assert read[-1] > read[0] + 0.2 and read[5] > read[0] + 0.03, neutral  # the mouth the engine draws opens
    assert np.all(np.diff(read) > -0.02), neutral  # never read closing while it opens
    assert set(figures) == {"neutral", "rounded", "spread"}
    for shape, f in figures.items():  # rounded and spread, the lips still part
        assert f["read"][-1] > f["read"][0] + 0.1, (shape, f)


def test_a_loud_rounded_vowel_on_a_wide_smile_is_seen_open(responses):
    """Rounding is one gesture with two cues (a low F2, energy low in the spectrum): with
    both at full, the corners came in twice as far, 0.37 mouth widths each, and on the
    astronaut's wide smile the opening shrank to a sliver -- the referee read 0.101 shut
    and 0.104 at full openness."""
    rounded = responses["smile"]["rounded"]
    assert rounded["read"][-1] > rounded["read"][0] + 0.1, rounded
    assert responses["smile"]["neutral"]["read"][-1] > responses["smile"]["neutral"]["read"][0] + 0.1
