"""Fuzzing the message boundary: a random sensor message becomes a Frame / EgoSample or a clear ValueError
(ImageDecodeError, InvalidOdometryError, an odometry gate reason), never another exception; random streams
of such messages leave the planning core's buffers consistent and its observations well-formed."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("rclpy")

from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from alpamayo_ros.planner.buffers import InsertResult, InvalidOdometryError, OdometryBuffer  # noqa: E402
from alpamayo_ros.planner.cycle import PlannerConfig, PlanningCore  # noqa: E402
from alpamayo_ros.planner.images import (  # noqa: E402
    SUPPORTED_RAW_ENCODINGS,
    ImageDecodeError,
    encode_compressed,
    encode_raw,
)
from alpamayo_ros.planner.sync import SyncConfig  # noqa: E402
from alpamayo_ros.planner.types import NS_PER_S, EgoSample, Observation, Skip  # noqa: E402
from alpamayo_ros.ros import convert  # noqa: E402
from alpamayo_ros.ros.odometry_gate import OdometryGate, OdometryGateConfig  # noqa: E402

pytestmark = [
    pytest.mark.ros,
    # OdometryBuffer takes the norm of quaternions like (1e308, 1e308, ...): inf, then correctly rejected.
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]

MS = 1_000_000
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_RGB = np.random.default_rng(0).integers(0, 255, (6, 10, 3), dtype=np.uint8)
PAYLOADS = {"jpeg": encode_compressed(_RGB, "jpeg"), "png": encode_compressed(_RGB, "png")}

sizes = st.one_of(st.integers(0, 9), st.sampled_from([2**16, 2**32 - 1]))
stamps = st.tuples(st.integers(-(2**31), 2**31 - 1), st.integers(0, 2**32 - 1))
encodings = st.one_of(st.sampled_from(SUPPORTED_RAW_ENCODINGS),
                      st.sampled_from([e.upper() for e in SUPPORTED_RAW_ENCODINGS]),
                      st.sampled_from(["yuv422", "32FC1", "16UC1", "8UC3", "nv12", ""]), st.text(max_size=12))


def _stamp(msg, stamp: tuple[int, int]) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp


@st.composite
def raw_images(draw) -> Image:
    """Any header: known and unknown encodings, sizes down to 0 and up to 2^32 - 1, any step, data lengths
    that fit step * height (half the time, when small) or not."""
    height, width, step = draw(sizes), draw(sizes), draw(st.one_of(st.integers(0, 80), st.just(2**32 - 1)))
    exact = height * step
    length = exact if exact <= 4096 and draw(st.booleans()) else draw(st.integers(0, 600))
    msg = Image(encoding=draw(encodings), height=height, width=width, step=step,
                is_bigendian=draw(st.integers(0, 1)), data=draw(st.binary(min_size=length, max_size=length)))
    _stamp(msg, draw(stamps))
    return msg


@st.composite
def well_formed_raw_images(draw) -> Image:
    """Valid payloads of every supported encoding (with row padding): decoding is exercised, not refused."""
    encoding = draw(st.sampled_from(SUPPORTED_RAW_ENCODINGS))
    height, width = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    rgb = draw(st.binary(min_size=height * width * 3, max_size=height * width * 3))
    padding = 2 * draw(st.integers(0, 3))
    big_endian = draw(st.booleans())
    step, data = encode_raw(np.frombuffer(rgb, np.uint8).reshape(height, width, 3), encoding,
                            row_padding_bytes=padding, is_bigendian=big_endian)
    msg = Image(encoding=encoding, height=height, width=width, step=step, is_bigendian=big_endian, data=data)
    _stamp(msg, draw(stamps))
    return msg


@st.composite
def compressed_images(draw) -> CompressedImage:
    """Known and unknown formats over valid, truncated, bit-flipped, random and empty payloads."""
    fmt = draw(st.one_of(st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "bgr8; png compressed",
                                          "JPEG", "jpg", "compressedDepth png", "bmp", "tiff", ""]),
                         st.text(max_size=20)))
    payload = bytearray(PAYLOADS[draw(st.sampled_from(sorted(PAYLOADS)))])
    mutation = draw(st.sampled_from(["none", "truncate", "flip", "random", "empty"]))
    if mutation == "truncate":
        payload = payload[: draw(st.integers(0, len(payload) - 1))]
    elif mutation == "flip":
        for _ in range(draw(st.integers(1, 8))):
            payload[draw(st.integers(0, len(payload) - 1))] ^= 1 << draw(st.integers(0, 7))
    elif mutation == "random":
        payload = bytearray(draw(st.binary(max_size=400)))
    elif mutation == "empty":
        payload = bytearray()
    msg = CompressedImage(format=fmt, data=bytes(payload))
    _stamp(msg, draw(stamps))
    return msg


def _check_frame(frame, msg) -> None:
    assert frame.stamp_ns == msg.header.stamp.sec * NS_PER_S + msg.header.stamp.nanosec
    assert frame.image.dtype == np.uint8 and frame.image.ndim == 3 and frame.image.shape[2] == 3
    assert frame.image.flags.c_contiguous


@FUZZ
@given(raw_images())
def test_random_raw_image_is_a_frame_or_a_decode_error(msg: Image) -> None:
    try:
        frame = convert.image_to_frame(msg)
    except ImageDecodeError:
        return
    _check_frame(frame, msg)
    assert frame.image.shape[:2] == (msg.height, msg.width)


@FUZZ
@given(well_formed_raw_images())
def test_well_formed_raw_image_decodes(msg: Image) -> None:
    frame = convert.image_to_frame(msg)
    _check_frame(frame, msg)
    assert frame.image.shape[:2] == (msg.height, msg.width)


@FUZZ
@given(compressed_images())
def test_random_compressed_image_is_a_frame_or_a_decode_error(msg: CompressedImage) -> None:
    try:
        frame = convert.compressed_to_frame(msg)
    except ImageDecodeError:
        return
    _check_frame(frame, msg)


floats = st.one_of(st.floats(-1e3, 1e3), st.floats(allow_nan=True, allow_infinity=True))
frame_ids = st.one_of(st.sampled_from(["odom", "map", "base_link", ""]), st.text(max_size=8))


@st.composite
def odometries(draw) -> Odometry:
    msg = Odometry()
    _stamp(msg, draw(stamps))
    msg.header.frame_id, msg.child_frame_id = draw(frame_ids), draw(frame_ids)
    p, q, v = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist.linear
    p.x, p.y, p.z = draw(floats), draw(floats), draw(floats)
    if draw(st.booleans()):
        q.x, q.y, q.z, q.w = draw(floats), draw(floats), draw(floats), draw(floats)
    else:  # a unit quaternion (possibly slightly off): exercises acceptance too
        yaw = draw(st.floats(-4.0, 4.0))
        q.z, q.w = np.sin(yaw / 2) * draw(st.floats(0.995, 1.005)), np.cos(yaw / 2)
    v.x, v.y, v.z = draw(floats), draw(floats), draw(floats)
    msg.pose.covariance[0] = draw(st.sampled_from([0.0, -1.0, float("nan")]))  # missing / unknown: unused
    return msg


@FUZZ
@given(odometries(), st.lists(odometries(), max_size=4))
def test_random_odometry_is_a_sample_or_a_clear_rejection(msg: Odometry, earlier: list[Odometry]) -> None:
    sample = convert.odometry_to_sample(msg)  # a plain copy: never raises, never validates
    assert isinstance(sample, EgoSample)
    assert sample.stamp_ns == msg.header.stamp.sec * NS_PER_S + msg.header.stamp.nanosec
    np.testing.assert_array_equal(sample.position, [msg.pose.pose.position.x, msg.pose.pose.position.y,
                                                    msg.pose.pose.position.z])
    gate = OdometryGate(OdometryGateConfig())
    buffer = OdometryBuffer(horizon_ns=3 * NS_PER_S, time_jump_threshold_ns=NS_PER_S)
    for m in [*earlier, msg]:  # the node's order: gate, then buffer, then gate.accept
        s = convert.odometry_to_sample(m)
        reason = gate.check(m.header.frame_id, m.child_frame_id, s)
        if reason is not None:
            assert isinstance(reason, str) and reason
            continue
        try:
            result = buffer.add(s)
        except InvalidOdometryError as error:
            assert str(error).startswith(f"odometry at {s.stamp_ns} ns:")
            continue
        assert isinstance(result, InsertResult)
        if result is not InsertResult.DROPPED:
            gate.accept(m.header.frame_id, m.child_frame_id, s)
    stored = buffer.stamps_ns()
    assert list(stored) == sorted(set(stored))


CAMERAS = ("front", "side")


@st.composite
def events(draw):
    """One input event of a stream: a camera message (often malformed), an odometry message, a reset or a
    planning tick; stamps mostly move forward by 10 Hz / 50 Hz steps, sometimes jump back or far ahead."""
    kind = draw(st.sampled_from(["frame", "frame", "frame", "odom", "odom", "tick", "reset"]))
    step_ms = draw(st.one_of(st.integers(0, 120), st.sampled_from([-5000, -900, 3000])))
    if kind == "frame":
        image = draw(st.one_of(well_formed_raw_images(), raw_images()))
        return kind, draw(st.sampled_from(CAMERAS)), step_ms, image
    if kind == "odom":
        return kind, None, step_ms, draw(odometries())
    return kind, None, step_ms, None


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events(), max_size=60))
def test_random_input_streams_keep_the_core_consistent(stream) -> None:
    core = PlanningCore(PlannerConfig(
        sync=SyncConfig(camera_names=CAMERAS, reference_camera="front", frame_offsets_s=(-0.1, 0.0)),
        frame_buffer_capacity=4, odometry_horizon_s=2.0))
    gate = OdometryGate(OdometryGateConfig(max_gap_s=core.config.history.max_gap_s))
    now_ns = 1_000 * NS_PER_S
    for kind, camera, step_ms, msg in stream:
        now_ns += step_ms * MS
        if kind == "frame":
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now_ns, NS_PER_S)
            try:
                frame = convert.image_to_frame(msg)
                core.add_frame(camera, frame)
            except ValueError:  # ImageDecodeError, or a frame the core refuses
                pass
        elif kind == "odom":
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now_ns, NS_PER_S)
            sample = convert.odometry_to_sample(msg)
            if gate.check(msg.header.frame_id, msg.child_frame_id, sample) is None:
                try:
                    if core.add_odometry(sample) is not InsertResult.DROPPED:
                        gate.accept(msg.header.frame_id, msg.child_frame_id, sample)
                except InvalidOdometryError:
                    pass
        elif kind == "reset":
            core.reset()
        else:
            outcome = core.build_observation(now_ns)
            assert isinstance(outcome, (Observation, Skip))
            if isinstance(outcome, Observation):
                assert len(outcome.images) == len(CAMERAS)
                assert len({views.shape for views in outcome.images[:1]}) == 1
                assert np.all(np.diff(outcome.frame_stamps_ns, axis=1) > 0)  # [V, F] oldest first
                assert np.isfinite(outcome.history_xyz).all() and np.isfinite(outcome.speed_mps)
                assert outcome.t0_ns <= now_ns + NS_PER_S
        newest = core.newest_stamps_ns()
        assert set(newest) == {*CAMERAS, "odometry"}
