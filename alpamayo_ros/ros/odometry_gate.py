"""Checks on the odometry stream before a sample reaches the planning core: frame ids and position jumps.

The core checks each sample's values (finite, unit quaternion: `planner/buffers.py`). The gate checks what
only the stream shows:

- Frames: `header.frame_id` (the odometry frame) and `child_frame_id` (the body frame) must equal
  `input.odom_frame_id` / `input.base_frame_id`. An empty expectation adopts the frames of the first accepted
  message and then holds them, so a second source in another frame is rejected instead of mixing poses of two
  frames in one history.
- Jumps: a position further from the previous accepted sample than `max_speed_mps * |dt| + JUMP_SLACK_M`
  is rejected (a localisation glitch would otherwise bend the history). Samples are only compared across an
  interval a history pose may be interpolated over (`history.max_gap_s`): after a longer silence the next
  sample starts a new history, which the core never interpolates across. So a lasting relocalisation is
  rejected for at most max_gap_s and never locks the input out.

Covariances are not read anywhere in the planner, so missing (all-zero or -1) covariances are accepted.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from alpamayo_ros.planner.types import NS_PER_S, EgoSample

# Position change allowed on top of max_speed * dt, m: localisation noise and corrections at small dt.
JUMP_SLACK_M = 0.5


@dataclass(frozen=True)
class OdometryGateConfig:
    """What the gate accepts (the node builds it from `input.*` and `history.max_gap_s`)."""

    # Expected header.frame_id; "" = the frame of the first accepted message.
    odom_frame_id: str = ""
    # Expected child_frame_id; "" = the child frame of the first accepted message.
    base_frame_id: str = ""
    # Fastest plausible motion between two samples, m/s (60 m/s = 216 km/h).
    max_speed_mps: float = 60.0
    # Samples further apart in time are not compared (history.max_gap_s), s.
    max_gap_s: float = 0.25

    def __post_init__(self) -> None:
        if not self.max_speed_mps > 0:
            raise ValueError(f"max_speed_mps must be > 0, got {self.max_speed_mps}")
        if not self.max_gap_s > 0:
            raise ValueError(f"max_gap_s must be > 0, got {self.max_gap_s}")


class OdometryGate:
    """Accepts or rejects odometry samples (thread-safe; see the module docstring)."""

    def __init__(self, config: OdometryGateConfig) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._frames: tuple[str, str] | None = None  # (frame_id, child_frame_id) of accepted samples
        self._last: tuple[int, np.ndarray] | None = None  # stamp ns, position [3] of the last accepted sample

    def reconfigure(self, config: OdometryGateConfig) -> None:
        with self._lock:
            self._config = config

    @property
    def odom_frame_id(self) -> str:
        """The odometry frame of accepted samples ('' before the first one)."""
        with self._lock:
            return self._frames[0] if self._frames is not None else self._config.odom_frame_id

    def check(self, frame_id: str, child_frame_id: str, sample: EgoSample) -> str | None:
        """Why `sample` (from a message with these frames) must be rejected, or None to pass it on."""
        with self._lock:
            cfg = self._config
            for name, got, wanted, index in (("frame_id", frame_id, cfg.odom_frame_id, 0),
                                             ("child_frame_id", child_frame_id, cfg.base_frame_id, 1)):
                parameter = "input.odom_frame_id" if index == 0 else "input.base_frame_id"
                if wanted and got != wanted:
                    return f"{name} {got!r} is not {wanted!r} ({parameter})"
                if not wanted and self._frames is not None and got != self._frames[index]:
                    return (f"{name} {got!r} differs from {self._frames[index]!r} of the accepted odometry "
                            f"(set {parameter} to choose)")
            if self._last is None:
                return None
            last_ns, last_position = self._last
            dt_s = abs(int(sample.stamp_ns) - last_ns) / NS_PER_S
            if dt_s > cfg.max_gap_s:
                return None  # a new history starts; the core never interpolates across this gap
            position = np.asarray(sample.position, dtype=np.float64)  # [3]
            with np.errstate(over="ignore", invalid="ignore"):  # huge or non-finite positions: inf / nan
                distance_m = float(np.linalg.norm(position - last_position))
            limit_m = cfg.max_speed_mps * dt_s + JUMP_SLACK_M
            if distance_m > limit_m:  # False for nan: the core rejects non-finite positions
                return (f"position jumped {distance_m:.2f} m in {dt_s * 1e3:.0f} ms (limit {limit_m:.2f} m = "
                        f"input.odometry_max_speed_mps * dt + {JUMP_SLACK_M} m)")
            return None

    def accept(self, frame_id: str, child_frame_id: str, sample: EgoSample) -> None:
        """Record a sample the core stored: its frames (held from now on) and position (jump reference)."""
        with self._lock:
            if self._frames is None:
                self._frames = (frame_id, child_frame_id)
            self._last = (int(sample.stamp_ns), np.asarray(sample.position, dtype=np.float64).copy())
