"""One planning cycle without ROS: buffers in, Observation out, engine call, Plan or Skip(reason) back.

Threading: `add_frame` / `add_odometry` run on subscriber threads while `build_observation` and `run` run on
one worker thread. A single lock guards the buffers and the last planned t0; `build_observation` only picks
frame references and interpolates poses under it, and copies the images after releasing it (frames are never
modified once added, so the references stay valid even if the buffers evict them).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from alpamayo_ros.planner.buffers import FrameBuffer, InsertResult, OdometryBuffer
from alpamayo_ros.planner.egomotion import HistoryConfig, build_history
from alpamayo_ros.planner.selection import SelectionMode, select
from alpamayo_ros.planner.sync import SyncConfig, select_frames
from alpamayo_ros.planner.types import (
    NS_PER_S,
    EgoSample,
    EngineResult,
    Frame,
    Observation,
    Plan,
    PlanSource,
    Skip,
    SkipReason,
)
from alpamayo_ros.planner.validator import NoValidPolicy, ValidatorConfig, stop_trajectory, validate

logger = logging.getLogger(__name__)


class InferenceEngine(Protocol):
    """What the planning core needs from a model engine (reference or fast)."""

    @property
    def model_id(self) -> str:
        """Checkpoint / model identifier for outputs and diagnostics."""
        ...

    def plan(self, obs: Observation, *, num_samples: int, seed: int | None) -> EngineResult:
        """Sample `num_samples` trajectories for `obs`; `seed` makes the sampling reproducible."""
        ...


@dataclass(frozen=True)
class PlannerConfig:
    """Settings of the planning core (the node builds this from its `sync.*` / `planning.*` parameters)."""

    # Cameras, frame offsets and matching tolerance.
    sync: SyncConfig = field(default_factory=SyncConfig)
    # Egomotion history sampling.
    history: HistoryConfig = field(default_factory=HistoryConfig)
    # How the published trajectory is chosen among the samples: the medoid is the samples' consensus.
    selection_mode: SelectionMode = SelectionMode.MEDOID
    # Trajectories sampled per cycle (upstream samples 1; several let the selection drop outlying samples).
    num_samples: int = 6
    # Sampling seed passed to the engine every cycle, or None for fresh randomness.
    seed: int | None = None
    # Spacing of the model's output waypoints, s (MODEL.md: 64 poses at t0 + 0.1 .. 6.4 s); used by selection.
    waypoint_dt_s: float = 0.1
    # A t0 older than this relative to the planning time is a skip (INPUT_STALE), s.
    max_input_age_s: float = 0.5
    # Frames kept per camera; must span frame_offsets_s plus arrival jitter at the camera rate
    # (16 = 0.53 s at 30 Hz; ~100 MB per camera at 1080x1920).
    frame_buffer_capacity: int = 16
    # Odometry kept, s; must exceed the history span (1.5 s) plus how far t0 lags the newest odometry.
    odometry_horizon_s: float = 3.0
    # A stamp this much older than the newest of its stream means time went backwards (bag loop, sim
    # reset): every buffer is cleared. Must exceed the normal out-of-order arrival of one stream, s.
    time_jump_threshold_s: float = 1.0
    # Trajectory checks (thresholds, wheelbase, maximum plan age); flagged candidates are never selected.
    validator: ValidatorConfig = field(default_factory=ValidatorConfig)
    # What a cycle without a valid new plan publishes (also after an engine failure; AS_IS needs a result).
    no_valid_policy: NoValidPolicy = NoValidPolicy.STOP_PUBLISHING
    # When the policy leaves nothing to publish: publish a straight-ahead stop trajectory instead.
    publish_stop_trajectory: bool = False
    # Constant deceleration of the stop trajectory, m/s^2 (comfortable braking).
    stop_decel_mps2: float = 2.5
    # Waypoints of the stop trajectory (the model's T, MODEL.md: 64).
    stop_num_waypoints: int = 64

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if not isinstance(self.selection_mode, SelectionMode):
            raise ValueError(f"selection_mode must be a SelectionMode, got {self.selection_mode!r}")
        if not self.waypoint_dt_s > 0:
            raise ValueError(f"waypoint_dt_s must be > 0, got {self.waypoint_dt_s}")
        if not self.max_input_age_s > 0:
            raise ValueError(f"max_input_age_s must be > 0, got {self.max_input_age_s}")
        if self.frame_buffer_capacity < len(self.sync.frame_offsets_s):
            raise ValueError(
                f"frame_buffer_capacity {self.frame_buffer_capacity} cannot hold "
                f"{len(self.sync.frame_offsets_s)} frames per camera"
            )
        if not self.odometry_horizon_s > self.history.span_s:
            raise ValueError(
                f"odometry_horizon_s {self.odometry_horizon_s} must exceed the history span "
                f"{self.history.span_s} s"
            )
        if not self.time_jump_threshold_s > 0:
            raise ValueError(f"time_jump_threshold_s must be > 0, got {self.time_jump_threshold_s}")
        if not isinstance(self.validator, ValidatorConfig):
            raise ValueError(f"validator must be a ValidatorConfig, got {self.validator!r}")
        if not isinstance(self.no_valid_policy, NoValidPolicy):
            raise ValueError(f"no_valid_policy must be a NoValidPolicy, got {self.no_valid_policy!r}")
        if not isinstance(self.publish_stop_trajectory, bool):
            raise ValueError(f"publish_stop_trajectory must be a bool, got {self.publish_stop_trajectory!r}")
        if not (math.isfinite(self.stop_decel_mps2) and self.stop_decel_mps2 > 0):
            raise ValueError(f"stop_decel_mps2 must be finite and > 0, got {self.stop_decel_mps2}")
        if self.stop_num_waypoints < 1:
            raise ValueError(f"stop_num_waypoints must be >= 1, got {self.stop_num_waypoints}")


class SkipCounter:
    """Thread-safe count of skipped ticks per SkipReason."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(SkipReason, 0)

    def count(self, reason: SkipReason) -> None:
        with self._lock:
            self._counts[reason] += 1

    def snapshot(self) -> dict[SkipReason, int]:
        """Counts of every reason (zeros included), in SkipReason declaration order."""
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


def _is_out_of_memory(error: BaseException) -> bool:
    """MemoryError, torch.cuda.OutOfMemoryError (matched by class name, torch is not imported here), or the
    RuntimeError('CUDA out of memory') of older torch."""
    if isinstance(error, MemoryError):
        return True
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(error).__mro__):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def _result_shape_error(result: EngineResult, num_samples: int) -> str | None:
    """Why `result` breaks the engine contract, or None if it does not."""
    xyz, rot = np.asarray(result.xyz), np.asarray(result.rot)
    if xyz.ndim != 3 or xyz.shape[0] != num_samples or xyz.shape[2] != 3 or xyz.shape[1] < 1:
        return f"engine returned xyz of shape {xyz.shape}, expected [{num_samples}, T, 3]"
    if rot.shape != (*xyz.shape[:2], 3, 3):
        return f"engine returned rot of shape {rot.shape}, expected {(*xyz.shape[:2], 3, 3)}"
    if len(result.reasoning) != num_samples:
        return f"engine returned {len(result.reasoning)} reasoning strings for {num_samples} samples"
    return None


class PlanningCore:
    """Owns the input buffers and turns them into observations and plans."""

    def __init__(self, config: PlannerConfig) -> None:
        self._config = config
        jump_ns = round(config.time_jump_threshold_s * NS_PER_S)
        self._frames = {
            name: FrameBuffer(config.frame_buffer_capacity, jump_ns) for name in config.sync.camera_names
        }
        self._odometry = OdometryBuffer(round(config.odometry_horizon_s * NS_PER_S), jump_ns)
        self._lock = threading.Lock()
        self._last_planned_t0_ns: int | None = None
        self._last_valid: Plan | None = None  # the newest NEW plan, for REPUBLISH_LAST_VALID
        self._time_jumps = 0
        self._epoch = 0  # incremented by every clear: a plan from an older epoch belongs to a dead time line

    @property
    def config(self) -> PlannerConfig:
        return self._config

    def reconfigure(self, config: PlannerConfig) -> None:
        """Switch to `config` at run time, keeping the buffered inputs.

        Raises:
            ValueError: the change needs new buffers (camera set, buffer capacity, odometry horizon or time-jump
                threshold); those are fixed once the core exists.
        """
        fixed = ("frame_buffer_capacity", "odometry_horizon_s", "time_jump_threshold_s")
        changed = [name for name in fixed if getattr(config, name) != getattr(self._config, name)]
        if config.sync.camera_names != self._config.sync.camera_names:
            changed.append("sync.camera_names")
        if changed:
            raise ValueError(f"cannot change {', '.join(changed)} without rebuilding the planning core")
        with self._lock:
            self._config = config

    @property
    def time_jumps(self) -> int:
        """How many times a backwards time jump cleared the buffers."""
        with self._lock:
            return self._time_jumps

    def add_frame(self, camera: str, frame: Frame) -> InsertResult:
        """Buffer a decoded frame of `camera`; the frame must not be modified afterwards.

        Returns:
            The buffer's InsertResult; TIME_JUMP means time went backwards, every buffer was cleared and
            `frame` was stored as the first entry of the new time line.

        Raises:
            ValueError: unknown camera, or an image that is not [H, W, 3] uint8.
        """
        buffer = self._frames.get(camera)
        if buffer is None:
            raise ValueError(f"unknown camera {camera!r}; configured: {', '.join(self._frames)}")
        image = frame.image
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"{camera} frame at {frame.stamp_ns} ns is {image.shape} {image.dtype}, not [H, W, 3] uint8"
            )
        with self._lock:
            result = buffer.add(frame)
            if result is InsertResult.TIME_JUMP:
                self._reset_after_jump(f"{camera} stamp {frame.stamp_ns} ns", buffer.latest_stamp_ns)
                buffer.add(frame)
        return result

    def add_odometry(self, sample: EgoSample) -> InsertResult:
        """Buffer an odometry sample (see add_frame for TIME_JUMP).

        Raises:
            InvalidOdometryError: non-finite values, wrong shapes or a non-unit quaternion.
        """
        with self._lock:
            result = self._odometry.add(sample)
            if result is InsertResult.TIME_JUMP:
                self._reset_after_jump(f"odometry stamp {sample.stamp_ns} ns", self._odometry.latest_stamp_ns)
                self._odometry.add(sample)
        return result

    def _reset_after_jump(self, what: str, newest_ns: int | None) -> None:
        """Clear everything; the caller holds the lock."""
        logger.warning(
            "time went backwards (%s, newest buffered %s ns); clearing all input buffers", what, newest_ns
        )
        self._time_jumps += 1
        self._clear()

    def _clear(self) -> None:
        for buffer in self._frames.values():
            buffer.clear()
        self._odometry.clear()
        self._last_planned_t0_ns = None
        self._last_valid = None
        self._epoch += 1

    def reset(self) -> None:
        """Forget all inputs, the last planned t0 and the last valid plan (e.g. when the clock jumps back)."""
        with self._lock:
            self._clear()

    def newest_stamps_ns(self) -> dict[str, int | None]:
        """Newest buffered stamp per camera and under 'odometry' (None when empty), for diagnostics."""
        with self._lock:
            stamps = {name: buffer.latest_stamp_ns for name, buffer in self._frames.items()}
            stamps["odometry"] = self._odometry.latest_stamp_ns
        return stamps

    def build_observation(self, now_ns: int, *, allow_planned: bool = False) -> Observation | Skip:
        """Synchronise the buffered inputs into an Observation at t0 (sync.select_frames defines t0).

        Args:
            now_ns: the planning time (node clock) against which input age is measured.
            allow_planned: also return a t0 that was already planned (scene questions reuse it).

        Returns:
            An Observation, or a Skip: the select_frames reasons, INPUT_STALE (t0 older than max_input_age_s),
            STALE_DUPLICATE (t0 not newer than the last planned one), or the build_history reasons.
        """
        cfg = self._config
        with self._lock:
            selection = select_frames(self._frames, cfg.sync)
            if isinstance(selection, Skip):
                return selection
            t0_ns = selection.t0_ns
            age_s = (now_ns - t0_ns) / NS_PER_S
            if age_s > cfg.max_input_age_s:
                return Skip(
                    SkipReason.INPUT_STALE,
                    f"t0 is {age_s * 1e3:.0f} ms old (max {cfg.max_input_age_s * 1e3:.0f} ms)",
                )
            if not allow_planned and self._last_planned_t0_ns is not None and t0_ns <= self._last_planned_t0_ns:
                return Skip(
                    SkipReason.STALE_DUPLICATE,
                    f"t0 {t0_ns} ns is not newer than the last planned t0 {self._last_planned_t0_ns} ns",
                )
            history = build_history(self._odometry, t0_ns, cfg.history)
        if isinstance(history, Skip):
            return history
        return Observation(
            t0_ns=t0_ns,
            camera_names=cfg.sync.camera_names,
            images=selection.stack_images(),
            frame_stamps_ns=selection.stamps_ns(),
            history_xyz=history.xyz,
            history_rot=history.rot,
            t0_position=history.t0_position,
            t0_rotation=history.t0_rotation,
            speed_mps=history.speed_mps,
        )

    def run(
        self, obs: Observation, engine: InferenceEngine, clock: Callable[[], int] | None = None
    ) -> Plan | Skip:
        """Run the engine on `obs`, validate the candidates and select a valid one.

        Each t0 is planned at most once: it is marked as planned before the engine runs, whatever the outcome,
        so a failing input is not retried every tick.

        Args:
            obs: the observation.
            engine: the model.
            clock: the planning clock, ns (the node clock); read after inference for the plan age
                (PLAN_AGE) and the age of a plan to republish. None: the plan age is not checked, and a
                republished plan's age is measured to obs.t0_ns instead (a lower bound).

        Returns:
            Plan with source NEW and skip None: a valid new plan, publish it.
            Plan with another source: a fallback chosen by no_valid_policy / publish_stop_trajectory, publish
                it AND count the cycle as skipped under plan.skip.reason.
            Skip: publish nothing, count it. STALE_DUPLICATE (t0 already planned; never a fallback), or with
                nothing to fall back to: OUT_OF_MEMORY, MODEL_ERROR (engine exception or a result of the wrong
                shape), PLAN_TOO_OLD (every candidate older than validator.max_plan_age_s) or
                NO_VALID_CANDIDATE (every candidate flagged otherwise).
        """
        cfg = self._config
        with self._lock:
            if self._last_planned_t0_ns is not None and obs.t0_ns <= self._last_planned_t0_ns:
                return Skip(
                    SkipReason.STALE_DUPLICATE,
                    f"t0 {obs.t0_ns} ns is not newer than the last planned t0 {self._last_planned_t0_ns} ns",
                )
            self._last_planned_t0_ns = obs.t0_ns
            epoch = self._epoch
        try:
            result = engine.plan(obs, num_samples=cfg.num_samples, seed=cfg.seed)
        except Exception as error:  # the cycle boundary: any engine failure becomes a counted skip
            detail = f"{type(error).__name__}: {error}"
            if _is_out_of_memory(error):
                logger.warning(
                    "engine %s ran out of memory at t0 %d ns: %s", engine.model_id, obs.t0_ns, detail
                )
                failure = Skip(SkipReason.OUT_OF_MEMORY, detail)
            else:
                logger.warning("engine %s failed at t0 %d ns", engine.model_id, obs.t0_ns, exc_info=True)
                failure = Skip(SkipReason.MODEL_ERROR, detail)
            return self._fallback(obs, failure, None, None if clock is None else clock())
        now_ns = None if clock is None else clock()
        shape_error = _result_shape_error(result, cfg.num_samples)
        if shape_error is not None:
            return self._fallback(obs, Skip(SkipReason.MODEL_ERROR, shape_error), None, now_ns)
        xyz = np.asarray(result.xyz)  # [S, T, 3]
        rot = np.asarray(result.rot)  # [S, T, 3, 3]
        plan_age_s = None if now_ns is None else (now_ns - obs.t0_ns) / NS_PER_S
        report = validate(xyz, rot, obs.speed_mps, plan_age_s, cfg.validator, cfg.waypoint_dt_s)
        index, scores = select(xyz, cfg.selection_mode, report.flags == 0, cfg.waypoint_dt_s)
        plan = Plan(obs, result, index, scores, report.flags, validation=report)
        if index >= 0:
            with self._lock:
                if epoch != self._epoch:  # the buffers were reset while the engine ran (time went backwards)
                    return Skip(SkipReason.INPUT_STALE,
                                f"inputs were reset during the cycle (t0 {obs.t0_ns} ns is on the abandoned time line)")
                self._last_valid = plan
            return plan
        too_old = bool(report.check("plan_age").failed.any())  # PLAN_AGE is set for all candidates or none
        skip = Skip(
            SkipReason.PLAN_TOO_OLD if too_old else SkipReason.NO_VALID_CANDIDATE,
            f"all {xyz.shape[0]} candidates flagged: {report.summary()}",
            report,
        )
        return self._fallback(obs, skip, plan, now_ns)

    def _fallback(
        self, obs: Observation, skip: Skip, flagged: Plan | None, now_ns: int | None
    ) -> Plan | Skip:
        """What a cycle without a valid new plan returns (see run).

        PUBLISH_AS_IS publishes `flagged` (this cycle's validated plan, None after an engine failure) with the
        candidate selection_mode picks among the finite ones, as if none were flagged; a non-finite candidate
        is never published. REPUBLISH_LAST_VALID returns the last NEW plan unchanged while its age (now_ns, or
        obs.t0_ns without a clock, minus its t0) is at most validator.max_plan_age_s. Otherwise the stop
        trajectory if publish_stop_trajectory, else `skip`.
        """
        cfg = self._config
        if cfg.no_valid_policy is NoValidPolicy.PUBLISH_AS_IS and flagged is not None:
            xyz = np.asarray(flagged.result.xyz)  # [S, T, 3]
            index, scores = select(xyz, cfg.selection_mode, np.ones(xyz.shape[0], bool), cfg.waypoint_dt_s)
            if index >= 0:
                return dataclasses.replace(
                    flagged, selected_index=index, scores=scores, source=PlanSource.AS_IS, skip=skip
                )
        if cfg.no_valid_policy is NoValidPolicy.REPUBLISH_LAST_VALID:
            with self._lock:
                last = self._last_valid
            if last is None:
                skip = dataclasses.replace(skip, detail=f"{skip.detail}; no valid plan to republish")
            else:
                age_s = ((obs.t0_ns if now_ns is None else now_ns) - last.observation.t0_ns) / NS_PER_S
                if age_s <= cfg.validator.max_plan_age_s:
                    return dataclasses.replace(last, source=PlanSource.REPUBLISHED, skip=skip)
                skip = dataclasses.replace(
                    skip,
                    detail=f"{skip.detail}; last valid plan (t0 {last.observation.t0_ns} ns) is "
                    f"{age_s * 1e3:.0f} ms old (max {cfg.validator.max_plan_age_s * 1e3:.0f} ms)",
                )
        if cfg.publish_stop_trajectory:
            xyz, rot = stop_trajectory(  # [T, 3], [T, 3, 3]
                obs.speed_mps, cfg.stop_decel_mps2, cfg.stop_num_waypoints, cfg.waypoint_dt_s
            )
            result = EngineResult(xyz[None], rot[None], (f"fallback stop: {skip.reason.value}",), {})
            flags = np.zeros(1, np.uint32)
            return Plan(obs, result, 0, np.zeros(1, np.float32), flags, PlanSource.STOP, skip)
        return skip
