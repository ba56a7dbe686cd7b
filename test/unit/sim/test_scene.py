"""Scenario generation: determinism, causes that match what happens, plausible motion, ego-frame paths."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from alpamayo_ros.sim.driver import DriverConfig
from alpamayo_ros.sim.scenarios import ScenarioConfig, generate_scenario
from alpamayo_ros.sim.scene import (
    EGO_FRONT_M,
    EXPLANATIONS,
    FUTURE_POINTS,
    Cause,
    LightState,
    Scenario,
    ScenarioKind,
)

SEEDS = (0, 1, 2)
DURATION_S = 20.0


@functools.cache
def scenario(seed: int, kind: ScenarioKind) -> Scenario:
    return generate_scenario(seed, kind, DURATION_S)


def recorded(sc: Scenario) -> np.ndarray:
    return sc.t_s <= sc.duration_s


def causes_seen(sc: Scenario) -> set[Cause]:
    return {Cause(int(c)) for c in np.unique(sc.causes[recorded(sc)])}


def test_same_seed_same_scenario():
    a = generate_scenario(7, ScenarioKind.LEAD_BRAKING, 12.0)
    b = generate_scenario(7, ScenarioKind.LEAD_BRAKING, 12.0)
    np.testing.assert_array_equal(a.ego_s_m, b.ego_s_m)
    np.testing.assert_array_equal(a.causes, b.causes)
    assert a.props == b.props
    assert len(a.actors) == len(b.actors)
    for actor_a, actor_b in zip(a.actors, b.actors):
        np.testing.assert_array_equal(actor_a.xy_m, actor_b.xy_m)


def test_random_kind_is_drawn_from_the_seed():
    assert generate_scenario(11, None, 5.0).kind == generate_scenario(11, None, 5.0).kind
    assert len({generate_scenario(seed, None, 5.0).kind for seed in range(12)}) >= 3


def test_different_seeds_differ():
    a, b = scenario(1, ScenarioKind.RED_LIGHT), scenario(2, ScenarioKind.RED_LIGHT)
    assert a.cruise_speed_mps != b.cruise_speed_mps
    assert a.layout.stop_line_s_m != b.layout.stop_line_s_m
    assert not np.allclose(a.ego_s_m, b.ego_s_m)


def test_kind_accepts_its_string_value():
    assert generate_scenario(0, "curve", 5.0).kind == ScenarioKind.CURVE


@pytest.mark.parametrize("kind", list(ScenarioKind))
@pytest.mark.parametrize("seed", SEEDS)
def test_ego_motion_is_smooth_and_plausible(seed, kind):
    sc = scenario(seed, kind)
    driver = DriverConfig()
    dt = sc.t_s[1] - sc.t_s[0]
    assert np.all(sc.ego_speed_mps >= 0.0)
    assert np.all(sc.ego_speed_mps <= sc.cruise_speed_mps + 0.05)
    assert np.all(np.abs(sc.ego_accel_mps2) <= driver.max_decel_mps2 + 1e-9)
    assert np.all(np.diff(sc.ego_s_m) >= 0.0)  # never reverses
    # Jerk: bounded by the rate limits, except the single step where the car comes to rest.
    jerk = np.diff(sc.ego_accel_mps2) / dt
    at_rest = (sc.ego_speed_mps[1:] == 0.0) & (sc.ego_speed_mps[:-1] > 0.0)
    assert np.all(np.abs(jerk[~at_rest]) <= driver.max_brake_jerk_mps3 + 1e-6)
    # Lateral acceleration from the path curvature stays within the curve speed limit (plus tracking slack).
    _, _, curvature = sc.layout.lane.sample(sc.ego_s_m)
    assert np.max(sc.ego_speed_mps**2 * np.abs(curvature)) <= driver.max_lateral_accel_mps2 + 0.1
    # Poses are continuous: no step larger than the distance driven.
    xy, yaw = sc.ego_poses(sc.t_s[recorded(sc)])
    steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    assert np.all(steps <= sc.cruise_speed_mps * dt + 1e-6)
    assert np.all(np.abs(np.diff(yaw)) <= 0.01)


@pytest.mark.parametrize("seed", SEEDS)
def test_red_light_stops_before_the_stop_line_and_goes_on_green(seed):
    sc = scenario(seed, ScenarioKind.RED_LIGHT)
    light = sc.layout.traffic_light
    front = sc.ego_s_m + EGO_FRONT_M
    assert sc.cause(0.0) == Cause.STOP_FOR_RED_LIGHT
    stopped = sc.ego_speed_mps < 0.05
    assert stopped.any(), "the ego never stops at the red light"
    first_stop = int(np.argmax(stopped))
    assert front[first_stop] <= light.stop_line_s_m
    assert front[first_stop] >= light.stop_line_s_m - 3.0  # stops at the line, not far before it
    red = np.array([light.state_at(t) == LightState.RED for t in sc.t_s])
    assert np.all(front[red] <= light.stop_line_s_m)  # never past the line on red
    assert sc.cause(float(sc.t_s[first_stop])) == Cause.STOP_FOR_RED_LIGHT
    green_at = light.change_times_s[1]
    assert light.states[1] == LightState.GREEN and green_at < DURATION_S
    assert sc.cause(green_at + 0.5) == Cause.PROCEED_ON_GREEN
    assert sc.ego_state(green_at + 3.0).speed_mps > 2.0
    assert sc.explanation(0.0) == "Stop at the red light ahead"


@pytest.mark.parametrize("seed", SEEDS)
def test_green_light_is_passed_without_slowing(seed):
    sc = scenario(seed, ScenarioKind.GREEN_LIGHT)
    assert Cause.PROCEED_ON_GREEN in causes_seen(sc)
    assert np.min(sc.ego_speed_mps) >= 0.95 * sc.cruise_speed_mps
    # The label is given while the light is ahead or the ego is inside the intersection.
    t_label = sc.t_s[np.argmax(sc.causes == Cause.PROCEED_ON_GREEN)]
    front = np.interp(t_label, sc.t_s, sc.ego_s_m) + EGO_FRONT_M
    assert front < sc.layout.stop_line_s_m


@pytest.mark.parametrize("seed", SEEDS)
def test_lead_braking_is_followed_then_slowed_for(seed):
    sc = scenario(seed, ScenarioKind.LEAD_BRAKING)
    assert sc.cause(1.0) == Cause.FOLLOW_LEAD
    assert {Cause.FOLLOW_LEAD, Cause.SLOW_FOR_LEAD} <= causes_seen(sc)
    lead = sc.actors[0]
    ego_xy, _ = sc.ego_poses(sc.t_s)
    # Bumper to bumper; the straight-line distance is at most the distance along the (gentle) curve.
    gap = np.linalg.norm(lead.xy_m - ego_xy, axis=1) - 0.5 * lead.size_m[0] - EGO_FRONT_M
    assert np.min(gap) > 1.0, "the ego comes too close to the braking lead"
    slowing = sc.causes == Cause.SLOW_FOR_LEAD
    assert np.min(sc.ego_speed_mps[slowing]) < 0.6 * sc.cruise_speed_mps
    assert np.min(sc.ego_accel_mps2[slowing]) < -1.0


@pytest.mark.parametrize("seed", SEEDS)
def test_pedestrian_is_yielded_to(seed):
    sc = scenario(seed, ScenarioKind.PEDESTRIAN)
    assert Cause.YIELD_TO_PEDESTRIAN in causes_seen(sc)
    yielding = sc.causes == Cause.YIELD_TO_PEDESTRIAN
    assert np.min(sc.ego_accel_mps2[yielding]) < -0.5
    # While the pedestrian is in the ego lane, the ego's front stays before the crosswalk.
    person = sc.actors[0]
    assert np.all(sc.layout.lane.curvature_1pm == 0.0)  # a straight road along x: lateral offset = y
    in_ego_lane = np.abs(person.xy_m[:, 1]) < 0.5 * sc.layout.lane_width_m
    assert in_ego_lane.any()
    assert np.all(sc.ego_s_m[in_ego_lane] + EGO_FRONT_M <= sc.layout.crosswalk_s_m[0])


@pytest.mark.parametrize("seed", SEEDS)
def test_curve_slows_down_below_the_lateral_limit(seed):
    sc = scenario(seed, ScenarioKind.CURVE)
    assert Cause.SLOW_FOR_CURVE in causes_seen(sc)
    _, _, curvature = sc.layout.lane.sample(sc.ego_s_m)
    sharpest = np.max(np.abs(sc.layout.lane.curvature_1pm))
    in_curve = np.abs(curvature) > 0.95 * sharpest  # on the circular arc
    assert in_curve[recorded(sc)].any()
    curve_speed = np.sqrt(DriverConfig().max_lateral_accel_mps2 / sharpest)
    assert curve_speed < sc.cruise_speed_mps
    assert np.max(sc.ego_speed_mps[in_curve]) < curve_speed + 0.15
    # Slowing starts before the curve: the label precedes the first curved sample.
    first_label = np.argmax(sc.causes == Cause.SLOW_FOR_CURVE)
    assert first_label < np.argmax(in_curve)


def test_keep_lane_has_only_keep_lane():
    for seed in SEEDS:
        assert causes_seen(scenario(seed, ScenarioKind.KEEP_LANE)) == {Cause.KEEP_LANE}


def test_explanations_are_distinct_and_match_causes():
    assert set(EXPLANATIONS) == set(Cause)
    assert len(set(EXPLANATIONS.values())) == len(Cause)
    sc = scenario(0, ScenarioKind.RED_LIGHT)
    for t in (0.0, 5.0, 19.0):
        assert sc.explanation(t) == EXPLANATIONS[sc.cause(t)]


def test_cause_segments_tile_the_duration():
    sc = scenario(0, ScenarioKind.RED_LIGHT)
    segments = sc.cause_segments()
    assert segments[0][0] == 0.0 and segments[-1][1] == pytest.approx(DURATION_S)
    for (_, end, cause), (start, _, next_cause) in zip(segments, segments[1:]):
        assert end == start and cause != next_cause
    assert [s[2] for s in segments][:2] == [Cause.STOP_FOR_RED_LIGHT, Cause.PROCEED_ON_GREEN]


@pytest.mark.parametrize("kind", [ScenarioKind.CURVE, ScenarioKind.RED_LIGHT])
def test_future_trajectory_in_ego_frame(kind):
    sc = scenario(0, kind)
    t0 = 6.0
    xyz, yaw = sc.future_trajectory(t0)
    assert xyz.shape == (FUTURE_POINTS, 3) and xyz.dtype == np.float32 and yaw.shape == (FUTURE_POINTS,)
    ego = sc.ego_state(t0)
    # Transforming back to the odometry frame reproduces the absolute poses.
    world = (ego.rotation[:2, :2] @ xyz[:, :2].T).T + ego.position_m[:2]
    expected, expected_yaw = sc.ego_poses(t0 + 0.1 * np.arange(1, FUTURE_POINTS + 1))
    np.testing.assert_allclose(world, expected, atol=1e-3)
    np.testing.assert_allclose(yaw, expected_yaw - ego.yaw_rad, atol=1e-5)
    # The first step is about speed * 0.1 s straight ahead (x forward, MODEL.md §4.4).
    assert xyz[0, 0] == pytest.approx(0.1 * ego.speed_mps + 0.005 * ego.accel_mps2, abs=0.02)
    assert abs(xyz[0, 1]) < 0.05


def test_curve_turns_to_positive_y_for_a_left_curve():
    for seed in range(6):
        sc = generate_scenario(seed, ScenarioKind.CURVE, 15.0)
        sign = np.sign(sc.layout.lane.curvature_1pm[np.argmax(np.abs(sc.layout.lane.curvature_1pm))])
        t0 = float(sc.t_s[np.argmax(sc.causes == Cause.SLOW_FOR_CURVE)])
        xyz, _ = sc.future_trajectory(t0)
        assert np.sign(xyz[-1, 1]) == sign  # y left: a left curve (positive curvature) ends at positive y


def test_history_ends_at_the_origin():
    sc = scenario(0, ScenarioKind.KEEP_LANE)
    xyz, yaw = sc.history_trajectory(3.0)
    assert xyz.shape == (16, 3)
    np.testing.assert_allclose(xyz[-1], 0.0, atol=1e-6)
    assert yaw[-1] == 0.0
    assert np.all(np.diff(xyz[:, 0]) > 0.0) and xyz[0, 0] < -10.0  # 1.5 s behind at > 7 m/s


def test_times_outside_the_scenario_raise():
    sc = scenario(0, ScenarioKind.KEEP_LANE)
    with pytest.raises(ValueError, match="outside the scenario"):
        sc.history_trajectory(1.0)  # needs t = -0.5 s
    with pytest.raises(ValueError, match="outside the scenario"):
        sc.ego_state(sc.end_s + 1.0)
    sc.future_trajectory(DURATION_S)  # the GT horizon exists up to the end of the recording


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"sim_dt_s": 0.0}, "sim_dt_s"),
    ({"horizon_margin_s": 1.0}, "horizon_margin_s"),
    ({"cruise_speed_range_mps": (12.0, 8.0)}, "cruise_speed_range_mps"),
    ({"road_behind_m": 0.0}, "road_behind_m"),
])
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ScenarioConfig(**kwargs)


def test_driver_config_and_duration_validation():
    with pytest.raises(ValueError, match="max_decel_mps2"):
        DriverConfig(max_decel_mps2=0.0)
    with pytest.raises(ValueError, match="duration_s"):
        generate_scenario(0, None, 0.0)
    with pytest.raises(ValueError):
        generate_scenario(0, "flying", 5.0)
