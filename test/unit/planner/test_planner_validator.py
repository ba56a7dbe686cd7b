"""Trajectory validator: each check on crafted trajectories, nominal unicycle plans, standstill jitter, and
the stop trajectory."""

from __future__ import annotations

import dataclasses
import math
import warnings

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alpamayo_ros.planner.types import CandidateFlag
from alpamayo_ros.planner.validator import ValidationReport, ValidatorConfig, stop_trajectory, validate

DT_S = 0.1
T = 64
WHEELBASE_M = ValidatorConfig().wheelbase_m

# Check name -> the ValidatorConfig field of its threshold (an infinite decel switches `length` off).
LIMIT_FIELDS = {
    "spacing": "max_waypoint_spacing_m",
    "curvature": "max_curvature_1pm",
    "yaw_change": "max_yaw_change_rad",
    "lateral_accel": "max_lateral_accel_mps2",
    "lateral_jerk": "max_lateral_jerk_mps3",
    "longitudinal_accel": "max_longitudinal_accel_mps2",
    "longitudinal_decel": "max_longitudinal_decel_mps2",
    "steering": "max_steering_rad",
    "steering_rate": "max_steering_rate_radps",
    "speed_deviation": "max_speed_deviation_mps",
    "first_point": "max_first_point_offset_m",
    "plan_age": "max_plan_age_s",
    "length": "stopping_decel_mps2",
}


def _only(name: str, **overrides: float) -> ValidatorConfig:
    """Every check but `name` (and NON_FINITE) switched off; `name` keeps its default unless overridden."""
    off = {field: math.inf for check, field in LIMIT_FIELDS.items() if check != name}
    return ValidatorConfig(**{**off, **overrides})


def _rot_z(theta: np.ndarray) -> np.ndarray:
    """[..., 3, 3] rotations about z by theta [...]."""
    c, s = np.cos(theta), np.sin(theta)
    rot = np.zeros((*theta.shape, 3, 3))
    rot[..., 0, 0], rot[..., 0, 1], rot[..., 1, 0], rot[..., 1, 1], rot[..., 2, 2] = c, -s, s, c, 1.0
    return rot


def _unicycle(
    v0: float, accel: np.ndarray | float, curvature: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """[T, 3] and [T, 3, 3] poses integrated like the model's action space (action_space.action_to_traj:
    per-step acceleration and curvature, trapezoid positions), with the speed held at 0 once stopped."""
    accel = np.broadcast_to(np.asarray(accel, float), (T,))
    curvature = np.broadcast_to(np.asarray(curvature, float), (T,))
    speed = np.concatenate([[v0], np.maximum(v0 + DT_S * np.cumsum(accel), 0.0)])  # [T+1]
    theta = np.concatenate([[0.0], np.cumsum(curvature * 0.5 * (speed[:-1] + speed[1:]) * DT_S)])  # [T+1]
    vx, vy = speed * np.cos(theta), speed * np.sin(theta)  # [T+1]
    x = np.cumsum(0.5 * DT_S * (vx[:-1] + vx[1:]))  # [T]
    y = np.cumsum(0.5 * DT_S * (vy[:-1] + vy[1:]))  # [T]
    return np.stack([x, y, np.zeros(T)], axis=-1), _rot_z(theta[1:])


def _polyline(start_speed_mps: float, headings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[T, 3] points at a constant speed whose segment j has heading headings[j] (rad); [T, 3, 3]."""
    step = start_speed_mps * DT_S * np.stack([np.cos(headings), np.sin(headings)], axis=-1)  # [T, 2]
    xy = np.cumsum(step, axis=0)
    return np.concatenate([xy, np.zeros((T, 1))], axis=-1), _rot_z(headings)


def _check(
    xyz: np.ndarray, rot: np.ndarray, speed_mps: float, cfg: ValidatorConfig, plan_age_s: float | None = None
) -> ValidationReport:
    """validate() of one candidate [T, 3]."""
    return validate(xyz[None], rot[None], speed_mps, plan_age_s, cfg, DT_S)


def _lateral_ramp(kappa_rate_1pms: float, kappa_max_1pm: float) -> np.ndarray:
    """[T] curvature rising from 0 at kappa_rate_1pms (1/m per s) up to kappa_max_1pm."""
    return np.minimum(kappa_rate_1pms * DT_S * np.arange(T), kappa_max_1pm)


# Name -> (trajectory [T, 3], rotations, measured ego speed m/s, plan age s, worst value measured, rtol).
CRAFTED = {
    "spacing": (*_unicycle(60.0, 0.0, 0.0), 60.0, None, 6.0, 1e-9),  # 60 m/s = 6 m per step
    "curvature": (*_unicycle(1.5, 0.0, 0.4), 1.5, None, 0.4, 1e-3),  # a 2.5 m radius circle at walking pace
    "yaw_change": (*_polyline(10.0, np.where(np.arange(T) < 10, 0.0, 0.6)), 10.0, None, 0.6, 1e-9),  # a kink
    "lateral_accel": (*_unicycle(10.0, 0.0, 0.08), 10.0, None, 8.0, 1e-3),  # 10^2 * 0.08
    "lateral_jerk": (*_unicycle(10.0, 0.0, _lateral_ramp(0.15, 0.15)), 10.0, None, 15.0, 0.02),  # v^2 dk/dt
    "longitudinal_accel": (*_unicycle(10.0, 5.0, 0.0), 10.0, None, 5.0, 1e-9),
    "longitudinal_decel": (*_unicycle(20.0, -9.0, 0.0), 20.0, None, 9.0, 1e-9),
    "steering": (*_unicycle(2.0, 0.0, 0.28), 2.0, None, math.atan(WHEELBASE_M * 0.28), 1e-3),
    "steering_rate": (*_unicycle(3.0, 0.0, _lateral_ramp(0.4, 0.2)), 3.0, None, WHEELBASE_M * 0.4, 0.03),
    "speed_deviation": (*_unicycle(10.0, 0.0, 0.0), 13.0, None, 3.0, 1e-9),  # plan 10 m/s, ego 13 m/s
    "first_point": (*_unicycle(10.0, 0.0, 0.0), 10.0, None, 0.7, 1e-9),  # shifted 0.7 m left below
    "length": (*_unicycle(20.0, -20.0, 0.0), 20.0, None, 10.0, 1e-9),  # stops within 10 m < 400/16 - 2 m
    "plan_age": (*_unicycle(10.0, 0.0, 0.0), 10.0, 1.5, 1.5, 1e-9),
}
CRAFTED["first_point"][0][:, 1] += 0.7


@pytest.mark.parametrize("name", list(CRAFTED))
def test_each_check_triggers_on_its_crafted_trajectory(name: str) -> None:
    xyz, rot, speed_mps, plan_age_s, worst, rtol = CRAFTED[name]
    report = _check(xyz, rot, speed_mps, _only(name), plan_age_s)
    result = report.check(name)
    assert result.values[0] == pytest.approx(worst, rel=rtol)
    assert result.failed.tolist() == [True]
    assert report.flags.tolist() == [int(result.flag)]  # exactly its own bit
    defaults = _check(xyz, rot, speed_mps, ValidatorConfig(), plan_age_s)
    assert defaults.flags[0] & result.flag  # the default thresholds catch it too


@pytest.mark.parametrize("name", [name for name in CRAFTED if name != "length"])
def test_each_check_passes_just_below_its_threshold(name: str) -> None:
    xyz, rot, speed_mps, plan_age_s, worst, _ = CRAFTED[name]
    measured = _check(xyz, rot, speed_mps, _only(name), plan_age_s).check(name).values[0]
    loose = _only(name, **{LIMIT_FIELDS[name]: measured * (1 + 1e-9)})
    assert _check(xyz, rot, speed_mps, loose, plan_age_s).flags.tolist() == [0]


def test_length_is_compared_with_the_stopping_distance() -> None:
    xyz, rot, *_ = CRAFTED["length"]
    result = _check(xyz, rot, 20.0, _only("length")).check("length")
    assert result.lower_bound and result.limit == pytest.approx(20.0**2 / (2 * 8.0) - 2.0)
    loose = _only("length", stopping_margin_m=15.0)
    assert _check(xyz, rot, 20.0, loose).flags.tolist() == [0]  # 10 m >= 25 - 15 m
    standing = np.zeros((T, 3))
    assert _check(standing, rot, 0.0, ValidatorConfig()).flags.tolist() == [0]  # 0 m >= 0 - 2 m


NOMINAL = {
    "standing": _unicycle(0.0, 0.0, 0.0),
    "straight_10": _unicycle(10.0, 0.0, 0.0),
    "straight_33": _unicycle(33.0, 0.0, 0.0),
    "gentle_curve": _unicycle(15.0, 0.0, 0.01),  # 2.25 m/s^2 lateral
    "tight_low_speed_turn": _unicycle(3.0, 0.0, 0.2),  # steering atan(2.79 * 0.2) = 0.51 rad
    "brake_to_stop": _unicycle(15.0, -3.0, 0.0),
    "hard_brake_to_stop": _unicycle(20.0, -7.5, 0.0),
    "start_from_stop": _unicycle(0.0, 2.0, 0.0),
    "lane_change": _unicycle(20.0, 0.0, 0.005 * np.sin(2 * np.pi * 0.25 * DT_S * np.arange(T))),
}


@pytest.mark.parametrize("name", list(NOMINAL))
def test_nominal_trajectories_pass(name: str) -> None:
    xyz, rot = NOMINAL[name]
    speed_mps = float(np.linalg.norm(xyz[0, :2])) / DT_S  # the ego drives at the plan's initial speed
    report = _check(xyz, rot, speed_mps, ValidatorConfig(), plan_age_s=0.3)
    assert report.flags.tolist() == [0], report.summary()


def test_random_unicycle_plans_within_realistic_limits_pass() -> None:
    """Accel in [-3, 1.5] m/s^2, curvature a sinusoid bounded so that lateral accel <= 3 m/s^2, v^2 dk/dt <= 5
    m/s^3 and the steering rate <= 0.5 rad/s: all valid under the defaults."""
    rng = np.random.default_rng(0)
    trajectories, speeds = [], []
    for _ in range(300):
        v0, accel = rng.uniform(0.0, 30.0), rng.uniform(-3.0, 1.5)
        v_max = max(v0 + 6.4 * accel, v0, 0.5)
        omega = 2 * np.pi * rng.uniform(0.05, 0.5)  # rad/s
        amplitude = rng.uniform(0.0, 1.0) * min(
            0.2, 3.0 / v_max**2, 5.0 / (v_max**2 * omega), 0.5 / (WHEELBASE_M * omega)
        )
        curvature = amplitude * np.sin(omega * DT_S * np.arange(T) + rng.uniform(0, 2 * np.pi))
        trajectories.append(_unicycle(v0, accel, curvature))
        speeds.append(v0)
    xyz = np.stack([xyz for xyz, _ in trajectories])  # [S, T, 3]
    rot = np.stack([rot for _, rot in trajectories])  # [S, T, 3, 3]
    for index, speed_mps in enumerate(speeds):  # one measured speed per cycle
        report = validate(xyz[index : index + 1], rot[index : index + 1], speed_mps, 0.2, ValidatorConfig())
        assert report.flags.tolist() == [0], (index, report.summary())


def test_standstill_jitter_is_not_curvature_or_yaw() -> None:
    rng = np.random.default_rng(1)
    jitter = rng.normal(0.0, 0.005, (8, T, 3))  # [S, T, 3] 5 mm around the origin
    creep = jitter + np.stack([0.3 * DT_S * np.arange(1, T + 1), np.zeros(T), np.zeros(T)], -1)  # 0.3 m/s
    xyz = np.concatenate([jitter, creep])  # [16, T, 3]
    rot = np.broadcast_to(np.eye(3), (16, T, 3, 3))
    report = validate(xyz, rot, 0.0, 0.2, ValidatorConfig())
    assert report.flags.tolist() == [0] * 16, report.summary()
    for name in ("curvature", "yaw_change", "lateral_accel", "lateral_jerk", "steering", "steering_rate"):
        np.testing.assert_array_equal(report.check(name).values, 0.0)
    # Without the minimum segment length the same jitter reads as wild curvature.
    unguarded = validate(xyz, rot, 0.0, 0.2, ValidatorConfig(min_segment_length_m=0.0))
    assert np.all(unguarded.flags & CandidateFlag.CURVATURE)


def test_turn_at_the_origin_uses_the_ego_heading() -> None:
    # A 10 m radius circle tangent to the ego heading: the first chord already measures the curvature.
    xyz, rot = _unicycle(5.0, 0.0, 0.1)
    report = _check(xyz, rot, 5.0, ValidatorConfig())
    assert report.check("curvature").values[0] == pytest.approx(0.1, rel=1e-3)
    # The same points rotated 0.3 rad to the left: the first chord turns by 0.3 rad + half the arc angle
    # per step (0.1 1/m * 0.5 m / 2) at the origin.
    turned = xyz @ _rot_z(np.array(0.3)).T
    yaw_change = _check(turned, rot, 5.0, ValidatorConfig()).check("yaw_change").values[0]
    assert yaw_change == pytest.approx(0.325, abs=1e-4)


def test_plan_age_none_is_not_checked_and_applies_to_every_candidate() -> None:
    xyz, rot = NOMINAL["straight_10"]
    both = (np.stack([xyz, xyz]), np.stack([rot, rot]))
    unchecked = validate(*both, 10.0, None, ValidatorConfig(max_plan_age_s=0.1))
    assert unchecked.flags.tolist() == [0, 0] and unchecked.check("plan_age").limit == math.inf
    old = validate(*both, 10.0, 0.25, ValidatorConfig(max_plan_age_s=0.1))
    assert old.flags.tolist() == [int(CandidateFlag.PLAN_AGE)] * 2
    assert old.summary() == "plan_age 2/2 (worst 0.25 > 0.1 s)"


def test_report_lists_every_check_in_flag_order() -> None:
    xyz, rot = NOMINAL["straight_10"]
    report = _check(xyz, rot, 10.0, ValidatorConfig())
    names = [result.name for result in report.checks]
    assert names == [
        "non_finite", "spacing", "curvature", "yaw_change", "lateral_accel", "lateral_jerk",
        "longitudinal_accel", "longitudinal_decel", "steering", "steering_rate", "speed_deviation",
        "first_point", "length", "plan_age",
    ]
    assert {result.flag for result in report.checks} == set(CandidateFlag)
    assert report.check("length").values[0] == pytest.approx(64.0)
    assert report.summary() == ""
    with pytest.raises(KeyError, match="no check named 'jerk'"):
        report.check("jerk")


def test_huge_finite_coordinates_fail_instead_of_passing_as_nan() -> None:
    xyz = np.zeros((1, T, 3))
    xyz[0, 3, 0], xyz[0, 4, 0] = 1e308, -1e308  # differences overflow to inf, inf * 0 to nan
    rot = np.broadcast_to(np.eye(3), (1, T, 3, 3))
    assert validate(xyz, rot, 0.0, None, _only("spacing")).flags.tolist() == [int(CandidateFlag.SPACING)]
    report = validate(xyz, rot, 0.0, None, _only("lateral_accel"))
    assert np.isnan(report.check("lateral_accel").values[0])
    assert report.flags.tolist() == [int(CandidateFlag.LATERAL_ACCEL)]
    assert validate(xyz, rot, 0.0, None, _only("lateral_accel", max_lateral_accel_mps2=math.inf)).flags == 0


def test_measured_speed_enters_only_speed_deviation_and_first_point() -> None:
    xyz, rot = _unicycle(10.0, 0.0, 0.02)
    exact = _check(xyz, rot, 10.0, ValidatorConfig())
    off = _check(xyz, rot, 11.5, ValidatorConfig())
    for result, off_result in zip(exact.checks, off.checks):
        if result.name in ("speed_deviation", "first_point", "length"):  # length: the limit moves
            continue
        np.testing.assert_array_equal(result.values, off_result.values, err_msg=result.name)
    assert off.check("speed_deviation").values[0] == pytest.approx(1.5, abs=1e-3)


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    num_samples=st.integers(0, 4),
    num_points=st.integers(1, 6),
    speed_mps=st.floats(0.0, 1e3),
    plan_age_s=st.none() | st.floats(-10.0, 10.0),
)
def test_validate_never_raises_and_flags_exactly_the_non_finite_rows(
    data: st.DataObject, num_samples: int, num_points: int, speed_mps: float, plan_age_s: float | None
) -> None:
    elements = st.floats(allow_nan=True, allow_infinity=True, width=32)
    xyz = data.draw(hnp.arrays(np.float32, (num_samples, num_points, 3), elements=elements))
    rot = data.draw(hnp.arrays(np.float32, (num_samples, num_points, 3, 3), elements=elements))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from overflow or 0 / 0 either
        report = validate(xyz, rot, speed_mps, plan_age_s, ValidatorConfig())
    non_finite = ~(np.isfinite(xyz).all(axis=(1, 2)) & np.isfinite(rot).all(axis=(1, 2, 3)))  # [S]
    assert report.flags.dtype == np.uint32 and report.flags.shape == (num_samples,)
    np.testing.assert_array_equal((report.flags & CandidateFlag.NON_FINITE) != 0, non_finite)
    np.testing.assert_array_equal(report.flags[non_finite], int(CandidateFlag.NON_FINITE))  # no other bit
    assert all(result.values.shape == (num_samples,) for result in report.checks)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"wheelbase_m": 0.0}, "wheelbase_m must be finite and > 0, got 0.0"),
        ({"wheelbase_m": math.inf}, "wheelbase_m"),
        ({"min_segment_length_m": -0.1}, "min_segment_length_m must be finite and >= 0, got -0.1"),
        ({"stopping_margin_m": math.inf}, "stopping_margin_m"),
        ({"max_lateral_accel_mps2": 0.0}, r"max_lateral_accel_mps2 must be > 0 \(inf disables the check\)"),
        ({"max_plan_age_s": -1.0}, "max_plan_age_s must be > 0"),
        ({"stopping_decel_mps2": 0.0}, "stopping_decel_mps2 must be > 0"),
        ({"max_curvature_1pm": math.nan}, "max_curvature_1pm must be a number, got nan"),
        ({"max_steering_rad": True}, "max_steering_rad must be a number, got True"),
        ({"max_steering_rad": "0.6"}, "max_steering_rad must be a number"),
    ],
)
def test_validator_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ValidatorConfig(**kwargs)


def test_validate_rejects_bad_arguments() -> None:
    xyz, rot = np.zeros((2, T, 3)), np.zeros((2, T, 3, 3))
    cfg = ValidatorConfig()
    with pytest.raises(ValueError, match=r"xyz must be \[S, T, 3\] with T >= 1, got \(2, 0, 3\)"):
        validate(np.zeros((2, 0, 3)), np.zeros((2, 0, 3, 3)), 0.0, None, cfg)
    with pytest.raises(ValueError, match=r"rot must be \(2, 64, 3, 3\)"):
        validate(xyz, rot[:1], 0.0, None, cfg)
    with pytest.raises(ValueError, match="speed_mps must be finite and >= 0, got -1.0"):
        validate(xyz, rot, -1.0, None, cfg)
    with pytest.raises(ValueError, match="plan_age_s must be finite or None, got nan"):
        validate(xyz, rot, 0.0, math.nan, cfg)
    with pytest.raises(ValueError, match="dt_s must be > 0, got 0.0"):
        validate(xyz, rot, 0.0, None, cfg, dt_s=0.0)


@pytest.mark.parametrize("speed_mps", [0.0, 0.4, 5.0, 15.0, 30.0])
def test_stop_trajectory_brakes_monotonically_to_rest(speed_mps: float) -> None:
    xyz, rot = stop_trajectory(speed_mps, 2.5, T, DT_S)
    assert xyz.shape == (T, 3) and rot.shape == (T, 3, 3) and xyz.dtype == rot.dtype == np.float32
    assert np.all(np.diff(xyz[:, 0]) >= 0) and xyz[0, 0] >= 0
    np.testing.assert_array_equal(xyz[:, 1:], 0.0)
    np.testing.assert_array_equal(rot, np.broadcast_to(np.eye(3), (T, 3, 3)))
    stop_s = speed_mps / 2.5
    if stop_s <= (T - 2) * DT_S:  # at rest over the last steps, after v^2 / (2 a)
        assert xyz[-1, 0] == xyz[-2, 0] == pytest.approx(speed_mps**2 / 5.0)
    else:  # still braking at the horizon: v t - a t^2 / 2
        assert xyz[-1, 0] == pytest.approx(speed_mps * 6.4 - 1.25 * 6.4**2)
    # The fallback itself passes the validator at the ego's speed.
    assert _check(xyz.astype(float), rot, speed_mps, ValidatorConfig()).flags.tolist() == [0]


def test_stop_trajectory_exact_values_and_bad_arguments() -> None:
    xyz, _ = stop_trajectory(2.0, 4.0, 8, 0.1)  # stops after 0.5 s and 0.5 m
    np.testing.assert_allclose(xyz[:, 0], [0.18, 0.32, 0.42, 0.48, 0.5, 0.5, 0.5, 0.5], atol=1e-7)
    for args, match in [
        ((-1.0, 2.0, T, DT_S), "speed_mps must be finite and >= 0"),
        ((1.0, 0.0, T, DT_S), "decel_mps2 must be finite and > 0, got 0.0"),
        ((1.0, 2.0, 0, DT_S), "num_points must be >= 1, got 0"),
        ((1.0, 2.0, T, 0.0), "dt_s must be > 0, got 0.0"),
    ]:
        with pytest.raises(ValueError, match=match):
            stop_trajectory(*args)


def test_configs_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ValidatorConfig().max_curvature_1pm = 1.0  # type: ignore[misc]
