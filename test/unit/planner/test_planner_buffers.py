"""Frame and odometry buffers: ordering, duplicates, capacity, nearest lookup, time jumps, interpolation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alpamayo_ros.planner.buffers import (
    ExtrapolationError,
    FrameBuffer,
    InsertResult,
    InvalidOdometryError,
    OdometryBuffer,
    OdometryGapError,
)
from alpamayo_ros.planner.types import NS_PER_S, EgoSample, Frame

MS = 1_000_000
NEVER_JUMPS = 10**18  # a time-jump threshold no test stamp reaches


def _frame(stamp_ns: int, tag: int = 0) -> Frame:
    return Frame(stamp_ns=stamp_ns, image=np.full((2, 2, 3), tag % 256, dtype=np.uint8))


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)])


def _sample(stamp_ns: int, x: float = 0.0, yaw: float = 0.0, vx: float = 0.0) -> EgoSample:
    return EgoSample(stamp_ns, np.array([x, 0.0, 0.0]), _yaw_quat(yaw), np.array([vx, 0.0, 0.0]))


# FrameBuffer


def test_out_of_order_frames_are_kept_sorted() -> None:
    buffer = FrameBuffer(capacity=10, time_jump_threshold_ns=NS_PER_S)
    for stamp in (300, 100, 200, 50):
        assert buffer.add(_frame(stamp * MS)) is InsertResult.INSERTED
    assert buffer.stamps_ns() == tuple(s * MS for s in (50, 100, 200, 300))
    assert buffer.latest_stamp_ns == 300 * MS


def test_duplicate_stamp_replaces_the_stored_frame() -> None:
    buffer = FrameBuffer(capacity=4, time_jump_threshold_ns=NS_PER_S)
    buffer.add(_frame(100 * MS, tag=1))
    assert buffer.add(_frame(100 * MS, tag=2)) is InsertResult.REPLACED
    assert len(buffer) == 1
    assert buffer.nearest(100 * MS, 0).image[0, 0, 0] == 2


def test_capacity_evicts_the_oldest_and_drops_older_arrivals() -> None:
    buffer = FrameBuffer(capacity=3, time_jump_threshold_ns=NS_PER_S)
    for stamp in (100, 200, 300, 400):
        buffer.add(_frame(stamp * MS))
    assert buffer.stamps_ns() == (200 * MS, 300 * MS, 400 * MS)
    assert buffer.add(_frame(150 * MS)) is InsertResult.DROPPED
    assert buffer.add(_frame(250 * MS)) is InsertResult.INSERTED
    assert buffer.stamps_ns() == (250 * MS, 300 * MS, 400 * MS)


def test_nearest_within_tolerance() -> None:
    buffer = FrameBuffer(capacity=8, time_jump_threshold_ns=NS_PER_S)
    for stamp in (100, 133, 167, 200):
        buffer.add(_frame(stamp * MS, tag=stamp))
    assert buffer.nearest(140 * MS, 10 * MS).stamp_ns == 133 * MS
    assert buffer.nearest(160 * MS, 10 * MS).stamp_ns == 167 * MS
    assert buffer.nearest(250 * MS, 49 * MS) is None
    assert buffer.nearest(250 * MS, 50 * MS).stamp_ns == 200 * MS  # tolerance is inclusive
    assert buffer.nearest(150 * MS, 17 * MS).stamp_ns == 167 * MS  # tie 133/167: the newer wins
    assert FrameBuffer(2, NS_PER_S).nearest(0, 10**12) is None


def test_backwards_time_jump_is_reported_and_not_stored() -> None:
    buffer = FrameBuffer(capacity=8, time_jump_threshold_ns=NS_PER_S)
    buffer.add(_frame(100 * NS_PER_S))
    assert buffer.add(_frame(100 * NS_PER_S - 300 * MS)) is InsertResult.INSERTED  # late, not a jump
    assert buffer.add(_frame(5 * NS_PER_S)) is InsertResult.TIME_JUMP
    assert buffer.stamps_ns() == (100 * NS_PER_S - 300 * MS, 100 * NS_PER_S)
    buffer.clear()
    assert len(buffer) == 0 and buffer.latest_stamp_ns is None


def test_frame_buffer_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="capacity must be >= 1, got 0"):
        FrameBuffer(0, NS_PER_S)
    with pytest.raises(ValueError, match="time_jump_threshold_ns"):
        FrameBuffer(3, 0)


@settings(max_examples=80, deadline=None)
@given(
    capacity=st.integers(1, 8),
    stamps=st.lists(st.integers(0, 40), min_size=1, max_size=40),
)
def test_frame_buffer_keeps_the_newest_distinct_stamps(capacity: int, stamps: list[int]) -> None:
    buffer = FrameBuffer(capacity, NEVER_JUMPS)
    last_tag: dict[int, int] = {}
    for tag, stamp in enumerate(stamps):
        buffer.add(_frame(stamp, tag))
        last_tag[stamp] = tag
    expected = sorted(set(stamps))[-capacity:]
    assert list(buffer.stamps_ns()) == expected
    for stamp in expected:
        assert buffer.nearest(stamp, 0).image[0, 0, 0] == last_tag[stamp] % 256


# OdometryBuffer


@pytest.mark.parametrize(
    ("sample", "match"),
    [
        (EgoSample(1, np.array([0.0, np.nan, 0.0]), _yaw_quat(0.0)), "non-finite position"),
        (EgoSample(1, np.zeros(3), np.array([0.0, 0.0, np.inf, 1.0])), "non-finite orientation_xyzw"),
        (EgoSample(1, np.zeros(3), _yaw_quat(0.0), np.array([np.nan, 0, 0])), "non-finite linear_velocity"),
        (EgoSample(1, np.zeros(3), np.zeros(4)), "norm 0"),
        (EgoSample(1, np.zeros(2), _yaw_quat(0.0)), r"position has shape \(2,\)"),
    ],
)
def test_invalid_odometry_is_rejected(sample: EgoSample, match: str) -> None:
    buffer = OdometryBuffer(horizon_ns=2 * NS_PER_S, time_jump_threshold_ns=NS_PER_S)
    with pytest.raises(InvalidOdometryError, match=match):
        buffer.add(sample)
    assert len(buffer) == 0


def test_slightly_non_unit_quaternion_is_normalised_and_input_copied() -> None:
    buffer = OdometryBuffer(horizon_ns=2 * NS_PER_S, time_jump_threshold_ns=NS_PER_S)
    position = np.array([1.0, 2.0, 3.0])
    buffer.add(EgoSample(5, position, _yaw_quat(0.4) * 1.001))
    position[0] = 99.0
    pose = buffer.interpolate(5)
    np.testing.assert_allclose(pose.orientation_xyzw, _yaw_quat(0.4), atol=1e-12)
    np.testing.assert_array_equal(pose.position, [1.0, 2.0, 3.0])


def test_odometry_keeps_at_least_the_horizon() -> None:
    horizon_ns = 1600 * MS
    buffer = OdometryBuffer(horizon_ns=horizon_ns, time_jump_threshold_ns=NS_PER_S)
    for k in range(1000):  # 10 s at 100 Hz
        buffer.add(_sample(k * 10 * MS, x=k * 0.1))
    assert buffer.latest_stamp_ns == 9990 * MS
    assert buffer.oldest_stamp_ns == 9990 * MS - horizon_ns  # exactly on the boundary, kept
    assert len(buffer) == 161


def test_interpolation_is_linear_and_slerped() -> None:
    buffer = OdometryBuffer(horizon_ns=10 * NS_PER_S, time_jump_threshold_ns=NS_PER_S)
    buffer.add(_sample(200 * MS, x=2.0, yaw=0.5, vx=4.0))
    buffer.add(_sample(100 * MS, x=1.0, yaw=0.1, vx=2.0))  # out of order
    pose = buffer.interpolate(175 * MS)
    np.testing.assert_allclose(pose.position, [1.75, 0.0, 0.0])
    np.testing.assert_allclose(pose.orientation_xyzw, _yaw_quat(0.4), atol=1e-12)
    np.testing.assert_allclose(pose.linear_velocity, [3.5, 0.0, 0.0])
    assert pose.stamp_ns == 175 * MS


def test_duplicate_odometry_stamp_replaces() -> None:
    buffer = OdometryBuffer(horizon_ns=10 * NS_PER_S, time_jump_threshold_ns=NS_PER_S)
    buffer.add(_sample(100 * MS, x=1.0))
    assert buffer.add(_sample(100 * MS, x=3.0)) is InsertResult.REPLACED
    assert len(buffer) == 1
    np.testing.assert_array_equal(buffer.interpolate(100 * MS).position, [3.0, 0.0, 0.0])


def test_extrapolation_only_within_bound() -> None:
    buffer = OdometryBuffer(horizon_ns=10 * NS_PER_S, time_jump_threshold_ns=NS_PER_S)
    buffer.add(_sample(100 * MS, x=1.0, yaw=0.0))
    buffer.add(_sample(200 * MS, x=2.0, yaw=0.2))
    pose = buffer.interpolate(240 * MS, max_extrapolation_ns=50 * MS)
    np.testing.assert_allclose(pose.position, [2.4, 0.0, 0.0])
    np.testing.assert_allclose(pose.orientation_xyzw, _yaw_quat(0.28), atol=1e-12)
    with pytest.raises(ExtrapolationError, match=r"covers \[100000000, 200000000\] ns.*60.0 ms outside"):
        buffer.interpolate(260 * MS, max_extrapolation_ns=50 * MS)
    with pytest.raises(ExtrapolationError, match="10.0 ms outside"):
        buffer.interpolate(90 * MS)
    with pytest.raises(ExtrapolationError, match="no odometry buffered"):
        OdometryBuffer(NS_PER_S, NS_PER_S).interpolate(0)


def test_gap_is_refused() -> None:
    buffer = OdometryBuffer(horizon_ns=10 * NS_PER_S, time_jump_threshold_ns=NS_PER_S)
    buffer.add(_sample(0))
    buffer.add(_sample(500 * MS, x=5.0))
    assert buffer.interpolate(250 * MS).position[0] == pytest.approx(2.5)
    with pytest.raises(OdometryGapError, match="500.0 ms apart"):
        buffer.interpolate(250 * MS, max_gap_ns=250 * MS)
    assert buffer.interpolate(500 * MS, max_gap_ns=250 * MS).position[0] == 5.0  # exact hit needs no pair


def test_odometry_time_jump() -> None:
    buffer = OdometryBuffer(horizon_ns=10 * NS_PER_S, time_jump_threshold_ns=NS_PER_S)
    buffer.add(_sample(50 * NS_PER_S))
    assert buffer.add(_sample(3 * NS_PER_S)) is InsertResult.TIME_JUMP
    assert buffer.stamps_ns() == (50 * NS_PER_S,)


@settings(max_examples=80, deadline=None)
@given(stamps=st.lists(st.integers(0, 100), min_size=1, max_size=60), horizon=st.integers(1, 30))
def test_odometry_buffer_keeps_exactly_what_brackets_the_horizon(stamps: list[int], horizon: int) -> None:
    buffer = OdometryBuffer(horizon_ns=horizon, time_jump_threshold_ns=NEVER_JUMPS)
    for stamp in stamps:
        buffer.add(_sample(stamp))
    boundary = max(stamps) - horizon
    older = [s for s in set(stamps) if s <= boundary]
    expected = sorted({s for s in stamps if s >= boundary} | ({max(older)} if older else set()))
    assert list(buffer.stamps_ns()) == expected
