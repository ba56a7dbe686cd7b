"""Time-sorted buffers for camera frames and odometry, with a detector for time going backwards.

Neither buffer is thread-safe; `PlanningCore` serialises access with its lock.

Policy shared by both buffers:
- Entries are kept sorted by stamp whatever order they arrive in.
- An entry whose stamp equals a stored one replaces it (the newest message wins): a republished or corrected
  message carries the better data, and replacing keeps stamps unique so "nearest" is well defined.
- A stamp older than the newest stored stamp by more than `time_jump_threshold_ns` is not stored; `add`
  returns `InsertResult.TIME_JUMP` so the owner can clear every buffer (a bag loop or a simulation time
  reset), since mixing the old and new time lines would pair unrelated frames and poses.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum

import numpy as np

from alpamayo_ros.planner.rotations import quat_slerp
from alpamayo_ros.planner.types import EgoSample, Frame

# How far a quaternion's norm may be from 1 before the sample is rejected rather than renormalised.
QUATERNION_NORM_TOLERANCE = 1e-2


class InsertResult(enum.Enum):
    """What `add` did with an entry."""

    INSERTED = "inserted"
    REPLACED = "replaced"  # an entry with the same stamp was overwritten
    DROPPED = "dropped"  # older than everything the buffer keeps, so it would be evicted at once
    TIME_JUMP = "time_jump"  # time went backwards; nothing stored, the owner should reset


class InvalidOdometryError(ValueError):
    """An odometry sample with non-finite values, wrong shapes or a non-unit quaternion."""


class OdometryCoverageError(LookupError):
    """The odometry buffer cannot give a pose at the requested time."""


class ExtrapolationError(OdometryCoverageError):
    """The requested time lies further outside the buffered stamps than the allowed extrapolation."""


class OdometryGapError(OdometryCoverageError):
    """The two samples around the requested time are further apart than the allowed gap."""


def _is_time_jump(stamp_ns: int, newest_ns: int | None, threshold_ns: int) -> bool:
    return newest_ns is not None and stamp_ns < newest_ns - threshold_ns


class FrameBuffer:
    """The newest `capacity` frames of one camera, sorted by stamp."""

    def __init__(self, capacity: int, time_jump_threshold_ns: int) -> None:
        """Args:
        capacity: frames kept (>= 1); the oldest is evicted first.
        time_jump_threshold_ns: a stamp this much older than the newest stored one means time went backwards.
        """
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if time_jump_threshold_ns <= 0:
            raise ValueError(f"time_jump_threshold_ns must be > 0, got {time_jump_threshold_ns}")
        self._capacity = capacity
        self._time_jump_threshold_ns = time_jump_threshold_ns
        self._stamps_ns: list[int] = []  # sorted ascending, unique
        self._frames: list[Frame] = []  # same order as _stamps_ns

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def latest_stamp_ns(self) -> int | None:
        """Stamp of the newest frame, or None when empty."""
        return self._stamps_ns[-1] if self._stamps_ns else None

    def stamps_ns(self) -> tuple[int, ...]:
        """All stored stamps, ascending."""
        return tuple(self._stamps_ns)

    def add(self, frame: Frame) -> InsertResult:
        """Insert `frame` in stamp order (see the module docstring for duplicates and time jumps)."""
        stamp_ns = int(frame.stamp_ns)
        if _is_time_jump(stamp_ns, self.latest_stamp_ns, self._time_jump_threshold_ns):
            return InsertResult.TIME_JUMP
        index = bisect.bisect_left(self._stamps_ns, stamp_ns)
        if index < len(self._stamps_ns) and self._stamps_ns[index] == stamp_ns:
            self._frames[index] = frame
            return InsertResult.REPLACED
        if index == 0 and len(self._frames) >= self._capacity:
            return InsertResult.DROPPED
        self._stamps_ns.insert(index, stamp_ns)
        self._frames.insert(index, frame)
        if len(self._frames) > self._capacity:
            del self._stamps_ns[0]
            del self._frames[0]
        return InsertResult.INSERTED

    def nearest(self, t_ns: int, tolerance_ns: int) -> Frame | None:
        """The frame stamped closest to `t_ns` if within `tolerance_ns` (inclusive); ties go to the newer."""
        index = bisect.bisect_left(self._stamps_ns, t_ns)
        best: Frame | None = None
        best_distance_ns = tolerance_ns + 1
        for candidate in (index, index - 1):  # the first stamp >= t_ns, then the last one < t_ns
            if 0 <= candidate < len(self._stamps_ns):
                distance_ns = abs(self._stamps_ns[candidate] - t_ns)
                if distance_ns < best_distance_ns:
                    best, best_distance_ns = self._frames[candidate], distance_ns
        return best

    def clear(self) -> None:
        self._stamps_ns.clear()
        self._frames.clear()


def _validated(sample: EgoSample) -> EgoSample:
    """A float64 copy of `sample` with a normalised quaternion; raises InvalidOdometryError."""
    fields = {
        "position": (np.asarray(sample.position, dtype=np.float64), (3,)),
        "orientation_xyzw": (np.asarray(sample.orientation_xyzw, dtype=np.float64), (4,)),
        "linear_velocity": (np.asarray(sample.linear_velocity, dtype=np.float64), (3,)),
    }
    for name, (value, shape) in fields.items():
        if value.shape != shape:
            raise InvalidOdometryError(
                f"odometry at {sample.stamp_ns} ns: {name} has shape {value.shape}, expected {shape}"
            )
        if not np.all(np.isfinite(value)):
            raise InvalidOdometryError(
                f"odometry at {sample.stamp_ns} ns: non-finite {name} {value.tolist()}"
            )
    quaternion = fields["orientation_xyzw"][0]
    norm = float(np.linalg.norm(quaternion))
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise InvalidOdometryError(
            f"odometry at {sample.stamp_ns} ns: orientation_xyzw {quaternion.tolist()} has norm {norm:.6g}, "
            f"expected 1 +- {QUATERNION_NORM_TOLERANCE}"
        )
    return EgoSample(
        stamp_ns=int(sample.stamp_ns),
        position=fields["position"][0].copy(),
        orientation_xyzw=quaternion / norm,
        linear_velocity=fields["linear_velocity"][0].copy(),
    )


class OdometryBuffer:
    """Odometry samples covering at least the last `horizon_ns`, sorted, interpolated on request."""

    def __init__(self, horizon_ns: int, time_jump_threshold_ns: int) -> None:
        """Args:
        horizon_ns: samples older than newest - horizon_ns are dropped, except the newest such one, so any
            time in [newest - horizon_ns, newest] stays bracketed.
        time_jump_threshold_ns: a stamp this much older than the newest stored one means time went backwards.
        """
        if horizon_ns <= 0:
            raise ValueError(f"horizon_ns must be > 0, got {horizon_ns}")
        if time_jump_threshold_ns <= 0:
            raise ValueError(f"time_jump_threshold_ns must be > 0, got {time_jump_threshold_ns}")
        self._horizon_ns = horizon_ns
        self._time_jump_threshold_ns = time_jump_threshold_ns
        self._stamps_ns: list[int] = []  # sorted ascending, unique
        self._samples: list[EgoSample] = []  # same order, validated float64 copies

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def latest_stamp_ns(self) -> int | None:
        return self._stamps_ns[-1] if self._stamps_ns else None

    @property
    def oldest_stamp_ns(self) -> int | None:
        return self._stamps_ns[0] if self._stamps_ns else None

    def stamps_ns(self) -> tuple[int, ...]:
        """All stored stamps, ascending."""
        return tuple(self._stamps_ns)

    def add(self, sample: EgoSample) -> InsertResult:
        """Validate and insert `sample` in stamp order.

        Raises:
            InvalidOdometryError: NaN/Inf anywhere, wrong shapes, or a quaternion norm off by more than
                QUATERNION_NORM_TOLERANCE (smaller errors are renormalised).
        """
        clean = _validated(sample)
        stamp_ns = clean.stamp_ns
        if _is_time_jump(stamp_ns, self.latest_stamp_ns, self._time_jump_threshold_ns):
            return InsertResult.TIME_JUMP
        index = bisect.bisect_left(self._stamps_ns, stamp_ns)
        if index < len(self._stamps_ns) and self._stamps_ns[index] == stamp_ns:
            self._samples[index] = clean
            return InsertResult.REPLACED
        if index == 0 and self._stamps_ns and self._stamps_ns[0] <= self._stamps_ns[-1] - self._horizon_ns:
            return InsertResult.DROPPED  # older than the stored oldest, which already reaches the horizon
        self._stamps_ns.insert(index, stamp_ns)
        self._samples.insert(index, clean)
        self._prune()
        return InsertResult.INSERTED

    def _prune(self) -> None:
        boundary_ns = self._stamps_ns[-1] - self._horizon_ns
        keep_from = max(bisect.bisect_right(self._stamps_ns, boundary_ns) - 1, 0)  # last stamp <= boundary
        if keep_from:
            del self._stamps_ns[:keep_from]
            del self._samples[:keep_from]

    def interpolate(
        self, t_ns: int, *, max_extrapolation_ns: int = 0, max_gap_ns: int | None = None
    ) -> EgoSample:
        """The pose at `t_ns`: position and velocity linear, orientation slerped, between the nearest samples.

        Beyond the oldest or newest sample the two nearest samples are extended at constant velocity and
        angular rate, by at most `max_extrapolation_ns` (a single sample is held constant instead).

        Args:
            t_ns: query time.
            max_extrapolation_ns: how far outside [oldest, newest] a query may lie.
            max_gap_ns: if set, the samples used may be at most this far apart.

        Returns:
            An EgoSample stamped `t_ns` (float64 arrays, unit quaternion).

        Raises:
            ExtrapolationError: the buffer is empty or `t_ns` is outside the allowed range.
            OdometryGapError: the samples around `t_ns` are more than `max_gap_ns` apart.
        """
        if not self._stamps_ns:
            raise ExtrapolationError(f"no odometry buffered (requested {t_ns} ns)")
        oldest_ns, newest_ns = self._stamps_ns[0], self._stamps_ns[-1]
        if not oldest_ns - max_extrapolation_ns <= t_ns <= newest_ns + max_extrapolation_ns:
            raise ExtrapolationError(
                f"odometry covers [{oldest_ns}, {newest_ns}] ns; {t_ns} ns is "
                f"{(oldest_ns - t_ns if t_ns < oldest_ns else t_ns - newest_ns) / 1e6:.1f} ms outside, "
                f"more than the allowed {max_extrapolation_ns / 1e6:.1f} ms"
            )
        index = bisect.bisect_left(self._stamps_ns, t_ns)
        if index < len(self._stamps_ns) and self._stamps_ns[index] == t_ns:
            return self._samples[index]  # exact hit: no gap check needed
        if len(self._samples) == 1:
            return dataclasses.replace(self._samples[0], stamp_ns=t_ns)
        # Bracketing pair (i0, i1); at either end the end pair is reused for extrapolation.
        i1 = min(max(index, 1), len(self._stamps_ns) - 1)
        i0 = i1 - 1
        s0, s1 = self._samples[i0], self._samples[i1]
        span_ns = s1.stamp_ns - s0.stamp_ns
        if max_gap_ns is not None and span_ns > max_gap_ns:
            raise OdometryGapError(
                f"odometry samples around {t_ns} ns are {span_ns / 1e6:.1f} ms apart "
                f"({s0.stamp_ns} .. {s1.stamp_ns} ns), more than the allowed {max_gap_ns / 1e6:.1f} ms"
            )
        u = (t_ns - s0.stamp_ns) / span_ns
        return EgoSample(
            stamp_ns=t_ns,
            position=s0.position + u * (s1.position - s0.position),
            orientation_xyzw=quat_slerp(s0.orientation_xyzw, s1.orientation_xyzw, u),
            linear_velocity=s0.linear_velocity + u * (s1.linear_velocity - s0.linear_velocity),
        )

    def clear(self) -> None:
        self._stamps_ns.clear()
        self._samples.clear()

