"""Choosing the observation time t0 and the frames of every camera around it (MODEL.md §4.1).

Definition of t0: the newest stamp of the reference camera at which every other camera has a frame within
`tolerance_s`. Reference stamps are tried newest first, so a camera whose frames arrive late (same stamps,
later delivery) makes t0 fall back to the newest stamp all cameras have delivered, never to a mix.

Then, for every camera and every offset in `frame_offsets_s`, the frame nearest t0 + offset within
`tolerance_s` is taken (oldest first). A missing frame is reported (FRAMES_MISSING) rather than searched for
at an older t0: a dropped frame is a data problem worth counting, and planning on older data is the caller's
decision (max input age).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from alpamayo_ros.planner.buffers import FrameBuffer
from alpamayo_ros.planner.types import NS_PER_S, Frame, Skip, SkipReason

# MODEL.md §4.1: the checkpoint's cameras, in model order (camera index 0, 1, 2, 6).
DEFAULT_CAMERA_NAMES: tuple[str, ...] = (
    "camera_cross_left_120fov",
    "camera_front_wide_120fov",
    "camera_cross_right_120fov",
    "camera_front_tele_30fov",
)


@dataclass(frozen=True)
class SyncConfig:
    """How frames are matched across cameras and time."""

    # Camera names in model order (MODEL.md §4.1); the node maps each to a topic.
    camera_names: tuple[str, ...] = DEFAULT_CAMERA_NAMES
    # The camera whose stamps define t0 (must be in camera_names); front wide is the main forward view.
    reference_camera: str = "camera_front_wide_120fov"
    # Frame times relative to t0 in seconds, strictly increasing, last 0.0 (MODEL.md §4.1: -0.3 .. 0.0 s).
    frame_offsets_s: tuple[float, ...] = (-0.3, -0.2, -0.1, 0.0)
    # Largest |stamp - wanted time| accepted, s; at most half the smallest offset spacing so that no frame
    # can serve two offsets. 20 ms suits hardware-triggered cameras at 30 Hz; raise it for free-running ones.
    tolerance_s: float = 0.02
    # (H, W) every frame must have, or None to accept any size as long as one camera's frames agree.
    image_size_hw: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.camera_names:
            raise ValueError("camera_names must not be empty")
        if len(set(self.camera_names)) != len(self.camera_names):
            raise ValueError(f"camera_names has duplicates: {self.camera_names}")
        if self.reference_camera not in self.camera_names:
            raise ValueError(
                f"reference_camera {self.reference_camera!r} is not in camera_names {self.camera_names}"
            )
        offsets = self.frame_offsets_s
        if not offsets or offsets[-1] != 0.0:
            raise ValueError(f"frame_offsets_s must end with 0.0, got {offsets}")
        spacings = np.diff(offsets)
        if np.any(spacings <= 0):
            raise ValueError(f"frame_offsets_s must be strictly increasing, got {offsets}")
        if not self.tolerance_s > 0:
            raise ValueError(f"tolerance_s must be > 0, got {self.tolerance_s}")
        if spacings.size and self.tolerance_s > float(spacings.min()) / 2 + 1e-12:
            raise ValueError(
                f"tolerance_s {self.tolerance_s} exceeds half the smallest frame spacing "
                f"{float(spacings.min())} s"
            )
        if self.image_size_hw is not None and (len(self.image_size_hw) != 2 or min(self.image_size_hw) <= 0):
            raise ValueError(f"image_size_hw must be two positive ints or None, got {self.image_size_hw}")

    @property
    def tolerance_ns(self) -> int:
        return round(self.tolerance_s * NS_PER_S)

    @property
    def frame_offsets_ns(self) -> tuple[int, ...]:
        return tuple(round(offset * NS_PER_S) for offset in self.frame_offsets_s)


@dataclass(frozen=True)
class FrameSelection:
    """The frames chosen for one observation (references into the buffers, not copies)."""

    t0_ns: int
    frames: tuple[tuple[Frame, ...], ...]  # [V][F], cameras in config order, frames oldest first

    def stamps_ns(self) -> np.ndarray:
        """[V, F] int64 stamps of the chosen frames."""
        return np.array([[frame.stamp_ns for frame in row] for row in self.frames], dtype=np.int64)

    def stack_images(self) -> tuple[np.ndarray, ...]:
        """V fresh arrays [F, H, W, 3] uint8 (copies, so later buffer changes cannot affect them)."""
        return tuple(np.stack([frame.image for frame in row]) for row in self.frames)


def _find_t0(buffers: Mapping[str, FrameBuffer], cfg: SyncConfig) -> int | Skip:
    """Newest reference stamp at which every camera has a frame within tolerance (module docstring)."""
    tolerance_ns = cfg.tolerance_ns
    reference = buffers[cfg.reference_camera]
    others = [name for name in cfg.camera_names if name != cfg.reference_camera]
    for candidate_ns in reversed(reference.stamps_ns()):
        if all(buffers[name].nearest(candidate_ns, tolerance_ns) is not None for name in others):
            return candidate_ns
    newest = {name: buffers[name].latest_stamp_ns for name in cfg.camera_names}
    reference_ns = newest[cfg.reference_camera]
    offsets_ms = ", ".join(
        f"{name}: {(stamp - reference_ns) / 1e6:+.1f} ms" for name, stamp in newest.items()
    )
    return Skip(
        SkipReason.CAMERAS_OUT_OF_SYNC,
        f"no {cfg.reference_camera} stamp has a frame from every camera within "
        f"{cfg.tolerance_s * 1e3:.0f} ms; "
        f"newest stamps relative to {cfg.reference_camera}: {offsets_ms}",
    )


def select_frames(buffers: Mapping[str, FrameBuffer], cfg: SyncConfig) -> FrameSelection | Skip:
    """Choose t0 and, per camera, the frames nearest t0 + frame_offsets_s.

    Args:
        buffers: one FrameBuffer per name in cfg.camera_names (extra entries are ignored).
        cfg: sync settings.

    Returns:
        A FrameSelection, or a Skip with NO_IMAGES (a camera has no frame or no buffer), CAMERAS_OUT_OF_SYNC
        (no common t0), FRAMES_MISSING (a camera lacks a frame near some t0 + offset) or IMAGE_SIZE_MISMATCH
        (frames of one camera differ in size, or differ from cfg.image_size_hw).
    """
    empty = [name for name in cfg.camera_names if name not in buffers or len(buffers[name]) == 0]
    if empty:
        return Skip(SkipReason.NO_IMAGES, f"no frames from {', '.join(empty)}")
    t0 = _find_t0(buffers, cfg)
    if isinstance(t0, Skip):
        return t0
    tolerance_ns = cfg.tolerance_ns
    rows: list[tuple[Frame, ...]] = []
    for name in cfg.camera_names:
        row: list[Frame] = []
        for offset_ns in cfg.frame_offsets_ns:
            frame = buffers[name].nearest(t0 + offset_ns, tolerance_ns)
            if frame is None or (row and frame.stamp_ns <= row[-1].stamp_ns):
                return Skip(
                    SkipReason.FRAMES_MISSING,
                    f"{name} has no distinct frame within {cfg.tolerance_s * 1e3:.0f} ms of "
                    f"t0{offset_ns / 1e9:+.2f} s "
                    f"(t0 = {t0} ns)",
                )
            row.append(frame)
        sizes = {frame.image.shape for frame in row}
        expected = None if cfg.image_size_hw is None else (*cfg.image_size_hw, 3)
        if len(sizes) != 1 or (expected is not None and sizes != {expected}):
            return Skip(
                SkipReason.IMAGE_SIZE_MISMATCH,
                f"{name} frames have shapes {sorted(sizes)}"
                + ("" if expected is None else f", expected {expected}"),
            )
        rows.append(tuple(row))
    return FrameSelection(t0_ns=t0, frames=tuple(rows))
