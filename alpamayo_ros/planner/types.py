"""Plain data passed between the planner stages. Times are int nanoseconds (`*_ns`), SI units elsewhere.

Frames: the ego frame is x forward, y left, z up (MODEL.md §4.4); the odometry frame is whatever frame the
odometry source reports poses in (usually `odom`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # validator.py imports this module
    from alpamayo_ros.planner.validator import ValidationReport

NS_PER_S = 1_000_000_000


@dataclass(frozen=True)
class Frame:
    """One decoded camera image."""

    stamp_ns: int
    image: np.ndarray  # [H, W, 3] uint8 RGB


@dataclass(frozen=True)
class EgoSample:
    """One odometry pose of base_link in the odometry frame."""

    stamp_ns: int
    position: np.ndarray  # [3] float64, m
    orientation_xyzw: np.ndarray  # [4] float64, ROS order (x, y, z, w), unit norm
    linear_velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))  # [3] m/s in base_link (twist)


@dataclass(frozen=True)
class Observation:
    """Everything the model needs for one planning cycle, synchronised at the observation time t0."""

    t0_ns: int
    camera_names: tuple[str, ...]  # V names, in model order
    images: tuple[np.ndarray, ...]  # V arrays, each [F, H, W, 3] uint8 RGB, oldest frame first
    frame_stamps_ns: np.ndarray  # [V, F] int64, the stamp of each chosen frame
    history_xyz: np.ndarray  # [H, 3] float32, ego frame at t0 (last row = 0)
    history_rot: np.ndarray  # [H, 3, 3] float32, ego frame at t0 (last = identity)
    t0_position: np.ndarray  # [3] float64, base_link at t0 in the odometry frame
    t0_rotation: np.ndarray  # [3, 3] float64, base_link at t0 in the odometry frame
    speed_mps: float  # measured ego speed at t0


@dataclass(frozen=True)
class EngineResult:
    """Model output for one observation: S sampled trajectories of T waypoints in the ego frame at t0."""

    xyz: np.ndarray  # [S, T, 3] float32, m
    rot: np.ndarray  # [S, T, 3, 3] float32
    reasoning: tuple[str, ...]  # S Chain-of-Causation strings
    timings_ms: dict[str, float]  # per stage, e.g. {"vision": .., "prefill": .., "decode": .., "expert": ..}


class SkipReason(enum.Enum):
    """Why a planning tick produced no plan. Every skipped tick is counted under exactly one reason."""

    BUSY = "busy"  # the previous cycle is still running
    NOT_ACTIVE = "not_active"
    NO_IMAGES = "no_images"  # some camera has no frame at all
    CAMERAS_OUT_OF_SYNC = "cameras_out_of_sync"  # no common t0 within the sync tolerance
    FRAMES_MISSING = "frames_missing"  # a camera lacks a frame near t0-0.3 .. t0 within tolerance
    IMAGE_SIZE_MISMATCH = "image_size_mismatch"
    NO_ODOMETRY = "no_odometry"
    HISTORY_INCOMPLETE = "history_incomplete"  # odometry does not cover t0-1.5 s .. t0
    INPUT_STALE = "input_stale"  # t0 older than the maximum input age
    STALE_DUPLICATE = "stale_duplicate"  # t0 not newer than the last planned t0
    MODEL_ERROR = "model_error"
    OUT_OF_MEMORY = "out_of_memory"
    NO_VALID_CANDIDATE = "no_valid_candidate"
    PLAN_TOO_OLD = "plan_too_old"


@dataclass(frozen=True)
class Skip:
    """A planning tick that produced no plan, and why."""

    reason: SkipReason
    detail: str = ""
    # The checks of the cycle's candidates when they were validated (NO_VALID_CANDIDATE, PLAN_TOO_OLD).
    validation: ValidationReport | None = field(default=None, compare=False, repr=False)


class CandidateFlag(enum.IntFlag):
    """Validator bits of Plan.flags, mirroring TrajectorySet.msg FLAG_*. Any bit set: never selected."""

    NON_FINITE = 1
    SPACING = 2
    CURVATURE = 4
    YAW_RATE = 8
    LATERAL_ACCEL = 16
    LATERAL_JERK = 32
    LONGITUDINAL_ACCEL = 64
    STEERING = 128
    STEERING_RATE = 256
    SPEED_DEVIATION = 512
    FIRST_POINT = 1024
    LENGTH = 2048
    PLAN_AGE = 4096


class PlanSource(enum.Enum):
    """Where the trajectories of a Plan to publish come from."""

    NEW = "new"  # this cycle's engine result; the selected candidate is valid
    AS_IS = "as_is"  # this cycle's engine result, every candidate flagged (NoValidPolicy.PUBLISH_AS_IS)
    REPUBLISHED = "republished"  # the last NEW plan again, unchanged: its own t0 stamp, frame and validation
    STOP = "stop"  # one straight-ahead braking trajectory from this cycle's observation (stop_trajectory)


@dataclass(frozen=True)
class Plan:
    """Trajectories to publish; unless `source` is NEW, a fallback whose cycle also counts as `skip`."""

    observation: Observation  # the observation the trajectories are expressed at (a REPUBLISHED plan's own)
    result: EngineResult
    selected_index: int  # index into result.xyz of the published trajectory
    scores: np.ndarray  # [S] float32, higher is better
    flags: np.ndarray  # [S] uint32, validator bits (CandidateFlag = TrajectorySet.FLAG_*), 0 = valid
    source: PlanSource = PlanSource.NEW
    # Set exactly when source is not NEW: why this cycle produced no valid new plan (count it as skipped).
    skip: Skip | None = None
    # The checks of result's candidates; None for a STOP plan, which is not validated.
    validation: ValidationReport | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if (self.source is PlanSource.NEW) != (self.skip is None):
            raise ValueError(
                f"skip must be set exactly when source is not NEW, got source {self.source.value} and skip "
                f"{self.skip!r}"
            )
