"""The 16-pose egomotion history: rate independence, analytic values, t0 anchor, coverage errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import transforms3d.quaternions as t3d

from alpamayo_ros.planner.buffers import OdometryBuffer
from alpamayo_ros.planner.egomotion import History, HistoryConfig, SpeedSource, build_history
from alpamayo_ros.planner.types import NS_PER_S, EgoSample, Skip, SkipReason

MS = 1_000_000
T0_NS = 2 * NS_PER_S
POSITION_TOL_M = 1e-3
ANGLE_TOL_RAD = 1e-4

# A climbing constant-curvature arc driven with constant acceleration, the body rolled by a constant angle.
V0_MPS, ACCEL_MPS2, CURVATURE_PER_M, SLOPE, ROLL_RAD, YAW0_RAD = 8.0, 1.5, 0.02, 0.05, 0.03, 0.7
ORIGIN_M = np.array([1200.0, -350.0, 12.0])  # far from 0, as odometry frames are


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _pose(t_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position [3], rotation [3, 3], world velocity [3]) of the analytic trajectory at time t_s."""
    arc = V0_MPS * t_s + 0.5 * ACCEL_MPS2 * t_s**2
    speed = V0_MPS + ACCEL_MPS2 * t_s
    yaw = YAW0_RAD + CURVATURE_PER_M * arc
    position = ORIGIN_M + np.array(
        [
            (math.sin(yaw) - math.sin(YAW0_RAD)) / CURVATURE_PER_M,
            -(math.cos(yaw) - math.cos(YAW0_RAD)) / CURVATURE_PER_M,
            SLOPE * arc,
        ]
    )
    velocity = speed * np.array([math.cos(yaw), math.sin(yaw), SLOPE])
    return position, _rot_z(yaw) @ _rot_x(ROLL_RAD), velocity


def _sample(stamp_ns: int) -> EgoSample:
    position, rotation, velocity = _pose(stamp_ns / NS_PER_S)
    w, x, y, z = t3d.mat2quat(rotation)
    return EgoSample(stamp_ns, position, np.array([x, y, z, w]), rotation.T @ velocity)


def _odometry(
    rate_hz: float, phase_ms: float = 0.0, jitter_ms: float = 0.0, end_ns: int = T0_NS + 200 * MS
) -> OdometryBuffer:
    """Samples of the analytic trajectory from ~0 to end_ns, delivered shuffled within blocks of 4."""
    buffer = OdometryBuffer(horizon_ns=3 * NS_PER_S, time_jump_threshold_ns=NS_PER_S)
    rng = np.random.default_rng(1)
    period_ns = NS_PER_S / rate_hz
    stamps = np.arange(round(phase_ms * MS), end_ns + 1, period_ns)
    stamps = (stamps + rng.uniform(-jitter_ms, jitter_ms, size=stamps.size) * MS).round().astype(np.int64)
    for start in range(0, stamps.size, 4):
        for stamp in rng.permutation(stamps[start : start + 4]):
            buffer.add(_sample(int(stamp)))
    return buffer


def _analytic_history() -> tuple[np.ndarray, np.ndarray]:
    p0, r0, _ = _pose(T0_NS / NS_PER_S)
    times = T0_NS / NS_PER_S + np.arange(-15, 1) * 0.1
    poses = [_pose(t) for t in times]
    xyz = np.stack([r0.T @ (p - p0) for p, _, _ in poses])
    rot = np.stack([r0.T @ r for _, r, _ in poses])
    return xyz, rot


def _history(result: History | Skip) -> History:
    assert isinstance(result, History), result
    return result


def _max_angle_rad(rot_a: np.ndarray, rot_b: np.ndarray) -> float:
    """Largest rotation angle between matching [H, 3, 3] rotations (small-angle form, exact to O(angle^3))."""
    relative = np.einsum("hji,hjk->hik", rot_a, rot_b)  # [H, 3, 3], A^T B
    return float((np.linalg.norm(relative - np.eye(3), axis=(1, 2)) / math.sqrt(2.0)).max())


@pytest.mark.parametrize(
    ("rate_hz", "phase_ms", "jitter_ms"),
    [(10.0, 0.0, 0.0), (50.0, 7.0, 0.0), (100.0, 3.0, 2.0)],
    ids=["10Hz-aligned", "50Hz-offset", "100Hz-jitter"],
)
def test_history_is_rate_independent_and_analytic(rate_hz: float, phase_ms: float, jitter_ms: float) -> None:
    history = _history(build_history(_odometry(rate_hz, phase_ms, jitter_ms), T0_NS, HistoryConfig()))
    xyz, rot = _analytic_history()
    assert history.xyz.shape == (16, 3) and history.xyz.dtype == np.float32
    assert history.rot.shape == (16, 3, 3) and history.rot.dtype == np.float32
    np.testing.assert_allclose(history.xyz, xyz, atol=POSITION_TOL_M)
    assert _max_angle_rad(history.rot.astype(np.float64), rot) < ANGLE_TOL_RAD
    assert xyz[0, 0] < -10.0 and abs(xyz[0, 1]) > 0.05  # the test trajectory really moves and turns


def test_rates_agree_with_each_other() -> None:
    histories = [
        _history(build_history(_odometry(rate), T0_NS, HistoryConfig())) for rate in (10.0, 50.0, 100.0)
    ]
    for other in histories[1:]:
        np.testing.assert_allclose(other.xyz, histories[0].xyz, atol=POSITION_TOL_M)
        angle_rad = _max_angle_rad(other.rot.astype(np.float64), histories[0].rot.astype(np.float64))
        assert angle_rad < ANGLE_TOL_RAD


def test_10_hz_out_of_phase_is_only_chord_accurate() -> None:
    # Linear interpolation between 10 Hz samples has chord error ~ (a + v^2 k) h^2 / 8 ~ 6 mm here.
    history = _history(build_history(_odometry(10.0, phase_ms=50.0), T0_NS, HistoryConfig()))
    error_m = np.abs(history.xyz - _analytic_history()[0]).max()
    assert 1e-4 < error_m < 1e-2


def test_last_pose_is_exactly_origin_and_identity() -> None:
    history = _history(build_history(_odometry(50.0, 7.0), T0_NS, HistoryConfig()))
    np.testing.assert_array_equal(history.xyz[-1], np.zeros(3, dtype=np.float32))
    np.testing.assert_array_equal(history.rot[-1], np.eye(3, dtype=np.float32))


def test_t0_pose_and_speed() -> None:
    p0, r0, velocity = _pose(T0_NS / NS_PER_S)
    odometry = _odometry(100.0)
    history = _history(build_history(odometry, T0_NS, HistoryConfig()))
    np.testing.assert_allclose(history.t0_position, p0, atol=1e-9)
    np.testing.assert_allclose(history.t0_rotation, r0, atol=1e-9)
    assert history.speed_mps == pytest.approx(float(np.linalg.norm(velocity)), abs=1e-9)
    cfg = HistoryConfig(speed_source=SpeedSource.POSITIONS)
    from_positions = _history(build_history(odometry, T0_NS, cfg))
    # a backward difference over 0.1 s: the speed at t0 - 0.05 s (accelerating at 1.5 m/s^2)
    speed_at_t0_minus_50ms = float(np.linalg.norm(velocity)) * (1 - 0.075 / (V0_MPS + ACCEL_MPS2 * 2.0))
    assert from_positions.speed_mps == pytest.approx(speed_at_t0_minus_50ms, abs=2e-3)


def test_small_extrapolation_is_allowed() -> None:
    history = build_history(_odometry(100.0, end_ns=T0_NS - 30 * MS), T0_NS, HistoryConfig())
    assert isinstance(history, History)
    # 30 ms of constant-velocity extrapolation misses (a + v^2 k) t^2 / 2 ~ 2 mm of this trajectory.
    np.testing.assert_allclose(history.xyz, _analytic_history()[0], atol=3e-3)


def test_extrapolation_beyond_bound_is_history_incomplete() -> None:
    result = build_history(_odometry(100.0, end_ns=T0_NS - 80 * MS), T0_NS, HistoryConfig())
    assert isinstance(result, Skip) and result.reason is SkipReason.HISTORY_INCOMPLETE
    assert "80.0 ms outside" in result.detail


def test_odometry_starting_too_late_is_history_incomplete() -> None:
    buffer = OdometryBuffer(horizon_ns=3 * NS_PER_S, time_jump_threshold_ns=NS_PER_S)
    for k in range(120):  # covers t0 - 1.2 s .. t0 only
        buffer.add(_sample(T0_NS - 1200 * MS + k * 10 * MS))
    result = build_history(buffer, T0_NS, HistoryConfig())
    assert isinstance(result, Skip) and result.reason is SkipReason.HISTORY_INCOMPLETE


def test_odometry_dropout_is_history_incomplete() -> None:
    buffer = OdometryBuffer(horizon_ns=3 * NS_PER_S, time_jump_threshold_ns=NS_PER_S)
    for k in range(200):
        stamp_ns = k * 10 * MS
        if not T0_NS - 900 * MS < stamp_ns < T0_NS - 400 * MS:  # a 0.5 s hole
            buffer.add(_sample(stamp_ns))
    result = build_history(buffer, T0_NS, HistoryConfig())
    assert isinstance(result, Skip) and result.reason is SkipReason.HISTORY_INCOMPLETE
    assert "apart" in result.detail


def test_empty_buffer_is_no_odometry() -> None:
    buffer = OdometryBuffer(horizon_ns=3 * NS_PER_S, time_jump_threshold_ns=NS_PER_S)
    result = build_history(buffer, T0_NS, HistoryConfig())
    assert isinstance(result, Skip) and result.reason is SkipReason.NO_ODOMETRY


def test_history_offsets() -> None:
    offsets = HistoryConfig().offsets_ns()
    assert offsets.shape == (16,) and offsets[0] == -1500 * MS and offsets[-1] == 0
    assert set(np.diff(offsets)) == {100 * MS}
    assert HistoryConfig().span_s == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_poses": 1}, "num_poses must be >= 2, got 1"),
        ({"step_s": 0.0}, "step_s must be > 0"),
        ({"max_extrapolation_s": -0.1}, "max_extrapolation_s"),
        ({"max_gap_s": 0.0}, "max_gap_s"),
        ({"speed_source": "twist"}, "speed_source"),
    ],
)
def test_history_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HistoryConfig(**kwargs)
