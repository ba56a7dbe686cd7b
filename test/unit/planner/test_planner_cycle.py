"""PlanningCore end to end with a fake engine: observation building, engine failures, selection, staleness."""

from __future__ import annotations

import dataclasses
import math
import threading

import numpy as np
import pytest

from alpamayo_ros.planner.buffers import InsertResult, InvalidOdometryError
from alpamayo_ros.planner.cycle import PlannerConfig, PlanningCore, SkipCounter
from alpamayo_ros.planner.egomotion import HistoryConfig
from alpamayo_ros.planner.selection import SelectionMode
from alpamayo_ros.planner.sync import DEFAULT_CAMERA_NAMES, SyncConfig
from alpamayo_ros.planner.types import (
    NS_PER_S,
    CandidateFlag,
    EgoSample,
    EngineResult,
    Frame,
    Observation,
    Plan,
    PlanSource,
    Skip,
    SkipReason,
)
from alpamayo_ros.planner.validator import NoValidPolicy, ValidatorConfig

MS = 1_000_000
CAMS = DEFAULT_CAMERA_NAMES
START_NS = 100 * NS_PER_S
SPEED_MPS = 5.0
TIMES_S = 0.1 * np.arange(1, 65)  # [T] t0 + 0.1 .. 6.4 s
DRIFT_MPS2 = 0.02  # candidate i drifts left by i * DRIFT_MPS2 * t^2 (a gentle curve, valid)


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.cuda.OutOfMemoryError (matched by name)."""


class FakeEngine:
    """Returns fixed candidates at SPEED_MPS, candidate i drifting left by i * DRIFT_MPS2 * t^2, or raises.

    `nan_samples` get a NaN waypoint; `kinked_samples` jump 2 m sideways at the first waypoint (FIRST_POINT,
    YAW_RATE, ...); `clock` is advanced by `latency_ns` during the call.
    """

    model_id = "fake"

    def __init__(
        self,
        error: BaseException | None = None,
        nan_samples: tuple[int, ...] = (),
        kinked_samples: tuple[int, ...] = (),
        clock: FakeClock | None = None,
        latency_ns: int = 0,
    ) -> None:
        self.error = error
        self.nan_samples = nan_samples
        self.kinked_samples = kinked_samples
        self.clock = clock
        self.latency_ns = latency_ns
        self.calls: list[tuple[Observation, int, int | None]] = []

    def plan(self, obs: Observation, *, num_samples: int, seed: int | None) -> EngineResult:
        self.calls.append((obs, num_samples, seed))
        if self.clock is not None:
            self.clock.now_ns += self.latency_ns
        if self.error is not None:
            raise self.error
        xyz = np.zeros((num_samples, 64, 3), dtype=np.float32)
        xyz[..., 0] = SPEED_MPS * TIMES_S
        xyz[..., 1] = np.arange(num_samples)[:, None] * DRIFT_MPS2 * TIMES_S**2
        rot = np.broadcast_to(np.eye(3, dtype=np.float32), (num_samples, 64, 3, 3)).copy()
        for index in self.nan_samples:
            xyz[index, 5, 1] = np.nan
        for index in self.kinked_samples:
            xyz[index, :, 1] += 2.0
        return EngineResult(xyz, rot, tuple(f"reason {i}" for i in range(num_samples)), {"total": 1.0})


class FakeClock:
    """A settable planning clock, ns."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def _image(camera_index: int, stamp_ns: int) -> np.ndarray:
    image = np.zeros((4, 6, 3), dtype=np.uint8)
    image[..., 0] = camera_index
    image[..., 1] = (stamp_ns // (100 * MS)) % 256  # which 100 ms tick
    return image


def _odometry(stamp_ns: int) -> EgoSample:
    """Driving along +y of the odometry frame (yaw 90 deg) at SPEED_MPS."""
    t_s = (stamp_ns - START_NS) / NS_PER_S
    return EgoSample(
        stamp_ns,
        np.array([10.0, SPEED_MPS * t_s, 0.0]),
        np.array([0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)]),
        np.array([SPEED_MPS, 0.0, 0.0]),
    )


def _feed(core: PlanningCore, start_ns: int, end_ns: int) -> None:
    """Cameras at 10 Hz and odometry at 50 Hz over [start_ns, end_ns]."""
    for stamp_ns in range(start_ns, end_ns + 1, 20 * MS):
        core.add_odometry(_odometry(stamp_ns))
        if (stamp_ns - START_NS) % (100 * MS) == 0:
            for index, name in enumerate(CAMS):
                core.add_frame(name, Frame(stamp_ns, _image(index, stamp_ns)))


def _config(**kwargs: object) -> PlannerConfig:
    return PlannerConfig(**{"num_samples": 3, "seed": 7, **kwargs})


def _ready_core(**kwargs: object) -> PlanningCore:
    core = PlanningCore(_config(**kwargs))
    _feed(core, START_NS, START_NS + 2 * NS_PER_S)
    return core


def _observation(core: PlanningCore, now_ns: int) -> Observation:
    obs = core.build_observation(now_ns)
    assert isinstance(obs, Observation), obs
    return obs


def test_end_to_end_plan() -> None:
    core = _ready_core(selection_mode=SelectionMode.MEDOID)
    t0_ns = START_NS + 2 * NS_PER_S
    obs = _observation(core, t0_ns + 50 * MS)
    assert obs.t0_ns == t0_ns and obs.camera_names == CAMS
    assert [stack.shape for stack in obs.images] == [(4, 4, 6, 3)] * 4
    np.testing.assert_array_equal(obs.frame_stamps_ns[0], t0_ns + np.array([-300, -200, -100, 0]) * MS)
    np.testing.assert_array_equal(obs.images[2][:, 0, 0, 0], [2, 2, 2, 2])
    np.testing.assert_array_equal(obs.images[2][:, 0, 0, 1], (obs.frame_stamps_ns[2] // (100 * MS)) % 256)
    # Straight ahead in the ego frame, although the odometry frame has the car driving along +y.
    np.testing.assert_allclose(obs.history_xyz[:, 0], SPEED_MPS * 0.1 * np.arange(-15, 1), atol=1e-5)
    np.testing.assert_allclose(obs.history_xyz[:, 1:], 0.0, atol=1e-5)
    np.testing.assert_allclose(obs.t0_position, [10.0, 10.0, 0.0])
    assert obs.speed_mps == pytest.approx(SPEED_MPS)

    engine = FakeEngine()
    plan = core.run(obs, engine)
    assert isinstance(plan, Plan)
    assert engine.calls == [(obs, 3, 7)]
    assert plan.selected_index == 1  # drifts 0, 1, 2 x DRIFT: the medoid is 1
    np.testing.assert_array_equal(plan.flags, np.zeros(3, dtype=np.uint32))
    drift_m = DRIFT_MPS2 * np.mean(TIMES_S**2)  # mean distance between neighbouring candidates
    np.testing.assert_allclose(plan.scores, np.array([-1.5, -1.0, -1.5]) * drift_m, rtol=1e-5)
    assert plan.observation is obs
    assert plan.source is PlanSource.NEW and plan.skip is None
    assert plan.validation is not None and plan.validation.check("plan_age").limit == math.inf  # no clock


def test_non_finite_candidate_is_flagged_and_never_selected() -> None:
    core = _ready_core(selection_mode=SelectionMode.FIRST)
    obs = _observation(core, START_NS + 2 * NS_PER_S)
    plan = core.run(obs, FakeEngine(nan_samples=(0,)))
    assert isinstance(plan, Plan)
    np.testing.assert_array_equal(plan.flags, [int(CandidateFlag.NON_FINITE), 0, 0])
    assert plan.flags.dtype == np.uint32
    assert plan.selected_index == 1 and np.isneginf(plan.scores[0])


def test_all_candidates_non_finite_is_no_valid_candidate() -> None:
    core = _ready_core()
    obs = _observation(core, START_NS + 2 * NS_PER_S)
    result = core.run(obs, FakeEngine(nan_samples=(0, 1, 2)))
    assert result == Skip(
        SkipReason.NO_VALID_CANDIDATE, "all 3 candidates flagged: non_finite 3/3 (worst 1 > 0 values)"
    )
    assert result.validation is not None
    np.testing.assert_array_equal(result.validation.flags, [int(CandidateFlag.NON_FINITE)] * 3)


@pytest.mark.parametrize(
    ("error", "reason", "detail"),
    [
        (ValueError("bad prompt"), SkipReason.MODEL_ERROR, "ValueError: bad prompt"),
        (OutOfMemoryError("CUDA OOM"), SkipReason.OUT_OF_MEMORY, "OutOfMemoryError: CUDA OOM"),
        (MemoryError(), SkipReason.OUT_OF_MEMORY, "MemoryError: "),
        (RuntimeError("CUDA out of memory."), SkipReason.OUT_OF_MEMORY, "RuntimeError: CUDA out of memory"),
    ],
)
def test_engine_errors_become_skips(error: Exception, reason: SkipReason, detail: str) -> None:
    core = _ready_core()
    result = core.run(_observation(core, START_NS + 2 * NS_PER_S), FakeEngine(error=error))
    assert isinstance(result, Skip) and result.reason is reason
    assert result.detail.startswith(detail)


def test_wrong_result_shape_is_model_error() -> None:
    class ShortEngine(FakeEngine):
        def plan(self, obs: Observation, *, num_samples: int, seed: int | None) -> EngineResult:
            return super().plan(obs, num_samples=num_samples - 1, seed=seed)

    core = _ready_core()
    result = core.run(_observation(core, START_NS + 2 * NS_PER_S), ShortEngine())
    assert isinstance(result, Skip) and result.reason is SkipReason.MODEL_ERROR
    assert "expected [3, T, 3]" in result.detail


def test_same_t0_is_planned_once() -> None:
    core = _ready_core()
    t0_ns = START_NS + 2 * NS_PER_S
    obs = _observation(core, t0_ns)
    assert isinstance(core.run(obs, FakeEngine(error=ValueError("x"))), Skip)  # failed, but t0 is used
    again = core.build_observation(t0_ns + 10 * MS)
    assert isinstance(again, Skip) and again.reason is SkipReason.STALE_DUPLICATE
    rerun = core.run(obs, FakeEngine())
    assert isinstance(rerun, Skip) and rerun.reason is SkipReason.STALE_DUPLICATE
    _feed(core, t0_ns + 20 * MS, t0_ns + 100 * MS)
    assert _observation(core, t0_ns + 100 * MS).t0_ns == t0_ns + 100 * MS


def test_old_input_is_stale() -> None:
    core = _ready_core(max_input_age_s=0.5)
    t0_ns = START_NS + 2 * NS_PER_S
    assert isinstance(core.build_observation(t0_ns + 500 * MS), Observation)
    result = core.build_observation(t0_ns + 501 * MS)
    assert result == Skip(SkipReason.INPUT_STALE, "t0 is 501 ms old (max 500 ms)")


def test_skip_reasons_from_sync_and_history_pass_through() -> None:
    core = PlanningCore(_config())
    assert core.build_observation(START_NS).reason is SkipReason.NO_IMAGES
    for index, name in enumerate(CAMS):
        for k in range(4):
            stamp_ns = START_NS + k * 100 * MS
            core.add_frame(name, Frame(stamp_ns, _image(index, stamp_ns)))
    result = core.build_observation(START_NS + 300 * MS)
    assert result == Skip(SkipReason.NO_ODOMETRY, "no odometry received")
    core.add_odometry(_odometry(START_NS + 300 * MS))
    assert core.build_observation(START_NS + 300 * MS).reason is SkipReason.HISTORY_INCOMPLETE


def test_time_jump_backwards_resets_everything() -> None:
    core = _ready_core()
    t0_ns = START_NS + 2 * NS_PER_S
    assert isinstance(core.run(_observation(core, t0_ns), FakeEngine()), Plan)
    loop_ns = START_NS - 50 * NS_PER_S  # the bag loops back
    assert core.add_frame(CAMS[0], Frame(loop_ns, _image(0, loop_ns))) is InsertResult.TIME_JUMP
    assert core.time_jumps == 1
    stamps = core.newest_stamps_ns()
    assert stamps[CAMS[0]] == loop_ns and stamps[CAMS[1]] is None and stamps["odometry"] is None
    _feed(core, loop_ns, loop_ns + 2 * NS_PER_S)
    assert core.time_jumps == 1  # every other stream starts on the new time line without another reset
    obs = _observation(core, loop_ns + 2 * NS_PER_S)  # not a STALE_DUPLICATE of the earlier, larger t0
    assert obs.t0_ns == loop_ns + 2 * NS_PER_S


def test_odometry_time_jump_resets_and_keeps_the_sample() -> None:
    core = _ready_core()
    loop_ns = START_NS - 10 * NS_PER_S
    assert core.add_odometry(_odometry(loop_ns)) is InsertResult.TIME_JUMP
    assert core.newest_stamps_ns() == {**dict.fromkeys(CAMS), "odometry": loop_ns}


def test_reset_clears_buffers() -> None:
    core = _ready_core()
    core.reset()
    assert set(core.newest_stamps_ns().values()) == {None}
    assert core.build_observation(START_NS).reason is SkipReason.NO_IMAGES
    assert core.time_jumps == 0


def test_bad_inputs_are_rejected() -> None:
    core = PlanningCore(_config())
    with pytest.raises(ValueError, match="unknown camera 'camera_rear'"):
        core.add_frame("camera_rear", Frame(0, np.zeros((2, 2, 3), dtype=np.uint8)))
    with pytest.raises(ValueError, match=r"not \[H, W, 3\] uint8"):
        core.add_frame(CAMS[0], Frame(0, np.zeros((2, 2), dtype=np.uint8)))
    nan_odometry = EgoSample(0, np.array([np.nan, 0.0, 0.0]), np.array([0.0, 0.0, 0.0, 1.0]))
    with pytest.raises(InvalidOdometryError, match="non-finite position"):
        core.add_odometry(nan_odometry)


def test_concurrent_producers_and_planner() -> None:
    core = PlanningCore(_config(frame_buffer_capacity=32, max_input_age_s=1e6))
    errors: list[BaseException] = []
    lockstep = threading.Barrier(5)  # keeps the producers within one tick of each other, as real sensors are

    def produce(camera_index: int) -> None:
        try:
            for k in range(200):
                stamp_ns = START_NS + k * 100 * MS
                if camera_index < 0:
                    for j in range(5):
                        core.add_odometry(_odometry(stamp_ns + 100 * MS + j * 20 * MS))  # runs ahead
                else:
                    core.add_frame(CAMS[camera_index], Frame(stamp_ns, _image(camera_index, stamp_ns)))
                lockstep.wait()
        except BaseException as error:  # reported to the main thread
            errors.append(error)
            lockstep.abort()

    threads = [threading.Thread(target=produce, args=(index,)) for index in (-1, 0, 1, 2, 3)]
    for thread in threads:
        thread.start()
    observations = 0
    while any(thread.is_alive() for thread in threads):
        obs = core.build_observation(START_NS + 1000 * NS_PER_S)
        if isinstance(obs, Observation):
            observations += 1
            for index, stack in enumerate(obs.images):
                ticks = (obs.frame_stamps_ns[index] // (100 * MS)) % 256
                np.testing.assert_array_equal(stack[:, 0, 0, 1], ticks)  # images match their stamps
                assert np.all(np.diff(obs.frame_stamps_ns[index]) == 100 * MS)
    for thread in threads:
        thread.join()
    assert not errors
    assert observations > 0
    final = core.build_observation(START_NS + 40 * NS_PER_S)
    assert isinstance(final, Observation) and final.t0_ns == START_NS + 199 * 100 * MS


def test_skip_counter_is_thread_safe() -> None:
    counter = SkipCounter()

    def count() -> None:
        for _ in range(2000):
            counter.count(SkipReason.BUSY)
            counter.count(SkipReason.INPUT_STALE)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    snapshot = counter.snapshot()
    assert snapshot[SkipReason.BUSY] == 8000 and snapshot[SkipReason.INPUT_STALE] == 8000
    assert list(snapshot) == list(SkipReason) and snapshot[SkipReason.MODEL_ERROR] == 0
    assert counter.total == 16000


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 0}, "num_samples must be >= 1, got 0"),
        ({"max_input_age_s": 0.0}, "max_input_age_s"),
        ({"frame_buffer_capacity": 3}, "frame_buffer_capacity 3"),
        ({"odometry_horizon_s": 1.5}, "odometry_horizon_s 1.5 must exceed"),
        ({"time_jump_threshold_s": -1.0}, "time_jump_threshold_s"),
        ({"waypoint_dt_s": 0.0}, "waypoint_dt_s"),
        ({"selection_mode": "first"}, "selection_mode"),
        ({"validator": None}, "validator must be a ValidatorConfig"),
        ({"no_valid_policy": "stop_publishing"}, "no_valid_policy must be a NoValidPolicy"),
        ({"publish_stop_trajectory": 1}, "publish_stop_trajectory must be a bool"),
        ({"stop_decel_mps2": 0.0}, "stop_decel_mps2 must be finite and > 0, got 0.0"),
        ({"stop_decel_mps2": math.inf}, "stop_decel_mps2"),
        ({"stop_num_waypoints": 0}, "stop_num_waypoints must be >= 1, got 0"),
    ],
)
def test_planner_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PlannerConfig(**kwargs)


def test_config_composes_sub_configs() -> None:
    config = PlannerConfig(sync=SyncConfig(tolerance_s=0.05), history=HistoryConfig(num_poses=8))
    core = PlanningCore(config)
    assert core.config.sync.tolerance_s == 0.05 and core.config.history.num_poses == 8


def test_reconfigure_keeps_buffers_and_rejects_structural_changes():
    import dataclasses

    from alpamayo_ros.planner.cycle import PlannerConfig, PlanningCore
    from alpamayo_ros.planner.selection import SelectionMode
    from alpamayo_ros.planner.types import Frame

    core = PlanningCore(PlannerConfig())
    core.add_frame("camera_front_wide_120fov", Frame(1_000_000_000, np.zeros((4, 4, 3), np.uint8)))
    core.reconfigure(dataclasses.replace(core.config, selection_mode=SelectionMode.MEDOID, num_samples=3))
    assert core.config.num_samples == 3 and core.config.selection_mode is SelectionMode.MEDOID
    assert core.newest_stamps_ns()["camera_front_wide_120fov"] == 1_000_000_000
    with pytest.raises(ValueError, match="frame_buffer_capacity"):
        core.reconfigure(dataclasses.replace(core.config, frame_buffer_capacity=32))
    assert core.config.frame_buffer_capacity == 16


# ---------------------------------------------------------------- validation and the no-valid policies

T0_NS = START_NS + 2 * NS_PER_S


def _next_observation(core: PlanningCore, t0_ns: int) -> Observation:
    """Feed the last 0.9 s of inputs up to t0_ns (< time_jump_threshold_s) and observe at t0_ns."""
    _feed(core, t0_ns - 900 * MS, t0_ns)
    return _observation(core, t0_ns)


def test_validator_flags_are_never_selected() -> None:
    core = _ready_core(selection_mode=SelectionMode.MEDOID)  # the medoid of 0, 1, 2 would be 1
    plan = core.run(_observation(core, T0_NS), FakeEngine(kinked_samples=(1,)))
    assert isinstance(plan, Plan) and plan.source is PlanSource.NEW
    assert plan.flags[0] == 0 and plan.flags[2] == 0
    assert plan.flags[1] & CandidateFlag.FIRST_POINT and plan.flags[1] & CandidateFlag.YAW_RATE
    assert plan.selected_index in (0, 2) and np.isneginf(plan.scores[1])
    assert plan.validation is not None
    assert plan.validation.check("first_point").values[1] == pytest.approx(2.0, abs=1e-3)


def test_plan_age_is_measured_after_inference() -> None:
    core = _ready_core()
    clock = FakeClock(T0_NS + 100 * MS)
    plan = core.run(_observation(core, clock.now_ns), FakeEngine(clock=clock, latency_ns=900 * MS), clock)
    assert isinstance(plan, Plan)  # 1.0 s old: exactly at the limit
    np.testing.assert_allclose(plan.validation.check("plan_age").values, [1.0] * 3)
    clock.now_ns = T0_NS + 200 * MS
    engine = FakeEngine(clock=clock, latency_ns=901 * MS)
    late = core.run(_next_observation(core, T0_NS + 100 * MS), engine, clock)
    assert isinstance(late, Skip) and late.reason is SkipReason.PLAN_TOO_OLD
    assert late.detail == "all 3 candidates flagged: plan_age 3/3 (worst 1 > 1 s)"
    np.testing.assert_array_equal(late.validation.flags, [int(CandidateFlag.PLAN_AGE)] * 3)


def test_stop_publishing_without_and_with_stop_trajectory() -> None:
    core = _ready_core(no_valid_policy=NoValidPolicy.STOP_PUBLISHING)
    assert core.run(_observation(core, T0_NS), FakeEngine()).source is PlanSource.NEW
    obs = _next_observation(core, T0_NS + 100 * MS)
    skip = core.run(obs, FakeEngine(kinked_samples=(0, 1, 2)))
    assert isinstance(skip, Skip) and skip.reason is SkipReason.NO_VALID_CANDIDATE
    assert skip.detail.startswith("all 3 candidates flagged: ") and "first_point 3/3" in skip.detail

    core.reconfigure(dataclasses.replace(core.config, publish_stop_trajectory=True, stop_decel_mps2=2.0))
    obs = _next_observation(core, T0_NS + 200 * MS)
    stop = core.run(obs, FakeEngine(kinked_samples=(0, 1, 2)))
    assert isinstance(stop, Plan) and stop.source is PlanSource.STOP and stop.observation is obs
    assert stop.skip is not None and stop.skip.reason is SkipReason.NO_VALID_CANDIDATE
    assert stop.selected_index == 0 and stop.result.xyz.shape == (1, 64, 3)
    assert stop.result.reasoning == ("fallback stop: no_valid_candidate",)
    # 5 m/s at 2 m/s^2: stops after 2.5 s and 6.25 m, straight ahead.
    np.testing.assert_allclose(stop.result.xyz[0, -1], [6.25, 0.0, 0.0], atol=1e-6)
    np.testing.assert_array_equal(stop.flags, [0])


def test_publish_as_is_picks_among_the_flagged_but_never_a_non_finite_one() -> None:
    core = _ready_core(no_valid_policy=NoValidPolicy.PUBLISH_AS_IS, selection_mode=SelectionMode.FIRST)
    plan = core.run(_observation(core, T0_NS), FakeEngine(nan_samples=(0,), kinked_samples=(1, 2)))
    assert isinstance(plan, Plan) and plan.source is PlanSource.AS_IS
    assert plan.selected_index == 1  # the first finite candidate
    assert plan.skip is not None and plan.skip.reason is SkipReason.NO_VALID_CANDIDATE
    assert plan.flags[0] == CandidateFlag.NON_FINITE and plan.flags[1] & CandidateFlag.FIRST_POINT
    np.testing.assert_array_equal(plan.scores, np.array([-np.inf, -1.0, -2.0], dtype=np.float32))
    all_nan = core.run(_next_observation(core, T0_NS + 100 * MS), FakeEngine(nan_samples=(0, 1, 2)))
    assert isinstance(all_nan, Skip) and all_nan.reason is SkipReason.NO_VALID_CANDIDATE
    errored = core.run(_next_observation(core, T0_NS + 200 * MS), FakeEngine(error=ValueError("x")))
    assert errored == Skip(SkipReason.MODEL_ERROR, "ValueError: x")  # nothing to publish as is


def test_republish_last_valid_within_its_age_then_plan_too_old() -> None:
    core = _ready_core(no_valid_policy=NoValidPolicy.REPUBLISH_LAST_VALID)
    first = _next_observation(core, T0_NS)
    nothing = core.run(first, FakeEngine(kinked_samples=(0, 1, 2)))
    assert isinstance(nothing, Skip) and nothing.reason is SkipReason.NO_VALID_CANDIDATE
    # A 2 m sideways jump at 0.5 m forward: heading atan2(2, 0.5) = 1.33 rad over half of the 2.06 m chord.
    assert nothing.detail.startswith("all 3 candidates flagged: curvature 3/3 (worst 1.29 > 0.3 1/m), ")
    assert nothing.detail.endswith(", first_point 3/3 (worst 2 > 0.5 m); no valid plan to republish")
    valid = core.run(_next_observation(core, T0_NS + 100 * MS), FakeEngine())
    assert isinstance(valid, Plan) and valid.source is PlanSource.NEW
    clock = FakeClock(T0_NS + 1100 * MS)  # the valid plan is exactly 1.0 s old
    again = core.run(_next_observation(core, T0_NS + 1000 * MS), FakeEngine(error=ValueError("x")), clock)
    assert isinstance(again, Plan) and again.source is PlanSource.REPUBLISHED
    assert again.skip == Skip(SkipReason.MODEL_ERROR, "ValueError: x")
    assert again.observation is valid.observation and again.result is valid.result  # unchanged, old t0
    assert again.selected_index == valid.selected_index and again.validation is valid.validation
    clock.now_ns += 1  # now 1 ns too old
    late = core.run(_next_observation(core, T0_NS + 1100 * MS), FakeEngine(kinked_samples=(0, 1, 2)), clock)
    assert isinstance(late, Skip) and late.reason is SkipReason.NO_VALID_CANDIDATE
    assert late.detail.endswith(f"; last valid plan (t0 {T0_NS + 100 * MS} ns) is 1000 ms old (max 1000 ms)")

    core.reconfigure(dataclasses.replace(core.config, publish_stop_trajectory=True))
    stop = core.run(_next_observation(core, T0_NS + 1200 * MS), FakeEngine(error=MemoryError()), clock)
    assert isinstance(stop, Plan) and stop.source is PlanSource.STOP
    assert stop.skip is not None and stop.skip.reason is SkipReason.OUT_OF_MEMORY
    assert "last valid plan" in stop.skip.detail


def test_republish_measures_age_to_t0_without_a_clock_and_forgets_on_reset() -> None:
    core = _ready_core(no_valid_policy=NoValidPolicy.REPUBLISH_LAST_VALID)
    valid = core.run(_observation(core, T0_NS), FakeEngine())
    again = core.run(_next_observation(core, T0_NS + 1000 * MS), FakeEngine(nan_samples=(0, 1, 2)))
    assert isinstance(again, Plan) and again.result is valid.result
    old = core.run(_next_observation(core, T0_NS + 1100 * MS), FakeEngine(nan_samples=(0, 1, 2)))
    assert isinstance(old, Skip) and "1100 ms old" in old.detail
    core.reset()
    _feed(core, T0_NS + 1200 * MS - 2 * NS_PER_S, T0_NS + 1200 * MS)
    fresh = core.run(_observation(core, T0_NS + 1200 * MS), FakeEngine(nan_samples=(0, 1, 2)))
    assert isinstance(fresh, Skip) and fresh.detail.endswith("; no valid plan to republish")


def test_plan_requires_skip_exactly_for_fallbacks() -> None:
    core = _ready_core()
    plan = core.run(_observation(core, T0_NS), FakeEngine())
    with pytest.raises(ValueError, match="skip must be set exactly when source is not NEW"):
        dataclasses.replace(plan, source=PlanSource.STOP)
    with pytest.raises(ValueError, match="source new"):
        dataclasses.replace(plan, skip=Skip(SkipReason.MODEL_ERROR))


def test_reconfigure_changes_validator_thresholds() -> None:
    core = _ready_core()
    disabled = ("first_point_offset_m", "yaw_change_rad", "curvature_1pm", "lateral_accel_mps2",
                "lateral_jerk_mps3", "longitudinal_decel_mps2", "steering_rad", "steering_rate_radps",
                "speed_deviation_mps")
    loose = ValidatorConfig(**{f"max_{name}": math.inf for name in disabled})
    core.reconfigure(dataclasses.replace(core.config, validator=loose))
    plan = core.run(_observation(core, T0_NS), FakeEngine(kinked_samples=(0, 1, 2)))
    assert isinstance(plan, Plan) and plan.source is PlanSource.NEW
    np.testing.assert_array_equal(plan.flags, [0, 0, 0])


def test_a_plan_finished_after_a_reset_is_neither_published_nor_kept_for_republishing():
    """Time went backwards while the engine ran: the plan belongs to a dead time line."""
    from alpamayo_ros.planner.types import Skip, SkipReason

    class ResettingEngine:
        model_id = "resetting"

        def __init__(self, core, inner):
            self.core, self.inner = core, inner

        def plan(self, obs, *, num_samples, seed):
            self.core.reset()
            return self.inner.plan(obs, num_samples=num_samples, seed=seed)

    core = _ready_core(no_valid_policy=NoValidPolicy.REPUBLISH_LAST_VALID)
    obs = _observation(core, START_NS + 2 * NS_PER_S)
    outcome = core.run(obs, ResettingEngine(core, FakeEngine()))
    assert isinstance(outcome, Skip) and outcome.reason is SkipReason.INPUT_STALE
    assert core._last_valid is None
