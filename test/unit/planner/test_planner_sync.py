"""Choice of t0 and of the frames around it."""

from __future__ import annotations

import numpy as np
import pytest

from alpamayo_ros.planner.buffers import FrameBuffer
from alpamayo_ros.planner.sync import DEFAULT_CAMERA_NAMES, FrameSelection, SyncConfig, select_frames
from alpamayo_ros.planner.types import NS_PER_S, Frame, Skip, SkipReason

MS = 1_000_000
T_END_NS = 10 * NS_PER_S  # newest frame time in these tests
CAMS = DEFAULT_CAMERA_NAMES
TELE = "camera_front_tele_30fov"


def _frame(camera_index: int, stamp_ns: int, size_hw: tuple[int, int] = (4, 6)) -> Frame:
    image = np.zeros((*size_hw, 3), dtype=np.uint8)
    image[..., 0] = camera_index
    image[..., 1] = (stamp_ns // (10 * MS)) % 256  # which 10 ms slot the frame belongs to
    return Frame(stamp_ns=stamp_ns, image=image)


def _buffers(
    rate_hz: float = 10.0,
    offsets_ms: dict[str, float] | None = None,
    count: int = 10,
) -> dict[str, FrameBuffer]:
    """Every camera at `rate_hz` ending at T_END_NS, shifted by offsets_ms[name] (negative = earlier)."""
    offsets_ms = offsets_ms or {}
    period_ns = round(NS_PER_S / rate_hz)
    buffers = {}
    for index, name in enumerate(CAMS):
        buffer = FrameBuffer(capacity=32, time_jump_threshold_ns=NS_PER_S)
        shift_ns = round(offsets_ms.get(name, 0.0) * MS)
        for k in range(count):
            buffer.add(_frame(index, T_END_NS - k * period_ns + shift_ns))
        buffers[name] = buffer
    return buffers


def _expect_selection(result: FrameSelection | Skip) -> FrameSelection:
    assert isinstance(result, FrameSelection), result
    return result


def test_synchronised_cameras_give_four_frames_each_oldest_first() -> None:
    selection = _expect_selection(select_frames(_buffers(), SyncConfig()))
    assert selection.t0_ns == T_END_NS
    expected = np.array([T_END_NS - k * 100 * MS for k in (3, 2, 1, 0)], dtype=np.int64)
    np.testing.assert_array_equal(selection.stamps_ns(), np.tile(expected, (4, 1)))
    images = selection.stack_images()
    assert len(images) == 4 and images[0].shape == (4, 4, 6, 3)
    for camera_index, stack in enumerate(images):
        assert (stack[..., 0] == camera_index).all()  # camera order as configured
        np.testing.assert_array_equal(stack[:, 0, 0, 1], (expected // (10 * MS)) % 256)  # oldest first


def test_thirty_hz_cameras_with_jitter() -> None:
    buffers = {}
    rng = np.random.default_rng(0)
    period_ns = NS_PER_S // 30
    for index, name in enumerate(CAMS):
        buffers[name] = FrameBuffer(capacity=32, time_jump_threshold_ns=NS_PER_S)
        for k in range(20):
            jitter_ns = 0 if name == CAMS[1] else int(rng.integers(-4 * MS, 4 * MS))
            buffers[name].add(_frame(index, T_END_NS - k * period_ns + jitter_ns))
    selection = _expect_selection(select_frames(buffers, SyncConfig()))
    assert selection.t0_ns == T_END_NS
    wanted = T_END_NS + np.array([-300, -200, -100, 0]) * MS
    assert np.abs(selection.stamps_ns() - wanted).max() <= 20 * MS


def test_camera_40_ms_late_is_accepted_with_50_ms_tolerance() -> None:
    buffers = _buffers(offsets_ms={TELE: -40.0})
    selection = _expect_selection(select_frames(buffers, SyncConfig(tolerance_s=0.05)))
    assert selection.t0_ns == T_END_NS
    tele_row = selection.stamps_ns()[CAMS.index(TELE)]
    np.testing.assert_array_equal(tele_row, T_END_NS - 40 * MS + np.array([-300, -200, -100, 0]) * MS)


def test_camera_40_ms_late_is_a_reported_skip_with_20_ms_tolerance() -> None:
    result = select_frames(_buffers(offsets_ms={TELE: -40.0}), SyncConfig(tolerance_s=0.02))
    assert isinstance(result, Skip) and result.reason is SkipReason.CAMERAS_OUT_OF_SYNC
    assert f"{TELE}: -40.0 ms" in result.detail


def test_late_arrival_falls_back_to_the_newest_common_time() -> None:
    buffers = _buffers()
    del buffers[TELE]
    tele = FrameBuffer(capacity=32, time_jump_threshold_ns=NS_PER_S)
    for k in range(1, 10):  # the newest tele frame has not arrived yet
        tele.add(_frame(3, T_END_NS - k * 100 * MS))
    buffers[TELE] = tele
    selection = _expect_selection(select_frames(buffers, SyncConfig()))
    assert selection.t0_ns == T_END_NS - 100 * MS
    assert selection.stamps_ns()[1, -1] == T_END_NS - 100 * MS  # the reference's newer frame is not mixed in


def test_reference_camera_defines_t0() -> None:
    buffers = _buffers(offsets_ms={CAMS[0]: 8.0})
    selection = _expect_selection(select_frames(buffers, SyncConfig(reference_camera=CAMS[0])))
    assert selection.t0_ns == T_END_NS + 8 * MS


def test_missing_camera_is_no_images() -> None:
    buffers = _buffers()
    buffers[CAMS[2]] = FrameBuffer(capacity=4, time_jump_threshold_ns=NS_PER_S)
    del buffers[CAMS[0]]
    result = select_frames(buffers, SyncConfig())
    assert result == Skip(SkipReason.NO_IMAGES, f"no frames from {CAMS[0]}, {CAMS[2]}")


def test_dropped_frame_is_frames_missing() -> None:
    buffers = _buffers()
    cross_right = FrameBuffer(capacity=32, time_jump_threshold_ns=NS_PER_S)
    for k in (0, 1, 3, 4):  # t0 - 0.2 s was dropped
        cross_right.add(_frame(2, T_END_NS - k * 100 * MS))
    buffers[CAMS[2]] = cross_right
    result = select_frames(buffers, SyncConfig())
    assert isinstance(result, Skip) and result.reason is SkipReason.FRAMES_MISSING
    assert CAMS[2] in result.detail and "t0-0.20 s" in result.detail


def test_one_frame_never_serves_two_offsets() -> None:
    buffers = _buffers()
    sparse = FrameBuffer(capacity=32, time_jump_threshold_ns=NS_PER_S)
    for offset_ms in (-300, -150, 0):  # t0-0.15 is exactly 50 ms from both t0-0.2 and t0-0.1
        sparse.add(_frame(3, T_END_NS + offset_ms * MS))
    buffers[TELE] = sparse
    result = select_frames(buffers, SyncConfig(tolerance_s=0.05))
    assert isinstance(result, Skip) and result.reason is SkipReason.FRAMES_MISSING


def test_size_change_within_a_camera_is_a_mismatch() -> None:
    buffers = _buffers()
    buffers[CAMS[0]].add(_frame(0, T_END_NS, size_hw=(8, 6)))  # replaces the t0 frame with a bigger one
    result = select_frames(buffers, SyncConfig())
    assert isinstance(result, Skip) and result.reason is SkipReason.IMAGE_SIZE_MISMATCH
    assert "(4, 6, 3)" in result.detail and "(8, 6, 3)" in result.detail


def test_configured_image_size_is_enforced() -> None:
    assert isinstance(select_frames(_buffers(), SyncConfig(image_size_hw=(4, 6))), FrameSelection)
    result = select_frames(_buffers(), SyncConfig(image_size_hw=(1080, 1920)))
    assert isinstance(result, Skip) and result.reason is SkipReason.IMAGE_SIZE_MISMATCH


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"tolerance_s": 0.06}, "tolerance_s 0.06 exceeds half"),
        ({"tolerance_s": 0.0}, "tolerance_s must be > 0"),
        ({"reference_camera": "camera_rear"}, "reference_camera 'camera_rear'"),
        ({"frame_offsets_s": (-0.2, -0.1)}, "must end with 0.0"),
        ({"frame_offsets_s": (-0.1, -0.2, 0.0)}, "strictly increasing"),
        ({"camera_names": ("a", "a"), "reference_camera": "a"}, "duplicates"),
        ({"image_size_hw": (0, 5)}, "image_size_hw"),
    ],
)
def test_sync_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SyncConfig(**kwargs)


def test_custom_camera_set() -> None:
    cfg = SyncConfig(camera_names=("front",), reference_camera="front", frame_offsets_s=(0.0,))
    buffer = FrameBuffer(capacity=4, time_jump_threshold_ns=NS_PER_S)
    buffer.add(_frame(0, 123 * MS))
    selection = _expect_selection(select_frames({"front": buffer}, cfg))
    assert selection.t0_ns == 123 * MS and selection.stamps_ns().shape == (1, 1)
