"""Trajectory validation, one CandidateFlag bit per check, and the output safety fallbacks.

The checks follow Autoware's planning validator (`planning/autoware_planning_validator`: interval,
relative angle, curvature, lateral acceleration, longitudinal acceleration, steering, steering rate,
velocity deviation, distance deviation, forward trajectory length, latency), adapted to the model's
fixed-time trajectories.

Finite differences (planar x, y in the ego frame at t0; z is only checked for finiteness). The ego at t0 is
P_0 = origin with heading 0, and waypoint k (0-based) is P_{k+1} at t0 + (k + 1) * dt: T + 1 points equally
spaced in time.

- Segment j = P_j -> P_{j+1}, j = 0 .. T-1: length s_j, speed v_j = s_j / dt (at t0 + (j + 1/2) dt),
  heading psi_j.
- Turn at P_j, j = 0 .. T-1: yaw change dpsi_j = wrap(psi_j - psi_{j-1}) with psi_{-1} = 0 (the ego
  heading), over the arc ds_j = (s_{j-1} + s_j) / 2 with s_{-1} = 0; curvature kappa_j = dpsi_j / ds_j. On a
  circle of radius R through the origin, tangent to the ego heading, both give 1/R * (1 + theta^2 / 24) with
  theta the arc angle per step (the chord to P_1 turns by half of it over half its length).
- Speed at P_j = (v_{j-1} + v_j) / 2, one-sided v_0 at P_0: the plan's own speed, so that an error of the
  measured speed shows only in the speed-deviation check. Lateral acceleration = speed^2 * kappa, steering
  angle delta = atan(wheelbase * kappa); lateral jerk and steering rate are differences between turns / dt.
- Longitudinal acceleration at P_j, j = 1 .. T-1: (v_j - v_{j-1}) / dt.

Noise: at standstill the model's waypoints jitter by millimetres in random directions, so a segment shorter
than `min_segment_length_m` has no heading. A turn next to such a segment is not measured (yaw change,
curvature, lateral acceleration and steering count as 0 there), and jerk and steering rate are only taken
between two measured turns: below min_segment_length_m / dt (1 m/s by default) curvature is not checked.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, fields

import numpy as np

from alpamayo_ros.planner.types import CandidateFlag


class NoValidPolicy(enum.Enum):
    """What a planning cycle publishes when it has no valid new candidate."""

    PUBLISH_AS_IS = "publish_as_is"  # this cycle's flagged plan (for evaluating a model, never on a vehicle)
    STOP_PUBLISHING = "stop_publishing"  # nothing new (consumers time out on the last plan)
    REPUBLISH_LAST_VALID = "republish_last_valid"  # the last valid plan again while it is young enough


@dataclass(frozen=True)
class ValidatorConfig:
    """Thresholds of the trajectory checks. `math.inf` disables a check (NON_FINITE is always on).

    Defaults reject physically implausible plans of a passenger car, not uncomfortable ones.
    """

    # Wheelbase for the steering angle atan(wheelbase * curvature), m (Autoware sample_vehicle: 2.79).
    wheelbase_m: float = 2.79
    # Segments shorter than this have no heading (standstill jitter), m; 0.1 m at dt 0.1 s = 1 m/s.
    min_segment_length_m: float = 0.1
    # SPACING: largest distance between consecutive points (origin included), m; 5 m per 0.1 s = 180 km/h.
    max_waypoint_spacing_m: float = 5.0
    # CURVATURE: largest |curvature|, 1/m; a car's tightest turn is ~tan(35 deg) / 2.79 m = 0.25 1/m, and the
    # checkpoint's curvature bounds are +-0.33 1/m.
    max_curvature_1pm: float = 0.3
    # YAW_RATE: largest |heading change| between consecutive segments, rad; a drivable turn within the lateral
    # limit changes heading by < 0.15 rad per 0.1 s, so this catches zig-zags and reversals.
    max_yaw_change_rad: float = 0.5
    # LATERAL_ACCEL: largest |speed^2 * curvature|, m/s^2 (human driving stays below ~4).
    max_lateral_accel_mps2: float = 5.0
    # LATERAL_JERK: largest |d(lateral acceleration)/dt| over one step, m/s^3.
    max_lateral_jerk_mps3: float = 10.0
    # LONGITUDINAL_ACCEL: largest speed-up, m/s^2.
    max_longitudinal_accel_mps2: float = 4.0
    # LONGITUDINAL_ACCEL: largest braking (positive), m/s^2; ~ full braking on dry asphalt.
    max_longitudinal_decel_mps2: float = 8.0
    # STEERING: largest |road-wheel angle| from curvature, rad (~35 deg).
    max_steering_rad: float = 0.61
    # STEERING_RATE: largest |d(steering)/dt|, rad/s.
    max_steering_rate_radps: float = 1.0
    # SPEED_DEVIATION: largest |plan speed over the first step - measured ego speed|, m/s.
    max_speed_deviation_mps: float = 2.0
    # FIRST_POINT: largest distance of the first waypoint from where the ego will be one step later at its
    # measured speed and heading, (speed * dt, 0), m; mainly a sideways jump at the start of the plan.
    max_first_point_offset_m: float = 0.5
    # LENGTH: the plan must reach at least speed^2 / (2 * this) - stopping_margin_m, i.e. not end sooner than
    # braking at this deceleration would stop, m/s^2 (Autoware's forward trajectory length check).
    stopping_decel_mps2: float = 8.0
    # LENGTH: tolerance subtracted from the stopping distance, m (Autoware default 2.0).
    stopping_margin_m: float = 2.0
    # PLAN_AGE: largest (time after inference - t0), s; also the age up to which the last valid plan may be
    # republished.
    max_plan_age_s: float = 1.0

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise ValueError(f"{spec.name} must be a number, got {value!r}")
        if not (math.isfinite(self.wheelbase_m) and self.wheelbase_m > 0):
            raise ValueError(f"wheelbase_m must be finite and > 0, got {self.wheelbase_m}")
        for name in ("min_segment_length_m", "stopping_margin_m"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be finite and >= 0, got {getattr(self, name)}")
        for spec in fields(self):
            if spec.name.startswith("max_") or spec.name == "stopping_decel_mps2":
                if not getattr(self, spec.name) > 0:
                    raise ValueError(
                        f"{spec.name} must be > 0 (inf disables the check), got {getattr(self, spec.name)}"
                    )


@dataclass(frozen=True)
class CheckResult:
    """One check over the S candidates of a cycle."""

    name: str  # e.g. "lateral_accel"; LONGITUDINAL_ACCEL has "longitudinal_accel" and "longitudinal_decel"
    flag: CandidateFlag
    unit: str
    values: np.ndarray  # [S] float64, each candidate's worst measured value (nan for non-finite candidates)
    limit: float  # threshold applied this cycle (length: the required length, m); inf = not checked
    lower_bound: bool  # True: values below the limit fail (length); False: values above it fail
    failed: np.ndarray  # [S] bool


@dataclass(frozen=True)
class ValidationReport:
    """Flags and per-check measurements of one cycle's candidates (TrajectorySet.flags, diagnostics)."""

    flags: np.ndarray  # [S] uint32, CandidateFlag bits, 0 = valid
    checks: tuple[CheckResult, ...]  # every check, in CandidateFlag order

    def check(self, name: str) -> CheckResult:
        """The result named `name` (see CheckResult.name)."""
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(f"no check named {name!r}; known: {', '.join(c.name for c in self.checks)}")

    def summary(self) -> str:
        """One entry per failed check, e.g. 'lateral_accel 2/3 (worst 7.1 > 5 m/s^2)'; '' if none failed."""
        parts = []
        for result in self.checks:
            count = int(result.failed.sum())
            if count == 0:
                continue
            failing = result.values[result.failed]  # [count]
            worst = failing.min() if result.lower_bound else failing.max()
            relation = "<" if result.lower_bound else ">"
            parts.append(
                f"{result.name} {count}/{result.values.size} (worst {worst:.3g} {relation} {result.limit:.3g}"
                f" {result.unit})"
            )
        return ", ".join(parts)


def _masked_max(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[S] max over axis 1 of `values` where `mask`, 0 where nothing is masked in (values are >= 0 or nan)."""
    return np.max(values, axis=1, where=mask, initial=0.0)


def _measure(xy: np.ndarray, speed_mps: float, cfg: ValidatorConfig, dt_s: float) -> dict[str, np.ndarray]:
    """Each check's worst value per candidate for finite waypoints xy [S, T, 2] (see the module docstring)."""
    num_samples = xy.shape[0]
    points = np.concatenate([np.zeros((num_samples, 1, 2)), xy], axis=1)  # [S, T+1, 2], P_0 = origin
    segment = np.diff(points, axis=1)  # [S, T, 2]
    seg_len = np.hypot(segment[..., 0], segment[..., 1])  # [S, T], m
    seg_speed = seg_len / dt_s  # [S, T], m/s at the segment midpoints
    heading = np.arctan2(segment[..., 1], segment[..., 0])  # [S, T], rad
    has_heading = seg_len > cfg.min_segment_length_m  # [S, T]

    # Turns at P_0 .. P_{T-1}: the segment before P_0 is the ego itself (heading 0, length 0).
    prev_heading = np.concatenate([np.zeros((num_samples, 1)), heading[:, :-1]], axis=1)  # [S, T]
    prev_len = np.concatenate([np.zeros((num_samples, 1)), seg_len[:, :-1]], axis=1)  # [S, T]
    prev_has_heading = np.concatenate([np.ones((num_samples, 1), bool), has_heading[:, :-1]], axis=1)
    measured = has_heading & prev_has_heading  # [S, T]
    yaw_change = np.where(measured, (heading - prev_heading + np.pi) % (2 * np.pi) - np.pi, 0.0)  # [S, T]
    arc = np.where(measured, 0.5 * (prev_len + seg_len), 1.0)  # [S, T], m (1.0 only avoids 0 / 0)
    curvature = yaw_change / arc  # [S, T], 1/m
    prev_speed = np.concatenate([seg_speed[:, :1], seg_speed[:, :-1]], axis=1)  # [S, T], one-sided at P_0
    lateral_accel = (0.5 * (prev_speed + seg_speed)) ** 2 * curvature  # [S, T], m/s^2
    steering = np.arctan(cfg.wheelbase_m * curvature)  # [S, T], rad
    both_measured = measured[:, 1:] & measured[:, :-1]  # [S, T-1]
    lateral_jerk = np.diff(lateral_accel, axis=1) / dt_s  # [S, T-1], m/s^3
    steering_rate = np.diff(steering, axis=1) / dt_s  # [S, T-1], rad/s
    longitudinal_accel = np.diff(seg_speed, axis=1) / dt_s  # [S, T-1], m/s^2 at P_1 .. P_{T-1}
    no_mask = np.ones_like(longitudinal_accel, dtype=bool)

    return {
        "spacing": seg_len.max(axis=1),
        "curvature": _masked_max(np.abs(curvature), measured),
        "yaw_change": _masked_max(np.abs(yaw_change), measured),
        "lateral_accel": _masked_max(np.abs(lateral_accel), measured),
        "lateral_jerk": _masked_max(np.abs(lateral_jerk), both_measured),
        "longitudinal_accel": _masked_max(longitudinal_accel, no_mask),
        "longitudinal_decel": _masked_max(-longitudinal_accel, no_mask),
        "steering": _masked_max(np.abs(steering), measured),
        "steering_rate": _masked_max(np.abs(steering_rate), both_measured),
        "speed_deviation": np.abs(seg_speed[:, 0] - speed_mps),
        "first_point": np.hypot(xy[:, 0, 0] - speed_mps * dt_s, xy[:, 0, 1]),
        "length": seg_len.sum(axis=1),
    }


def validate(
    xyz: np.ndarray,
    rot: np.ndarray,
    speed_mps: float,
    plan_age_s: float | None,
    cfg: ValidatorConfig,
    dt_s: float = 0.1,
) -> ValidationReport:
    """Check S candidate trajectories against `cfg` (finite differences: see the module docstring).

    Args:
        xyz: [S, T, 3] waypoints in the ego frame at t0, at t0 + dt_s .. t0 + T * dt_s, m.
        rot: [S, T, 3, 3] waypoint orientations (checked for finiteness only).
        speed_mps: measured ego speed at t0 (>= 0).
        plan_age_s: time after inference minus t0, s; None skips the PLAN_AGE check.
        cfg: thresholds.
        dt_s: waypoint spacing, s.

    Returns:
        The report: flags [S] uint32 (NON_FINITE exactly for candidates with a non-finite value in xyz or rot;
        such candidates measure nan and set no other bit) and every check's per-candidate worst value.

    Raises:
        ValueError: wrong shapes, a negative or non-finite speed, a non-finite plan age or dt_s <= 0.
    """
    xyz, rot = np.asarray(xyz), np.asarray(rot)
    if xyz.ndim != 3 or xyz.shape[2] != 3 or xyz.shape[1] < 1:
        raise ValueError(f"xyz must be [S, T, 3] with T >= 1, got {xyz.shape}")
    if rot.shape != (*xyz.shape[:2], 3, 3):
        raise ValueError(f"rot must be {(*xyz.shape[:2], 3, 3)}, got {rot.shape}")
    if not (math.isfinite(speed_mps) and speed_mps >= 0):
        raise ValueError(f"speed_mps must be finite and >= 0, got {speed_mps}")
    if plan_age_s is not None and not math.isfinite(plan_age_s):
        raise ValueError(f"plan_age_s must be finite or None, got {plan_age_s}")
    if not dt_s > 0:
        raise ValueError(f"dt_s must be > 0, got {dt_s}")
    num_samples = xyz.shape[0]
    non_finite = (~np.isfinite(xyz)).sum(axis=(1, 2)) + (~np.isfinite(rot)).sum(axis=(1, 2, 3))  # [S]
    finite = non_finite == 0  # [S]
    xy = np.where(finite[:, None, None], xyz[..., :2].astype(np.float64), 0.0)  # [S, T, 2]
    # Huge finite coordinates overflow to inf / nan; those values fail their checks (nan never passes).
    with np.errstate(all="ignore"):
        values = _measure(xy, speed_mps, cfg, dt_s)
        required_length_m = speed_mps**2 / (2 * cfg.stopping_decel_mps2) - cfg.stopping_margin_m
    values["plan_age"] = np.full(num_samples, np.nan if plan_age_s is None else plan_age_s)
    limits = {
        "spacing": (CandidateFlag.SPACING, "m", cfg.max_waypoint_spacing_m),
        "curvature": (CandidateFlag.CURVATURE, "1/m", cfg.max_curvature_1pm),
        "yaw_change": (CandidateFlag.YAW_RATE, "rad", cfg.max_yaw_change_rad),
        "lateral_accel": (CandidateFlag.LATERAL_ACCEL, "m/s^2", cfg.max_lateral_accel_mps2),
        "lateral_jerk": (CandidateFlag.LATERAL_JERK, "m/s^3", cfg.max_lateral_jerk_mps3),
        "longitudinal_accel": (CandidateFlag.LONGITUDINAL_ACCEL, "m/s^2", cfg.max_longitudinal_accel_mps2),
        "longitudinal_decel": (CandidateFlag.LONGITUDINAL_ACCEL, "m/s^2", cfg.max_longitudinal_decel_mps2),
        "steering": (CandidateFlag.STEERING, "rad", cfg.max_steering_rad),
        "steering_rate": (CandidateFlag.STEERING_RATE, "rad/s", cfg.max_steering_rate_radps),
        "speed_deviation": (CandidateFlag.SPEED_DEVIATION, "m/s", cfg.max_speed_deviation_mps),
        "first_point": (CandidateFlag.FIRST_POINT, "m", cfg.max_first_point_offset_m),
        "plan_age": (CandidateFlag.PLAN_AGE, "s", math.inf if plan_age_s is None else cfg.max_plan_age_s),
    }
    checks = [
        CheckResult("non_finite", CandidateFlag.NON_FINITE, "values", non_finite.astype(np.float64), 0.0,
                    False, ~finite)
    ]
    for name, (flag, unit, limit) in limits.items():
        measured = np.where(finite, values[name], np.nan)  # [S]
        failed = finite & ~(measured <= limit) & (limit < math.inf)  # [S]; nan fails
        checks.append(CheckResult(name, flag, unit, measured, limit, False, failed))
    length = np.where(finite, values["length"], np.nan)  # [S], m
    checks.append(
        CheckResult("length", CandidateFlag.LENGTH, "m", length, required_length_m, True,
                    finite & ~(length >= required_length_m))
    )
    checks.sort(key=lambda result: result.flag.value)  # stable: accel before decel
    flags = np.zeros(num_samples, dtype=np.uint32)
    for result in checks:
        flags[result.failed] |= np.uint32(result.flag.value)
    return ValidationReport(flags=flags, checks=tuple(checks))


def stop_trajectory(
    speed_mps: float, decel_mps2: float, num_points: int, dt_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Braking straight ahead from `speed_mps` at constant `decel_mps2`, then standing still.

    Args:
        speed_mps: ego speed at t0 (>= 0).
        decel_mps2: deceleration (> 0).
        num_points: T waypoints, at t0 + dt_s .. t0 + T * dt_s.
        dt_s: waypoint spacing, s.

    Returns:
        (xyz [T, 3] float32 in the ego frame at t0, x = distance travelled; rot [T, 3, 3] float32 identities).

    Raises:
        ValueError: a negative or non-finite speed, decel_mps2 <= 0, num_points < 1 or dt_s <= 0.
    """
    if not (math.isfinite(speed_mps) and speed_mps >= 0):
        raise ValueError(f"speed_mps must be finite and >= 0, got {speed_mps}")
    if not (math.isfinite(decel_mps2) and decel_mps2 > 0):
        raise ValueError(f"decel_mps2 must be finite and > 0, got {decel_mps2}")
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    if not dt_s > 0:
        raise ValueError(f"dt_s must be > 0, got {dt_s}")
    times = dt_s * np.arange(1, num_points + 1)  # [T], s after t0
    braking_s = np.minimum(times, speed_mps / decel_mps2)  # [T], time spent moving
    distance = speed_mps * braking_s - 0.5 * decel_mps2 * braking_s**2  # [T], m, non-decreasing
    xyz = np.zeros((num_points, 3), dtype=np.float32)
    xyz[:, 0] = distance
    rot = np.broadcast_to(np.eye(3, dtype=np.float32), (num_points, 3, 3)).copy()
    return xyz, rot
