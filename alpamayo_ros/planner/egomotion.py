"""The egomotion history the model takes (MODEL.md §4.4), interpolated from odometry at t0 + k * step.

Poses are interpolated at the history times themselves (linear position, slerped orientation), so the result
does not depend on the odometry rate or phase beyond interpolation error, and then expressed in the ego frame
at t0: xyz_local = R_t0^T (xyz - xyz_t0), R_local = R_t0^T R_t. The last pose is therefore exactly zero and
exactly the identity (the relative rotation is formed as a quaternion product, q_t0^-1 * q_t0 = (0, 0, 0, 1)).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from alpamayo_ros.planner.buffers import OdometryBuffer, OdometryCoverageError
from alpamayo_ros.planner.rotations import quat_conjugate, quat_multiply, quat_to_matrix
from alpamayo_ros.planner.types import NS_PER_S, Skip, SkipReason


class SpeedSource(enum.Enum):
    """Where the ego speed at t0 comes from."""

    TWIST = "twist"  # |linear velocity| of the odometry twist, interpolated at t0
    POSITIONS = "positions"  # |p(t0) - p(t0 - step)| / step from the history (for sources without twist)


@dataclass(frozen=True)
class HistoryConfig:
    """How the egomotion history is sampled."""

    # Number of history poses (MODEL.md §4.4: 16).
    num_poses: int = 16
    # Spacing of the history poses, s (MODEL.md §4.4: 10 Hz).
    step_s: float = 0.1
    # How far beyond the buffered odometry a pose may be extrapolated, s; covers odometry that lags the
    # cameras by a little. Larger gaps are a skip (HISTORY_INCOMPLETE), never a guess.
    max_extrapolation_s: float = 0.05
    # Largest spacing between the two odometry samples a pose is interpolated from, s (10 Hz odometry needs
    # >= 0.1 s; a dropout longer than this is a skip).
    max_gap_s: float = 0.25
    # Source of Observation.speed_mps.
    speed_source: SpeedSource = SpeedSource.TWIST

    def __post_init__(self) -> None:
        if self.num_poses < 2:
            raise ValueError(f"num_poses must be >= 2, got {self.num_poses}")
        if not self.step_s > 0:
            raise ValueError(f"step_s must be > 0, got {self.step_s}")
        if not self.max_extrapolation_s >= 0:
            raise ValueError(f"max_extrapolation_s must be >= 0, got {self.max_extrapolation_s}")
        if not self.max_gap_s > 0:
            raise ValueError(f"max_gap_s must be > 0, got {self.max_gap_s}")
        if not isinstance(self.speed_source, SpeedSource):
            raise ValueError(f"speed_source must be a SpeedSource, got {self.speed_source!r}")

    @property
    def span_s(self) -> float:
        """Time from the oldest history pose to t0 (1.5 s by default)."""
        return (self.num_poses - 1) * self.step_s

    def offsets_ns(self) -> np.ndarray:
        """[H] int64 offsets from t0, oldest first, last 0."""
        step_ns = round(self.step_s * NS_PER_S)
        return (np.arange(self.num_poses, dtype=np.int64) - (self.num_poses - 1)) * step_ns


@dataclass(frozen=True)
class History:
    """The egomotion inputs of one observation."""

    xyz: np.ndarray  # [H, 3] float32, ego frame at t0, oldest first (last row = 0)
    rot: np.ndarray  # [H, 3, 3] float32, ego frame at t0 (last = identity)
    t0_position: np.ndarray  # [3] float64, base_link at t0 in the odometry frame
    t0_rotation: np.ndarray  # [3, 3] float64, base_link at t0 in the odometry frame
    speed_mps: float  # ego speed at t0


def build_history(odom: OdometryBuffer, t0_ns: int, cfg: HistoryConfig) -> History | Skip:
    """Interpolate the history poses at t0 + cfg.offsets_ns() and express them in the ego frame at t0.

    Args:
        odom: the buffered odometry.
        t0_ns: observation time.
        cfg: history settings.

    Returns:
        A History, or Skip(NO_ODOMETRY) when nothing is buffered, or Skip(HISTORY_INCOMPLETE) when some pose
        would need more extrapolation than cfg.max_extrapolation_s or spans a gap over cfg.max_gap_s.
    """
    if len(odom) == 0:
        return Skip(SkipReason.NO_ODOMETRY, "no odometry received")
    max_extrapolation_ns = round(cfg.max_extrapolation_s * NS_PER_S)
    max_gap_ns = round(cfg.max_gap_s * NS_PER_S)
    try:
        samples = [
            odom.interpolate(
                int(t0_ns + offset_ns), max_extrapolation_ns=max_extrapolation_ns, max_gap_ns=max_gap_ns
            )
            for offset_ns in cfg.offsets_ns()
        ]
    except OdometryCoverageError as error:
        return Skip(
            SkipReason.HISTORY_INCOMPLETE, f"history t0-{cfg.span_s:.1f} s .. t0 (t0 = {t0_ns} ns): {error}"
        )
    anchor = samples[-1]
    inverse_t0 = quat_conjugate(anchor.orientation_xyzw)  # [4]
    rotation_t0 = quat_to_matrix(anchor.orientation_xyzw)  # [3, 3]
    positions = np.stack([sample.position for sample in samples])  # [H, 3] odometry frame
    xyz = (positions - anchor.position) @ rotation_t0  # [H, 3]; row-vector form of R_t0^T (p - p_t0)
    rot = np.stack(
        [quat_to_matrix(quat_multiply(inverse_t0, sample.orientation_xyzw)) for sample in samples]
    )  # [H, 3, 3]
    if cfg.speed_source is SpeedSource.TWIST:
        speed_mps = float(np.linalg.norm(anchor.linear_velocity))
    else:
        speed_mps = float(np.linalg.norm(positions[-1] - positions[-2])) / cfg.step_s
    return History(
        xyz=xyz.astype(np.float32),
        rot=rot.astype(np.float32),
        t0_position=anchor.position.copy(),
        t0_rotation=rotation_t0,
        speed_mps=speed_mps,
    )
