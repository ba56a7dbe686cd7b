"""Procedural scenario generation: `generate_scenario(seed, kind, duration_s)` -> `Scenario`.

Every random choice comes from one `np.random.default_rng(seed)`, drawn in a fixed order, so a seed and kind
always give the same scenario. Distances are chosen so that the scenario's event (the stop, the braking lead,
the crossing, the curve) happens within the first 10 to 15 s; 15 to 20 s durations show it completely.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from alpamayo_ros.sim.driver import DriverConfig, LeadTrack, simulate_ego
from alpamayo_ros.sim.props import roadside_props
from alpamayo_ros.sim.road import CurvaturePiece, build_lane_path
from alpamayo_ros.sim.scene import (
    EGO_FRONT_M,
    FUTURE_POINTS,
    TRAJECTORY_DT_S,
    ActorTrack,
    LightState,
    RoadLayout,
    Scenario,
    ScenarioKind,
    TrafficLight,
)
from alpamayo_ros.sim import traffic


@dataclass(frozen=True)
class ScenarioConfig:
    """Tunables shared by every scenario kind."""

    sim_dt_s: float = 0.01  # simulation step, s (ego poses are interpolated between steps)
    horizon_margin_s: float = FUTURE_POINTS * TRAJECTORY_DT_S + 0.6  # simulated past duration_s for the GT, s
    road_behind_m: float = 80.0  # road before the ego's start, visible to the cross cameras, m
    cruise_speed_range_mps: tuple[float, float] = (10.0, 14.0)  # ego desired speed, drawn per scenario
    lane_width_range_m: tuple[float, float] = (3.3, 3.7)  # lane width, drawn per scenario
    shoulder_m: float = 0.5  # paved strip between the edge line and the curb
    sidewalk_width_m: float = 2.5
    driver: DriverConfig = field(default_factory=DriverConfig)  # the ego's longitudinal driver

    def __post_init__(self) -> None:
        if not 0.0 < self.sim_dt_s <= 0.05:
            raise ValueError(f"ScenarioConfig.sim_dt_s must be in (0, 0.05] s, got {self.sim_dt_s}")
        if self.horizon_margin_s < FUTURE_POINTS * TRAJECTORY_DT_S:
            raise ValueError(
                f"ScenarioConfig.horizon_margin_s must cover the {FUTURE_POINTS * TRAJECTORY_DT_S} s future, "
                f"got {self.horizon_margin_s}")
        for name in ("cruise_speed_range_mps", "lane_width_range_m"):
            low, high = getattr(self, name)
            if not 0.0 < low <= high:
                raise ValueError(
                    f"ScenarioConfig.{name} must be an increasing positive range, got {(low, high)}")
        if not self.road_behind_m > 0.0:
            raise ValueError(f"ScenarioConfig.road_behind_m must be > 0, got {self.road_behind_m}")


def _straight_then(rng: np.random.Generator, kind: ScenarioKind, cruise_mps: float) -> list[CurvaturePiece]:
    """Curvature pieces of the ego lane after the origin (the part before it is straight)."""
    if kind == ScenarioKind.CURVE:
        radius = rng.uniform(25.0, 40.0)
        angle = np.deg2rad(rng.uniform(70.0, 110.0))
        sign = 1.0 if rng.random() < 0.5 else -1.0
        transition = 20.0
        arc = max(5.0, angle * radius - transition)  # a clothoid turns half as much as an arc of its length
        return [CurvaturePiece(cruise_mps * rng.uniform(4.0, 6.0), 0.0),
                CurvaturePiece(transition, sign / radius), CurvaturePiece(arc, sign / radius),
                CurvaturePiece(transition, 0.0)]
    if kind in (ScenarioKind.KEEP_LANE, ScenarioKind.LEAD_BRAKING):
        radius = rng.uniform(250.0, 450.0)  # gentle: the curve speed limit stays above cruise speed
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return [CurvaturePiece(rng.uniform(40.0, 80.0), 0.0), CurvaturePiece(30.0, sign / radius),
                CurvaturePiece(rng.uniform(60.0, 120.0), sign / radius), CurvaturePiece(30.0, 0.0)]
    return []  # intersections and crossings sit on straight roads


def generate_scenario(
    seed: int,
    kind: ScenarioKind | str | None = None,
    duration_s: float = 20.0,
    config: ScenarioConfig = ScenarioConfig(),
) -> Scenario:
    """Generate a deterministic scenario.

    Args:
        seed: seed of the one random generator used.
        kind: what happens (a ScenarioKind or its value string); None draws it from the seed.
        duration_s: recorded length, s; the ego and actors are simulated `config.horizon_margin_s` further.
        config: shared tunables.

    Returns:
        The scenario, with its ego motion and per-step causes.
    """
    if not duration_s > 0.0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    rng = np.random.default_rng(seed)
    kinds = list(ScenarioKind)
    kind = kinds[int(rng.integers(len(kinds)))] if kind is None else ScenarioKind(kind)
    cruise = rng.uniform(*config.cruise_speed_range_mps)
    lane_width = rng.uniform(*config.lane_width_range_m)
    num_steps = int(round((duration_s + config.horizon_margin_s) / config.sim_dt_s)) + 1
    t_s = config.sim_dt_s * np.arange(num_steps)  # [N]

    pieces = [CurvaturePiece(config.road_behind_m, 0.0)] + _straight_then(rng, kind, cruise)
    road_length = config.road_behind_m + cruise * t_s[-1] * 1.15 + 150.0
    pieces.append(CurvaturePiece(road_length - sum(p.length_m for p in pieces), 0.0))
    lane = build_lane_path(pieces, start_s_m=-config.road_behind_m)
    layout = RoadLayout(lane=lane, lane_width_m=lane_width, shoulder_m=config.shoulder_m,
                        sidewalk_width_m=config.sidewalk_width_m, intersection_s_m=None, stop_line_s_m=None,
                        crosswalk_s_m=None, traffic_light=None)

    lead: LeadTrack | None = None
    blocking: np.ndarray | None = None
    green_after_stop: float | None = None
    actors: list[ActorTrack] = []
    if kind in (ScenarioKind.RED_LIGHT, ScenarioKind.GREEN_LIGHT):
        if kind == ScenarioKind.RED_LIGHT:  # a few seconds of cruising, then a stop at the engage decel
            braking = cruise**2 / (2.0 * config.driver.stop_engage_decel_mps2)
            stop_line = EGO_FRONT_M + cruise * rng.uniform(1.5, 3.0) + braking
        else:
            stop_line = rng.uniform(70.0, 120.0)
        crosswalk = (stop_line + 1.0, stop_line + 4.0)
        intersection = crosswalk[1] + 1.0 + lane_width + config.shoulder_m
        initial = LightState.RED if kind == ScenarioKind.RED_LIGHT else LightState.GREEN
        layout = dataclasses.replace(layout, intersection_s_m=intersection, stop_line_s_m=stop_line,
                                     crosswalk_s_m=crosswalk,
                                     traffic_light=TrafficLight(stop_line, (0.0,), (initial,)))
        if kind == ScenarioKind.RED_LIGHT:
            green_after_stop = rng.uniform(2.5, 4.0)
        else:
            actors += traffic.waiting_cars(rng, t_s, layout, count=int(rng.integers(1, 3)))
    elif kind == ScenarioKind.PEDESTRIAN:
        start = rng.uniform(80.0, 100.0)
        layout = dataclasses.replace(layout, crosswalk_s_m=(start, start + 4.0))
        arrival = (start - EGO_FRONT_M) / cruise
        person, blocking = traffic.pedestrian(rng, t_s, layout, max(1.0, arrival - rng.uniform(3.5, 5.0)))
        actors.append(person)
    elif kind == ScenarioKind.LEAD_BRAKING:
        gap = config.driver.min_gap_m + cruise * config.driver.time_headway_s + rng.uniform(2.0, 8.0)
        start_s = EGO_FRONT_M + gap + 0.5 * traffic.CAR_SIZE_M[0]
        lead, car = traffic.lead_vehicle(rng, t_s, layout, cruise, start_s)
        actors.append(car)
    if kind in (ScenarioKind.KEEP_LANE, ScenarioKind.CURVE, ScenarioKind.LEAD_BRAKING):
        actors += traffic.oncoming_cars(rng, t_s, layout, count=int(rng.integers(1, 4)))

    drive = simulate_ego(config.driver, layout, t_s, cruise, lead=lead, pedestrian_blocking=blocking,
                         green_after_stop_s=green_after_stop)
    if layout.traffic_light is not None:
        light = TrafficLight(layout.traffic_light.stop_line_s_m, drive.light_change_times_s,
                             drive.light_states)
        layout = dataclasses.replace(layout, traffic_light=light)
        if kind == ScenarioKind.RED_LIGHT and len(light.change_times_s) > 1:
            # Cross traffic uses its green while the ego waits, clearing the intersection before the ego's.
            stopped = float(t_s[np.argmax(drive.speed_mps < 0.05)])
            green = light.change_times_s[1]
            center_times = [min(stopped + rng.uniform(-1.0, 0.5), green - 2.0)]
            while center_times[-1] + 4.0 < green:  # at least 1.5 s apart, so cars in one lane never overlap
                center_times.append(center_times[-1] + rng.uniform(1.5, 2.5))
            actors += traffic.crossing_cars(rng, t_s, layout, center_times)
    return Scenario(
        seed=seed,
        kind=kind,
        duration_s=float(duration_s),
        cruise_speed_mps=float(cruise),
        layout=layout,
        props=roadside_props(rng, layout),
        actors=tuple(actors),
        t_s=t_s,
        ego_s_m=drive.s_m,
        ego_speed_mps=drive.speed_mps,
        ego_accel_mps2=drive.accel_mps2,
        causes=drive.causes,
    )
