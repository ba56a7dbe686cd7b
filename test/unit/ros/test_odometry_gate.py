"""OdometryGate: frame ids held or expected, position jumps rejected, long gaps start a new history."""

from __future__ import annotations

import numpy as np
import pytest

from alpamayo_ros.planner.types import EgoSample
from alpamayo_ros.ros.odometry_gate import JUMP_SLACK_M, OdometryGate, OdometryGateConfig

MS = 1_000_000


def _sample(stamp_ms: int, x: float) -> EgoSample:
    return EgoSample(stamp_ms * MS, np.array([x, 0.0, 0.0]), np.array([0.0, 0.0, 0.0, 1.0]))


def _feed(gate: OdometryGate, sample: EgoSample, frames=("odom", "base_link")) -> str | None:
    reason = gate.check(*frames, sample)
    if reason is None:
        gate.accept(*frames, sample)
    return reason


def test_first_frames_are_held_unless_configured() -> None:
    gate = OdometryGate(OdometryGateConfig())
    assert gate.odom_frame_id == ""
    assert _feed(gate, _sample(0, 0.0), ("map", "base_link")) is None
    assert gate.odom_frame_id == "map"
    reason = _feed(gate, _sample(20, 0.1), ("odom", "base_link"))
    assert reason == ("frame_id 'odom' differs from 'map' of the accepted odometry "
                      "(set input.odom_frame_id to choose)")
    assert "child_frame_id 'imu' differs from 'base_link'" in _feed(gate, _sample(20, 0.1), ("map", "imu"))

    configured = OdometryGate(OdometryGateConfig(odom_frame_id="odom", base_frame_id="base_link"))
    assert configured.odom_frame_id == "odom"
    reason = _feed(configured, _sample(0, 0.0), ("map", "base_link"))
    assert reason == "frame_id 'map' is not 'odom' (input.odom_frame_id)"
    assert _feed(configured, _sample(0, 0.0)) is None


@pytest.mark.parametrize(("dt_ms", "distance_m", "rejected"), [
    (20, 60.0 * 0.02 + JUMP_SLACK_M - 0.01, False),  # just inside max_speed * dt + slack
    (20, 60.0 * 0.02 + JUMP_SLACK_M + 0.01, True),
    (0, JUMP_SLACK_M + 0.01, True),  # a replacement for the same stamp may only move by the slack
    (-20, 50.0, True),  # an older stamp is compared by |dt| too
    (260, 50.0, False),  # beyond max_gap_s: a new history starts, nothing to compare with
])
def test_jumps_are_rejected_within_the_gap(dt_ms: int, distance_m: float, rejected: bool) -> None:
    gate = OdometryGate(OdometryGateConfig(max_speed_mps=60.0, max_gap_s=0.25))
    assert _feed(gate, _sample(1000, 0.0)) is None
    reason = _feed(gate, _sample(1000 + dt_ms, distance_m))
    assert (reason is not None) == rejected
    if rejected:
        assert reason.startswith(f"position jumped {distance_m:.2f} m in {abs(dt_ms)} ms")


def test_a_lasting_relocalisation_is_accepted_after_the_gap() -> None:
    gate = OdometryGate(OdometryGateConfig(max_gap_s=0.25))
    assert _feed(gate, _sample(0, 0.0)) is None
    outcomes = [_feed(gate, _sample(t, 100.0 + 0.1 * t / 20)) for t in range(20, 400, 20)]
    rejected = [o is not None for o in outcomes]
    assert rejected[:12] == [True] * 12  # up to 240 ms after the last accepted sample
    assert not any(rejected[12:])  # then the new position is the reference


def test_non_finite_positions_are_left_to_the_buffer() -> None:
    gate = OdometryGate(OdometryGateConfig())
    _feed(gate, _sample(0, 0.0))
    assert gate.check("odom", "base_link", _sample(20, float("nan"))) is None  # InvalidOdometryError follows
    assert gate.check("odom", "base_link", _sample(20, 1e308)) is not None


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="max_speed_mps must be > 0"):
        OdometryGateConfig(max_speed_mps=0.0)
    with pytest.raises(ValueError, match="max_gap_s must be > 0"):
        OdometryGateConfig(max_gap_s=-1.0)
