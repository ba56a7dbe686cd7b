"""PlanningCore end to end with a fake engine: observation building, engine failures, selection, staleness."""

from __future__ import annotations

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
    Skip,
    SkipReason,
)

MS = 1_000_000
CAMS = DEFAULT_CAMERA_NAMES
START_NS = 100 * NS_PER_S
SPEED_MPS = 5.0


class OutOfMemoryError(RuntimeError):
    """Stands in for torch.cuda.OutOfMemoryError (matched by name)."""


class FakeEngine:
    """Returns fixed candidates (lateral offsets 0, 1, 2, ... m on a straight line) or raises."""

    model_id = "fake"

    def __init__(self, error: BaseException | None = None, nan_samples: tuple[int, ...] = ()) -> None:
        self.error = error
        self.nan_samples = nan_samples
        self.calls: list[tuple[Observation, int, int | None]] = []

    def plan(self, obs: Observation, *, num_samples: int, seed: int | None) -> EngineResult:
        self.calls.append((obs, num_samples, seed))
        if self.error is not None:
            raise self.error
        times = 0.1 * np.arange(1, 65, dtype=np.float32)  # [T]
        xyz = np.zeros((num_samples, 64, 3), dtype=np.float32)
        xyz[..., 0] = SPEED_MPS * times
        xyz[..., 1] = np.arange(num_samples, dtype=np.float32)[:, None]
        rot = np.broadcast_to(np.eye(3, dtype=np.float32), (num_samples, 64, 3, 3)).copy()
        for index in self.nan_samples:
            xyz[index, 5, 1] = np.nan
        return EngineResult(xyz, rot, tuple(f"reason {i}" for i in range(num_samples)), {"total": 1.0})


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
    assert plan.selected_index == 1  # lateral offsets 0, 1, 2: the medoid is 1
    np.testing.assert_array_equal(plan.flags, np.zeros(3, dtype=np.uint32))
    np.testing.assert_allclose(plan.scores, [-1.5, -1.0, -1.5])
    assert plan.observation is obs


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
    assert result == Skip(SkipReason.NO_VALID_CANDIDATE, "all 3 candidates flagged (3 non-finite)")


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
