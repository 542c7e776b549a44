"""The warp's motion model on a drawn mouth (landmarks placed by hand): where the corners
go and where the lips land, checked on the model's own functions, no rendering."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync.engines.warp_field import (F_CORNER, F_HALF_OPEN, F_UC, ROUND, MouthPose, _invert, frame_parameters,
                                        inner_lips, lip_motion)
from lipsync.engines.warp_geometry import mouth_geometry


@pytest.fixture(scope="module")
def geometry():
    """A face 120 px wide with a closed mouth 40 px wide (corners at x 80 and 120, y 100)."""
    lm = np.zeros((1, 68, 2))
    lm[0, 0:8] = np.column_stack([np.linspace(40, 90, 8), np.linspace(70, 155, 8)])  # the jaw line
    lm[0, 8] = (100.0, 160.0)
    lm[0, 9:17] = np.column_stack([np.linspace(110, 160, 8), np.linspace(155, 70, 8)])
    lm[0, 31:36] = (100.0, 80.0)  # the base of the nose
    lm[0, 48:55] = [(80, 100), (86, 96), (93, 95), (100, 95.5), (107, 95), (114, 96), (120, 100)]  # outer upper
    lm[0, 55:60] = [(114, 104), (107, 106), (100, 106.5), (93, 106), (86, 104)]  # outer lower
    lm[0, 60:65] = [(84, 100), (92, 99.8), (100, 99.8), (108, 99.8), (116, 100)]  # inner upper
    lm[0, 65:68] = [(108, 100.2), (100, 100.2), (92, 100.2)]  # inner lower
    return mouth_geometry(lm, np.ones(1, bool), 200, 200)


def parameters(g, openness: float, spread: float, protrusion: float) -> np.ndarray:
    one = lambda x: np.array([x], np.float32)  # noqa: E731
    pose = MouthPose(one(openness), one(spread), one(protrusion), one(1.0))
    return frame_parameters(g, np.array([0]), pose, np.zeros((1, 2)))[0]


def test_rounding_brings_the_corners_in_once_however_both_cues_say_it(geometry):
    """A low F2 (spread < 0) and energy low in the spectrum (protrusion) are two cues of one
    gesture: added up, a loud /u/ with both at full brought each corner in 0.37 mouth widths
    (with the jaw's 0.05), and on a wide smile the opening closed to a sliver."""
    def corner(spread: float, protrusion: float) -> float:
        return float(parameters(geometry, 0.0, spread, protrusion)[F_CORNER])

    width = float(geometry.width[0])
    assert corner(-1.0, 0.0) == corner(0.0, 1.0) == corner(-1.0, 1.0) == pytest.approx(-ROUND * width)
    assert corner(-0.3, 0.3) == pytest.approx(-ROUND * 0.6 * width)  # under full, the cues add up
    assert corner(1.0, 0.0) > 0 > corner(-0.5, 0.0)  # spread moves them out, rounding in


@pytest.mark.parametrize("spread, protrusion", [(0.0, 1.0), (-1.0, 0.0), (1.0, 0.0), (0.0, 0.0)])
def test_the_lower_lip_lands_on_the_edge_of_the_opening_all_across_it(geometry, spread, protrusion):
    """With the corners drawn in, a point of the lower lip is shown nearer the middle than
    it stood. Its drop was taken where it stood, so the lip dropped over a narrower span
    than the opening: on this 40 px mouth, fully open and rounded, the pixel just below the
    opening showed the template 5.3 px under its lip 0.6 of the way to the opening's corner
    and 7.0 px at 0.9 (4.8 px even unrounded, the jaw drawing the corners in) -- skin where
    the lip should be, the lip hanging in a V inside the oval."""
    frame = parameters(geometry, 1.0, spread, protrusion)
    for across in (0.0, 0.3, 0.6, 0.9):
        u = frame[F_UC] + across * frame[F_HALF_OPEN]
        _, drop, _, lo, _ = lip_motion(frame, u)
        assert drop > 1.0  # the mouth is open here
        shown_v = lo + drop + 0.5  # just below the moved lower lip's inner edge
        template_u, template_v = _invert(frame, u, shown_v, True)
        # ... shows the template just below its own lower lip's inner edge
        assert template_v - 0.5 == pytest.approx(inner_lips(frame, template_u)[1], abs=0.25), (across, template_u)
