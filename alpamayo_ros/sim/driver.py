"""The ego's longitudinal driver: one acceleration per constraint; the minimum wins and names the cause.

Constraints: the free road (IDM free term toward the cruise speed), a curve speed limit (tracked with a
proportional gain; the limit previews curves ahead at a comfortable deceleration), a lead vehicle (IDM
interaction term), and stop points (a red light's stop line, a crosswalk with a pedestrian in the way). Stop
points use a kinematic law instead of IDM, because IDM creeps toward a standing target for many seconds: with
b = v^2 / (2 d) the deceleration that stops exactly at the stop point, the driver pre-brakes with
-b (b / b_engage)^2 while b < b_engage and brakes with -b after, which holds b constant and stops on the
point.
The constraint that binds is the ground-truth cause of that moment. Acceleration is jerk-limited, so speed and
acceleration are continuous.
IDM: Treiber, Hennecke, Helbing, "Congested traffic states in empirical observations and microscopic
simulations", Phys. Rev. E 62 (2000).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alpamayo_ros.sim.scene import EGO_FRONT_M, EGO_REAR_M, Cause, LightState, RoadLayout


@dataclass(frozen=True)
class DriverConfig:
    """Ego driver parameters (typical IDM values for urban driving)."""

    max_accel_mps2: float = 1.5  # IDM maximum acceleration a
    comfort_decel_mps2: float = 2.0  # IDM comfortable deceleration b
    max_decel_mps2: float = 7.0  # hard braking limit (about 0.7 g)
    max_jerk_mps3: float = 3.0  # rate limit when acceleration rises (comfort)
    max_brake_jerk_mps3: float = 12.0  # rate limit when acceleration falls (a braking response)
    time_headway_s: float = 1.4  # IDM desired time gap T
    min_gap_m: float = 2.0  # IDM standstill gap s0 behind a lead vehicle
    stop_engage_decel_mps2: float = 1.5  # deceleration at which the driver commits to a stop
    stop_margin_m: float = 1.0  # the front bumper stops this far before a stop line or crosswalk
    max_lateral_accel_mps2: float = 2.0  # curve speed limit: v = sqrt(a_lat / |curvature|)
    curve_preview_decel_mps2: float = 1.2  # deceleration assumed when previewing a slower curve
    curve_gain_1ps: float = 3.0  # speed tracking gain toward the curve speed limit, 1/s
    curve_lead_time_s: float = 0.8  # the curve limit is read this far ahead of the current position, s
    green_zone_m: float = 60.0  # label PROCEED_ON_GREEN within this distance before a green stop line
    binding_margin_mps2: float = 0.2  # a constraint is the cause if it lowers acceleration by more than this
    min_label_duration_s: float = 0.5  # shorter cause runs are merged into the previous one

    def __post_init__(self) -> None:
        for name in ("max_accel_mps2", "comfort_decel_mps2", "max_decel_mps2", "max_jerk_mps3",
                     "max_brake_jerk_mps3", "time_headway_s", "min_gap_m", "stop_engage_decel_mps2",
                     "stop_margin_m", "max_lateral_accel_mps2", "curve_preview_decel_mps2", "curve_gain_1ps",
                     "curve_lead_time_s"):
            value = getattr(self, name)
            if not value > 0.0:
                raise ValueError(f"DriverConfig.{name} must be > 0, got {value}")
        if self.min_label_duration_s < 0.0:
            raise ValueError(
                f"DriverConfig.min_label_duration_s must be >= 0, got {self.min_label_duration_s}")


@dataclass(frozen=True)
class LeadTrack:
    """A vehicle ahead in the ego lane, on the simulation time grid."""

    s_m: np.ndarray  # [N] arc length of its footprint centre along the ego lane, m
    speed_mps: np.ndarray  # [N] m/s
    accel_mps2: np.ndarray  # [N] m/s^2
    length_m: float


@dataclass(frozen=True)
class EgoDrive:
    """Result of the driver simulation on the time grid."""

    s_m: np.ndarray  # [N] ego arc length, m
    speed_mps: np.ndarray  # [N] m/s
    accel_mps2: np.ndarray  # [N] m/s^2
    causes: np.ndarray  # [N] int8 Cause values
    light_change_times_s: tuple[float, ...]  # when the light changed (first entry 0.0)
    light_states: tuple[LightState, ...]


def curve_speed_limit(layout: RoadLayout, config: DriverConfig) -> np.ndarray:
    """Speed limit at every lane sample from the curvature there and ahead (backward pass).

    Returns:
        [N_lane] m/s, the highest speed from which every curve ahead can be reached by braking at
        `curve_preview_decel_mps2`.
    """
    lane = layout.lane
    curvature = np.maximum(np.abs(lane.curvature_1pm), 1e-6)
    limit = np.sqrt(config.max_lateral_accel_mps2 / curvature)
    step = np.diff(lane.s_m)
    for i in range(len(limit) - 2, -1, -1):
        limit[i] = min(limit[i], np.sqrt(limit[i + 1] ** 2 + 2.0 * config.curve_preview_decel_mps2 * step[i]))
    return limit


def _idm(config: DriverConfig, speed: float, desired: float, gap: float | None,
         obstacle_speed: float) -> float:
    free = 1.0 - (speed / max(desired, 0.1)) ** 4
    if gap is None:
        return config.max_accel_mps2 * free
    dynamic = speed * config.time_headway_s + speed * (speed - obstacle_speed) / (
        2.0 * np.sqrt(config.max_accel_mps2 * config.comfort_decel_mps2))
    desired_gap = config.min_gap_m + max(0.0, dynamic)
    return config.max_accel_mps2 * (free - (desired_gap / max(gap, 0.1)) ** 2)


def _stop(config: DriverConfig, speed: float, distance: float) -> float:
    """Acceleration toward a standstill `distance` m ahead (see the module docstring)."""
    if distance <= 0.05:
        return -config.max_decel_mps2 if speed > 0.0 else 0.0
    needed = speed * speed / (2.0 * distance)
    if needed >= config.stop_engage_decel_mps2:
        return -needed
    return -needed * (needed / config.stop_engage_decel_mps2) ** 2


def _merge_short_runs(labels: np.ndarray, min_len: int) -> np.ndarray:
    """Replace runs shorter than `min_len` samples by the label before them (the first run is kept)."""
    out = labels.copy()
    starts = np.flatnonzero(np.concatenate([[True], out[1:] != out[:-1]]))
    ends = np.concatenate([starts[1:], [len(out)]])
    for start, end in zip(starts[1:], ends[1:]):
        if end - start < min_len and end != len(out):
            out[start:end] = out[start - 1]
    return out


def simulate_ego(
    config: DriverConfig,
    layout: RoadLayout,
    t_s: np.ndarray,
    cruise_speed_mps: float,
    lead: LeadTrack | None = None,
    pedestrian_blocking: np.ndarray | None = None,
    green_after_stop_s: float | None = None,
) -> EgoDrive:
    """Drive the ego along `layout.lane` from s = 0 at cruise speed.

    Args:
        config: driver parameters.
        layout: road; its traffic light (if any) starts in `layout.traffic_light.states[0]`.
        t_s: [N] uniform time grid, s.
        cruise_speed_mps: desired speed on a free straight road.
        lead: a vehicle ahead in the ego lane, or None.
        pedestrian_blocking: [N] bool, True while a pedestrian is in or entering the ego lane on the
            crosswalk.
        green_after_stop_s: a red light turns green this long after the ego has stopped (None: never changes).

    Returns:
        The ego's motion, its causes and the realised light schedule.
    """
    dt = float(t_s[1] - t_s[0])
    n = len(t_s)
    limit = curve_speed_limit(layout, config)
    light = layout.traffic_light
    light_state = light.states[0] if light is not None else None
    changes: list[tuple[float, LightState]] = [(0.0, light_state)] if light is not None else []
    stopped_at: float | None = None
    s, v, a = np.zeros(n), np.zeros(n), np.zeros(n)
    raw = np.zeros(n, dtype=np.int8)
    v[0] = cruise_speed_mps if lead is None else min(cruise_speed_mps, float(lead.speed_mps[0]))
    for i in range(n):
        front = s[i] + EGO_FRONT_M
        # Also read the limit a little ahead: that absorbs the lag of the proportional tracking on the way in.
        ahead = [s[i], s[i] + config.curve_lead_time_s * v[i]]
        curve_limit = float(np.min(np.interp(ahead, layout.lane.s_m, limit)))
        a_free = _idm(config, v[i], cruise_speed_mps, None, 0.0)
        candidates: list[tuple[float, Cause]] = [(a_free, Cause.KEEP_LANE)]
        if curve_limit < cruise_speed_mps:
            candidates.append((config.curve_gain_1ps * (curve_limit - v[i]), Cause.SLOW_FOR_CURVE))
        if lead is not None:
            gap = float(lead.s_m[i]) - 0.5 * lead.length_m - front
            candidates.append((_idm(config, v[i], cruise_speed_mps, gap, float(lead.speed_mps[i])),
                               Cause.FOLLOW_LEAD))
        if light is not None and light_state != LightState.GREEN and front < light.stop_line_s_m:
            gap = light.stop_line_s_m - config.stop_margin_m - front
            candidates.append((_stop(config, v[i], gap), Cause.STOP_FOR_RED_LIGHT))
        if pedestrian_blocking is not None and pedestrian_blocking[i] and layout.crosswalk_s_m is not None:
            gap = layout.crosswalk_s_m[0] - config.stop_margin_m - front
            if gap > -config.stop_margin_m:  # not yet on the crossing
                candidates.append((_stop(config, v[i], gap), Cause.YIELD_TO_PEDESTRIAN))
        a_cmd, cause = min(candidates, key=lambda c: c[0])
        if a_free - a_cmd <= config.binding_margin_mps2:
            cause = Cause.KEEP_LANE
        elif cause == Cause.FOLLOW_LEAD and (
            lead.accel_mps2[i] < -0.5 or a[i] < -0.5 or v[i] < 0.6 * cruise_speed_mps):
            cause = Cause.SLOW_FOR_LEAD
        if cause == Cause.KEEP_LANE:
            if light_state == LightState.GREEN and layout.intersection_s_m is not None and (
                front > light.stop_line_s_m - config.green_zone_m
                and s[i] - EGO_REAR_M < layout.intersection_s_m + layout.cross_half_width_m):
                cause = Cause.PROCEED_ON_GREEN
        raw[i] = cause
        if i == n - 1:
            break
        a_cmd = float(np.clip(a_cmd, -config.max_decel_mps2, config.max_accel_mps2))
        step = np.clip(a_cmd - a[i], -config.max_brake_jerk_mps3 * dt, config.max_jerk_mps3 * dt)
        a_next = a[i] + step
        v_next = v[i] + a_next * dt
        if v_next <= 0.0:  # standstill: the brakes hold the car, no reverse
            v_next, a_next = 0.0, 0.0
        a[i + 1], v[i + 1] = a_next, v_next
        s[i + 1] = s[i] + 0.5 * (v[i] + v_next) * dt
        if green_after_stop_s is not None and light_state == LightState.RED:
            if stopped_at is None and v_next < 0.05:
                stopped_at = float(t_s[i + 1])
            if stopped_at is not None and t_s[i + 1] - stopped_at >= green_after_stop_s:
                light_state = LightState.GREEN
                changes.append((float(t_s[i + 1]), light_state))
    causes = _merge_short_runs(raw, max(1, int(round(config.min_label_duration_s / dt))))
    return EgoDrive(
        s_m=s,
        speed_mps=v,
        accel_mps2=a,
        causes=causes,
        light_change_times_s=tuple(c[0] for c in changes),
        light_states=tuple(c[1] for c in changes),
    )
