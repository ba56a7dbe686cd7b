"""Scenario data: the static road layout, the actors' tracks, the ego motion and its ground-truth causes.

Times are float seconds since the scenario start (`t_s`); the bag writer turns them into int nanoseconds.
Positions are in the odometry frame (`odom`): flat ground, z up, origin at the ego's base_link at t = 0,
x along its initial heading. The ego frame (base_link) is x forward, y left, z up (MODEL.md §4.4), at the
rear axle. `generate_scenario` (scenarios.py) builds a `Scenario`; everything here only queries one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from alpamayo_ros.sim.road import LanePath

# Ego body relative to base_link (rear axle centre on the ground), m. A mid-size sedan.
EGO_FRONT_M = 3.8  # base_link to the front bumper
EGO_REAR_M = 1.0  # base_link to the rear bumper

# The model's trajectory layout (MODEL.md §4.4): 16 history poses and 64 future poses at 10 Hz.
HISTORY_POINTS = 16
FUTURE_POINTS = 64
TRAJECTORY_DT_S = 0.1


class ScenarioKind(enum.Enum):
    """What happens in a scenario; each kind exercises one or two causes."""

    KEEP_LANE = "keep_lane"  # free driving on gently curving roads with oncoming traffic
    CURVE = "curve"  # a sharp curve that needs slowing down
    RED_LIGHT = "red_light"  # stop at a red light, wait, then go on green
    GREEN_LIGHT = "green_light"  # drive through an intersection on green
    LEAD_BRAKING = "lead_braking"  # follow a lead vehicle that brakes hard, then drives on
    PEDESTRIAN = "pedestrian"  # yield to a pedestrian on a zebra crossing


class Cause(enum.IntEnum):
    """The ground-truth reason for the ego's behaviour at one moment (the binding driving constraint)."""

    KEEP_LANE = 0
    FOLLOW_LEAD = 1
    SLOW_FOR_LEAD = 2
    STOP_FOR_RED_LIGHT = 3
    PROCEED_ON_GREEN = 4
    YIELD_TO_PEDESTRIAN = 5
    SLOW_FOR_CURVE = 6


# One causal explanation string per cause, in the style of Alpamayo's Chain-of-Causation text.
EXPLANATIONS: dict[Cause, str] = {
    Cause.KEEP_LANE: "Keep lane and follow the road",
    Cause.FOLLOW_LEAD: "Follow the lead vehicle at a safe distance",
    Cause.SLOW_FOR_LEAD: "Slow down for the braking lead vehicle",
    Cause.STOP_FOR_RED_LIGHT: "Stop at the red light ahead",
    Cause.PROCEED_ON_GREEN: "Proceed through the green light",
    Cause.YIELD_TO_PEDESTRIAN: "Yield to the pedestrian crossing",
    Cause.SLOW_FOR_CURVE: "Slow down for the curve ahead",
}


class LightState(enum.IntEnum):
    """State of the traffic light that controls the ego's approach."""

    RED = 0
    YELLOW = 1
    GREEN = 2


@dataclass(frozen=True)
class TrafficLight:
    """The signal for the ego lane at an intersection, and when it changes."""

    stop_line_s_m: float  # arc length of the stop line along the ego lane, m
    change_times_s: tuple[float, ...]  # increasing; state i holds from change_times_s[i] (the first is 0)
    states: tuple[LightState, ...]  # same length as change_times_s

    def state_at(self, t_s: float) -> LightState:
        index = int(np.searchsorted(np.asarray(self.change_times_s), t_s, side="right")) - 1
        return self.states[max(index, 0)]


@dataclass(frozen=True)
class RoadLayout:
    """Static road geometry: a two-lane road (one lane per direction) along the ego lane, plus features."""

    lane: LanePath  # centre line of the ego lane (right-hand traffic; the oncoming lane is to its left)
    lane_width_m: float  # width of each lane, m
    shoulder_m: float  # paved strip between the outer lane line and the curb, m
    sidewalk_width_m: float  # width of the sidewalks on both sides, m
    intersection_s_m: float | None  # arc length of the centre of a perpendicular cross road, or None
    stop_line_s_m: float | None  # arc length of the ego's stop line before the intersection, or None
    crosswalk_s_m: tuple[float, float] | None  # (start, end) arc lengths of a zebra crossing the ego road
    traffic_light: TrafficLight | None  # the signal at the intersection, or None

    @property
    def right_edge_m(self) -> float:
        """Lateral offset of the right curb from the ego lane centre (negative = right), m."""
        return -0.5 * self.lane_width_m - self.shoulder_m

    @property
    def left_edge_m(self) -> float:
        """Lateral offset of the left curb (beyond the oncoming lane), m."""
        return 1.5 * self.lane_width_m + self.shoulder_m

    @property
    def cross_half_width_m(self) -> float:
        """Half the paved width of the cross road (same cross-section as the ego road), m."""
        return self.lane_width_m + self.shoulder_m

    def intersection_frame(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre [2] of the intersection, the ego road direction [2] and the cross road direction [2] (to the
        ego's left). The lane is straight around an intersection, so these describe both roads exactly."""
        if self.intersection_s_m is None:
            raise ValueError("RoadLayout.intersection_s_m is None: the layout has no intersection")
        xy, heading, _ = self.lane.sample(self.intersection_s_m)
        along = np.array([np.cos(heading), np.sin(heading)])
        cross = np.array([-along[1], along[0]])
        return xy + 0.5 * self.lane_width_m * cross, along, cross


class ActorKind(enum.Enum):
    CAR = "car"
    PEDESTRIAN = "pedestrian"


@dataclass(frozen=True, eq=False)
class ActorTrack:
    """A moving road user, sampled on the scenario's time grid."""

    kind: ActorKind
    size_m: tuple[float, float, float]  # length (along yaw), width, height, m
    color_rgb: tuple[int, int, int]  # body colour
    t_s: np.ndarray  # [N] sample times, s
    xy_m: np.ndarray  # [N, 2] footprint centre, m
    yaw_rad: np.ndarray  # [N] heading, rad (continuous, never wrapped, so it interpolates)
    accel_mps2: np.ndarray  # [N] longitudinal acceleration (brake lights below -0.5), m/s^2

    def state_at(self, t_s: float) -> tuple[np.ndarray, float, float]:
        """Footprint centre [2] m, yaw rad and acceleration m/s^2 at `t_s` (linear interpolation)."""
        x = np.interp(t_s, self.t_s, self.xy_m[:, 0])
        y = np.interp(t_s, self.t_s, self.xy_m[:, 1])
        yaw = float(np.interp(t_s, self.t_s, self.yaw_rad))
        return np.array([x, y]), yaw, float(np.interp(t_s, self.t_s, self.accel_mps2))


class PropKind(enum.Enum):
    BUILDING = "building"
    TREE = "tree"


@dataclass(frozen=True)
class Prop:
    """A static roadside object."""

    kind: PropKind
    center_xy_m: tuple[float, float]  # footprint centre, m
    yaw_rad: float  # footprint orientation (length along yaw), rad
    size_m: tuple[float, float, float]  # length, width, height, m
    color_rgb: tuple[int, int, int]


@dataclass(frozen=True)
class EgoState:
    """The ego (base_link) at one instant, in the odometry frame."""

    t_s: float
    position_m: np.ndarray  # [3] m (z = 0)
    yaw_rad: float  # heading, rad (continuous, may exceed pi)
    speed_mps: float  # forward speed, m/s (>= 0)
    accel_mps2: float  # longitudinal acceleration, m/s^2
    yaw_rate_rps: float  # rad/s (speed times path curvature)

    @property
    def rotation(self) -> np.ndarray:
        """[3, 3] rotation of base_link in the odometry frame."""
        c, s = np.cos(self.yaw_rad), np.sin(self.yaw_rad)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True, eq=False)
class Scenario:
    """A generated scenario: what the ego does, why, and everything there is to see.

    The ego and actor tracks cover [0, end_s] with end_s = duration_s plus the 6.4 s ground-truth horizon (and
    a small margin), so the future trajectory exists at every t in [0, duration_s].
    """

    seed: int
    kind: ScenarioKind
    duration_s: float  # the part of the scenario meant to be recorded, s
    cruise_speed_mps: float  # the ego's desired speed on a free road, m/s
    layout: RoadLayout
    props: tuple[Prop, ...]
    actors: tuple[ActorTrack, ...]
    t_s: np.ndarray  # [N] simulation time grid, s (uniform, starts at 0)
    ego_s_m: np.ndarray  # [N] ego arc length along layout.lane, m
    ego_speed_mps: np.ndarray  # [N] m/s
    ego_accel_mps2: np.ndarray  # [N] m/s^2
    causes: np.ndarray  # [N] int8 Cause values

    @property
    def end_s(self) -> float:
        return float(self.t_s[-1])

    def _check_time(self, t_s: np.ndarray) -> None:
        if np.any(t_s < self.t_s[0] - 1e-9) or np.any(t_s > self.end_s + 1e-9):
            raise ValueError(
                f"time {t_s.min():.3f}..{t_s.max():.3f} s is outside the scenario [0, {self.end_s:.3f}] s")

    def ego_poses(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ego positions and yaws at many times (vectorised).

        Args:
            t_s: [M] times, s, within [0, end_s].

        Returns:
            xy [M, 2] m and yaw [M] rad in the odometry frame.
        """
        t = np.asarray(t_s, dtype=np.float64)
        self._check_time(t)
        s = np.interp(t, self.t_s, self.ego_s_m)
        xy, heading, _ = self.layout.lane.sample(s)
        return xy, heading

    def ego_state(self, t_s: float) -> EgoState:
        """The ego at time `t_s` (interpolated between simulation steps)."""
        xy, yaw = self.ego_poses(np.array([t_s]))
        speed = float(np.interp(t_s, self.t_s, self.ego_speed_mps))
        _, _, curvature = self.layout.lane.sample(np.interp(t_s, self.t_s, self.ego_s_m))
        return EgoState(
            t_s=float(t_s),
            position_m=np.array([xy[0, 0], xy[0, 1], 0.0]),
            yaw_rad=float(yaw[0]),
            speed_mps=speed,
            accel_mps2=float(np.interp(t_s, self.t_s, self.ego_accel_mps2)),
            yaw_rate_rps=speed * float(curvature),
        )

    def cause(self, t_s: float) -> Cause:
        """The ground-truth cause at `t_s` (held from the last simulation step at or before `t_s`)."""
        self._check_time(np.array([t_s]))
        index = int(np.searchsorted(self.t_s, t_s + 1e-9, side="right")) - 1
        return Cause(int(self.causes[max(index, 0)]))

    def cause_segments(self) -> list[tuple[float, float, Cause]]:
        """The cause timeline over [0, duration_s] as (start_s, end_s, cause) runs."""
        recorded = self.t_s <= self.duration_s
        causes, times = self.causes[recorded], self.t_s[recorded]
        starts = np.flatnonzero(np.concatenate([[True], causes[1:] != causes[:-1]]))
        ends = np.concatenate([starts[1:], [len(causes)]])
        return [(float(times[a]), float(times[b]) if b < len(times) else self.duration_s,
                 Cause(int(causes[a]))) for a, b in zip(starts, ends)]

    def explanation(self, t_s: float) -> str:
        """The causal explanation string at `t_s` (one of EXPLANATIONS' values)."""
        return EXPLANATIONS[self.cause(t_s)]

    def trajectory_in_ego(self, t0_s: float, offsets_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ego poses at `t0_s + offsets_s` expressed in the ego frame at `t0_s` (MODEL.md §4.4).

        Args:
            t0_s: reference time, s.
            offsets_s: [T] time offsets, s.

        Returns:
            xyz [T, 3] float32 m (z = 0) and yaw [T] float32 rad, relative to base_link at t0.
        """
        xy, yaw = self.ego_poses(t0_s + np.asarray(offsets_s, dtype=np.float64))
        xy0, yaw0 = self.ego_poses(np.array([t0_s]))
        c, s = np.cos(yaw0[0]), np.sin(yaw0[0])
        rel = xy - xy0  # [T, 2]
        local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]], axis=-1)
        xyz = np.concatenate([local, np.zeros((len(local), 1))], axis=-1)
        return xyz.astype(np.float32), (yaw - yaw0[0]).astype(np.float32)

    def future_trajectory(
        self, t0_s: float, num_points: int = FUTURE_POINTS, dt_s: float = TRAJECTORY_DT_S
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ground-truth future at t0 + dt, ..., t0 + num_points * dt in the ego frame at t0.

        Returns:
            xyz [T, 3] float32 m and yaw [T] float32 rad.
        """
        return self.trajectory_in_ego(t0_s, dt_s * np.arange(1, num_points + 1))

    def history_trajectory(
        self, t0_s: float, num_points: int = HISTORY_POINTS, dt_s: float = TRAJECTORY_DT_S
    ) -> tuple[np.ndarray, np.ndarray]:
        """Past poses at t0 - (num_points - 1) * dt, ..., t0 in the ego frame at t0 (the last is the origin).

        Returns:
            xyz [H, 3] float32 m and yaw [H] float32 rad. Raises ValueError when t0 is too early.
        """
        return self.trajectory_in_ego(t0_s, dt_s * np.arange(-(num_points - 1), 1))

    def light_state(self, t_s: float) -> LightState | None:
        """State of the ego's traffic light at `t_s`, or None without a light."""
        light = self.layout.traffic_light
        return None if light is None else light.state_at(t_s)
