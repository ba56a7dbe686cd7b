"""Trajectory selection among samples."""

from __future__ import annotations

import numpy as np
import pytest

from alpamayo_ros.planner.selection import SelectionMode, select

DT_S = 0.1
TIMES_S = DT_S * np.arange(1, 65)  # [T] t0 + 0.1 .. 6.4 s


def _straight(lateral_m: float, speed_mps: float = 10.0) -> np.ndarray:
    return np.stack([speed_mps * TIMES_S, np.full_like(TIMES_S, lateral_m), np.zeros_like(TIMES_S)], -1)


def _clothoid(sharpness_per_m2: float, speed_mps: float = 10.0) -> np.ndarray:
    """Curvature growing linearly with arc length: lateral jerk = speed^3 * sharpness."""
    arc = np.linspace(0.0, speed_mps * 6.4, 6401)  # fine grid for integration
    heading = 0.5 * sharpness_per_m2 * arc**2
    step = arc[1] - arc[0]
    x = np.concatenate([[0.0], np.cumsum(np.cos(heading[:-1]) * step)])
    y = np.concatenate([[0.0], np.cumsum(np.sin(heading[:-1]) * step)])
    at = np.searchsorted(arc, speed_mps * TIMES_S - 1e-9)
    return np.stack([x[at], y[at], np.zeros_like(TIMES_S)], -1)


def test_first_picks_the_first_valid() -> None:
    xyz = np.stack([_straight(0.0), _straight(1.0), _straight(2.0)])
    index, scores = select(xyz, SelectionMode.FIRST, np.array([False, True, True]))
    assert index == 1
    np.testing.assert_array_equal(scores, np.array([-np.inf, -1.0, -2.0], dtype=np.float32))
    _, scores_all_valid = select(xyz, SelectionMode.FIRST, np.ones(3, dtype=bool))
    assert str(scores_all_valid[0]) == "0.0"  # not -0.0
    assert scores.dtype == np.float32


def test_medoid_is_the_consensus() -> None:
    offsets = [-2.0, -1.0, 0.0, 1.0, 5.0]
    xyz = np.stack([_straight(d) for d in offsets])
    index, scores = select(xyz, SelectionMode.MEDOID, np.ones(5, dtype=bool))
    assert index == 2
    expected = [-np.mean([abs(a - b) for b in offsets if b != a]) for a in offsets]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_medoid_ignores_invalid_candidates_even_if_central() -> None:
    offsets = [-2.0, -1.0, 0.0, 1.0, 5.0]
    xyz = np.stack([_straight(d) for d in offsets])
    xyz[4, 10, 0] = np.nan  # non-finite is invalid even if the mask says valid
    index, scores = select(xyz, SelectionMode.MEDOID, np.array([True, True, False, True, True]))
    assert index == 1  # among -2, -1, 1: -1 is closest to the others
    assert np.isneginf(scores[[2, 4]]).all() and np.isfinite(scores[[0, 1, 3]]).all()


def test_single_valid_candidate() -> None:
    index, scores = select(_straight(0.0)[None], SelectionMode.MEDOID, np.array([True]))
    assert index == 0 and scores[0] == 0.0


def test_min_lateral_jerk_matches_the_analytic_value() -> None:
    sharpness = 2e-4  # 1/m^2 -> lateral jerk 10^3 * 2e-4 = 0.2 m/s^3
    xyz = np.stack([_clothoid(sharpness), _straight(0.5), _clothoid(-3 * sharpness)])
    index, scores = select(xyz, SelectionMode.MIN_LATERAL_JERK, np.ones(3, dtype=bool), DT_S)
    assert index == 1
    assert scores[1] == pytest.approx(0.0, abs=1e-6)
    assert scores[0] == pytest.approx(-0.2, rel=0.05)
    assert scores[2] == pytest.approx(-0.6, rel=0.05)


def test_constant_turn_has_no_lateral_jerk() -> None:
    radius_m, speed_mps = 50.0, 10.0
    angle = speed_mps * TIMES_S / radius_m
    arc = np.stack([radius_m * np.sin(angle), radius_m * (1 - np.cos(angle)), np.zeros_like(angle)], -1)
    xyz = np.stack([arc, _clothoid(1e-3)])
    _, scores = select(xyz, SelectionMode.MIN_LATERAL_JERK, np.ones(2, dtype=bool))
    assert scores[0] == pytest.approx(0.0, abs=1e-3)
    assert scores[1] < -0.5


def test_standstill_is_finite() -> None:
    xyz = np.zeros((2, 64, 3))
    index, scores = select(xyz, SelectionMode.MIN_LATERAL_JERK, np.ones(2, dtype=bool))
    assert index == 0 and np.all(scores == 0.0)


@pytest.mark.parametrize("mode", list(SelectionMode))
def test_no_valid_candidate(mode: SelectionMode) -> None:
    xyz = np.stack([_straight(0.0), _straight(1.0)])
    index, scores = select(xyz, mode, np.zeros(2, dtype=bool))
    assert index == -1 and np.isneginf(scores).all()


@pytest.mark.parametrize(
    ("xyz", "mask", "mode", "match"),
    [
        (np.zeros((2, 64, 2)), np.ones(2, dtype=bool), SelectionMode.FIRST, r"xyz must be \[S, T, 3\]"),
        (np.zeros((2, 64, 3)), np.ones(3, dtype=bool), SelectionMode.FIRST, r"valid_mask must be \[2\] bool"),
        (np.zeros((2, 64, 3)), np.ones(2), SelectionMode.FIRST, "valid_mask"),
        (np.zeros((2, 3, 3)), np.ones(2, dtype=bool), SelectionMode.MIN_LATERAL_JERK, "at least 4 waypoints"),
    ],
)
def test_bad_inputs(xyz: np.ndarray, mask: np.ndarray, mode: SelectionMode, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        select(xyz, mode, mask)
