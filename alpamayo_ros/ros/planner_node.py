"""The Alpamayo planner: a managed (lifecycle) node around the ROS-free PlanningCore and an inference engine.

Lifecycle: configure loads the model (progress bar + log) and warms it up, activate starts the planning
timer, deactivate stops it, cleanup frees the model. With `autostart` (default) the node configures and
activates itself, so a plain launch just plans.

Threads: `main` spins the node on a SingleThreadedExecutor; the callback groups (cameras reentrant, odometry
mutually exclusive: the jump check needs samples in arrival order) also hold on a MultiThreadedExecutor. The
planning timer only builds the observation and hands it to a single worker thread, so inference never blocks
the subscribers. (Spun by rclpy's MultiThreadedExecutor under bag replay, the node was seen to keep one core
busy in the executor loop, and inference, waiting for the GIL, slowed from ~0.1 s to tens of seconds.) A tick
that finds the worker still busy is skipped and counted (BUSY), like every other skipped tick.

Faults (docs/FAULTS.md): a message that cannot be used is rejected and counted per source; every tick is
counted and ends as a plan or a skip with a reason; ROS time going backwards resets the input buffers; an
engine exception is a counted skip; invalid start parameters or a bad checkpoint leave the node alive and
unconfigured with the reason in /diagnostics, which runs on a steady timer so it reports a stopped clock.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for_futures
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.clock import Clock, ClockChange, ClockType, JumpThreshold, TimeJump
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Float64, String
from visualization_msgs.msg import MarkerArray

from alpamayo_ros.msg import PlannerStatus, TrajectorySet
from alpamayo_ros.srv import Ask
from alpamayo_ros.planner.buffers import InsertResult
from alpamayo_ros.planner.cycle import InferenceEngine, PlannerConfig, PlanningCore
from alpamayo_ros.planner.engine import RoutedEngine, load_engine
from alpamayo_ros.planner.types import NS_PER_S, Observation, Plan, Skip, SkipReason
from alpamayo_ros.ros import convert, diagnostics, params
from alpamayo_ros.ros.logging_bridge import forward_python_logging
from alpamayo_ros.ros.odometry_gate import OdometryGate

RELIABLE = QoSProfile(depth=10)

# Builds the engine at configure from (parameter values, core config); raises to fail the configure.
EngineFactory = Callable[[dict[str, Any], PlannerConfig], InferenceEngine]


def load_engine_from_parameters(values: dict[str, Any], config: PlannerConfig) -> InferenceEngine:
    """The production engine factory: `load_engine` with the node's `model.*` parameters."""
    return load_engine(
        backend=values["model.backend"], path=values["model.path"],
        tokenizer_path=values["model.tokenizer_path"], device=values["model.device"],
        dtype=values["model.dtype"], max_new_tokens=values["model.max_new_tokens"],
        num_cameras=len(config.sync.camera_names), warmup=values["model.warmup"],
        engine=values["model.engine"], warmup_samples=values["planning.num_samples"],
        family=None if values["model.family"] == "auto" else values["model.family"],
    )


class PlannerNode(LifecycleNode):
    """Cameras + odometry in; TrajectorySet, Path, reasoning, markers, overlay, status, diagnostics out."""

    def __init__(self, node_name: str = "alpamayo_planner", *, engine_factory: EngineFactory | None = None,
                 **kwargs: Any) -> None:
        """Args:
        node_name: the node name (remappable).
        engine_factory: builds the engine at configure; None = `load_engine_from_parameters` (production).
            Tests pass one that wraps the model to inject faults (exceptions, out of memory, NaN, slowness).
        **kwargs: rclpy Node arguments (context, parameter_overrides, ...).
        """
        super().__init__(node_name, **kwargs)
        self._engine_factory = engine_factory or load_engine_from_parameters
        # Start values that were refused (the default stands in); configure fails until each is set validly.
        self._invalid_params = params.declare(self)
        self._values: dict[str, Any] = {p.name: self.get_parameter(p.name).value for p in params.PARAMS}
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._input_group = ReentrantCallbackGroup()
        self._odometry_group = MutuallyExclusiveCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alpamayo_inference")
        self._future: Future | None = None
        self._cycle_started_s = 0.0  # monotonic start of the cycle on the worker
        self._timeline = 0  # +1 at every input reset: a cycle started before one must not publish
        self._core: PlanningCore | None = None
        self._gate: OdometryGate | None = None
        self._engine: InferenceEngine | None = None
        self._inputs: list[Any] = []
        self._outputs: dict[str, Any] = {}
        self._plan_timer = None
        self._camera_info: dict[str, CameraInfo] = {}
        self._route: tuple[str, int] | None = None  # (navigation text, receipt time on the node clock, ns)
        self._ask_group = MutuallyExclusiveCallbackGroup()
        self._ask_service = None
        self._engine_lock = threading.Lock()  # one model call at a time: planning cycles and questions

        self._stats = diagnostics.PlannerStats()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE)
        self._status_pub = self.create_publisher(PlannerStatus, "~/output/status", RELIABLE)
        self._state_id = PlannerStatus.STATE_UNCONFIGURED
        # Steady clock: diagnostics must keep coming (and say so) when ROS time stands still.
        self._ros_ns_seen, self._ros_advanced_s = -1, time.monotonic()
        self.create_timer(1.0 / self._values["diagnostics.rate_hz"], self._publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        back = Duration(nanoseconds=-round(self._values["buffers.time_jump_threshold_s"] * NS_PER_S))
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=back, on_clock_change=True),
            post_callback=self._on_time_jump)

        if self._invalid_params:
            self._fail(f"invalid parameters: {self._invalid_reasons()}; staying unconfigured until they are "
                       "set to valid values and configure is requested")
        elif self._values["autostart"]:
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()

    # ---------------------------------------------------------------- lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model and create the core and I/O. FAILURE (stays unconfigured, reason in diagnostics) on
        invalid parameters or a model that cannot be loaded; configure may be requested again after a fix."""
        v = self._values
        if self._invalid_params:
            return self._fail(f"invalid parameters: {self._invalid_reasons()}")
        try:
            config = params.planner_config(v)
            gate_config = params.odometry_gate_config(v)
        except ValueError as error:
            return self._fail(f"invalid parameters: {error}")
        self.get_logger().info(f"loading model (backend={v['model.backend']}, path={v['model.path'] or '-'})")
        try:
            self._engine = self._engine_factory(v, config)
        except Exception as error:  # a missing/corrupt checkpoint: stay unconfigured, say why
            where = v["model.path"] or "the embedded model"
            return self._fail(f"model load failed ({where}): {type(error).__name__}: {error}")
        self.get_logger().info(f"model ready: {self._engine.model_id}")
        self._core = PlanningCore(config)
        self._gate = OdometryGate(gate_config)
        self._create_io(config.sync.camera_names)
        self._stats.set_error("")
        self._state_id = PlannerStatus.STATE_INACTIVE
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._start_timer()
        self._state_id = PlannerStatus.STATE_ACTIVE
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_timer()
        self._state_id = PlannerStatus.STATE_INACTIVE
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self._state_id = PlannerStatus.STATE_UNCONFIGURED
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_timer()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _fail(self, reason: str) -> TransitionCallbackReturn:
        """Log and report (diagnostics ERROR, status message) why the node is not configured."""
        self.get_logger().error(reason)
        self._stats.set_error(reason)
        return TransitionCallbackReturn.FAILURE

    def _invalid_reasons(self) -> str:
        return "; ".join(self._invalid_params.values())

    def _create_io(self, cameras: tuple[str, ...]) -> None:
        compressed = self._values["input.image_transport"] == "compressed"
        for cam in cameras:
            if compressed:
                topic, msg_type = f"~/input/camera/{cam}/image/compressed", CompressedImage
            else:
                topic, msg_type = f"~/input/camera/{cam}/image", Image
            self._inputs.append(self.create_subscription(
                msg_type, topic, lambda msg, cam=cam: self._on_image(cam, msg), qos_profile_sensor_data,
                callback_group=self._input_group))
            self._inputs.append(self.create_subscription(
                CameraInfo, f"~/input/camera/{cam}/camera_info",
                lambda msg, cam=cam: self._camera_info.__setitem__(cam, msg), RELIABLE,
                callback_group=self._input_group))
        self._inputs.append(self.create_subscription(
            Odometry, "~/input/odometry", self._on_odometry, RELIABLE, callback_group=self._odometry_group))
        self._inputs.append(self.create_subscription(
            String, "~/input/route", self._on_route, RELIABLE, callback_group=self._input_group))
        self._ask_service = self.create_service(Ask, "~/ask", self._on_ask, callback_group=self._ask_group)
        outputs = {
            "trajectory_set": (TrajectorySet, "~/output/trajectory_set"),
            "path": (Path, "~/output/path"),
            "reasoning": (String, "~/output/reasoning"),
            "markers": (MarkerArray, "~/debug/markers"),
            "overlay": (Image, "~/debug/overlay"),
            "processing_time": (Float64, "~/debug/processing_time_ms"),
        }
        self._outputs = {
            key: self.create_lifecycle_publisher(msg_type, topic, RELIABLE)
            for key, (msg_type, topic) in outputs.items()
        }

    def _release(self) -> None:
        if self._future is not None:
            wait_for_futures([self._future])  # let a running cycle finish before its engine goes away
        for sub in self._inputs:
            self.destroy_subscription(sub)
        for pub in self._outputs.values():
            self.destroy_lifecycle_publisher(pub)
        if self._ask_service is not None:
            self.destroy_service(self._ask_service)
        self._inputs, self._outputs, self._ask_service, self._route = [], {}, None, None
        self._core, self._gate, self._engine, self._future = None, None, None, None

    def _start_timer(self) -> None:
        self._plan_timer = self.create_timer(
            1.0 / self._values["planning.rate_hz"], self._on_tick, callback_group=self._timer_group)

    def _stop_timer(self) -> None:
        if self._plan_timer is not None:
            self.destroy_timer(self._plan_timer)
            self._plan_timer = None

    # ---------------------------------------------------------------- parameters

    def _on_set_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        """Check a change against the table and the core's config; apply it only if all of it is valid."""
        values = dict(self._values)
        changed = []
        for change in changes:
            spec = params.SPECS.get(change.name)
            if spec is None:
                continue  # use_sim_time and other rclpy-owned parameters
            if self._state_id != PlannerStatus.STATE_UNCONFIGURED and not spec.dynamic:
                return SetParametersResult(successful=False, reason=f"{change.name} is read-only once configured")
            reason = params.check_value(spec, change.value)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
            values[change.name] = change.value
            changed.append(change.name)
        try:
            config = params.planner_config(values)
            gate_config = params.odometry_gate_config(values)
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        rate_changed = values["planning.rate_hz"] != self._values["planning.rate_hz"]
        self._values = values
        if self._invalid_params:
            for name in changed:
                self._invalid_params.pop(name, None)
            if not self._invalid_params:  # every refused start value was replaced: configure may succeed
                self._stats.set_error("")
        if self._core is not None:
            self._core.reconfigure(config)
        if self._gate is not None:
            self._gate.reconfigure(gate_config)
        if self._engine is not None:
            self._engine.max_new_tokens = values["model.max_new_tokens"]
        if rate_changed and self._plan_timer is not None:
            self._stop_timer()
            self._start_timer()
        return SetParametersResult(successful=True)

    # ---------------------------------------------------------------- inputs

    def _on_image(self, camera: str, msg: Image | CompressedImage) -> None:
        core = self._core
        if core is None:
            return
        try:
            frame = convert.compressed_to_frame(msg) if isinstance(msg, CompressedImage) \
                else convert.image_to_frame(msg)
            result = core.add_frame(camera, frame)
        except ValueError as error:  # ImageDecodeError and bad shapes
            self._reject(camera, str(error))
            return
        except Exception as error:  # a decoder bug must not take the executor down: count it, log it loudly
            self._reject(camera, f"{type(error).__name__}: {error}", unexpected=True)
            return
        if result is InsertResult.TIME_JUMP:
            self._timeline += 1
            self._stats.buffers_reset("time_jump", f"{camera} stamp {frame.stamp_ns} ns went back in time")

    def _on_odometry(self, msg: Odometry) -> None:
        core, gate = self._core, self._gate
        if core is None or gate is None:
            return
        frame_id, child_frame_id = msg.header.frame_id, msg.child_frame_id
        try:
            sample = convert.odometry_to_sample(msg)
            reason = gate.check(frame_id, child_frame_id, sample)
            if reason is not None:
                self._reject("odometry", f"odometry at {sample.stamp_ns} ns: {reason}")
                return
            result = core.add_odometry(sample)
        except ValueError as error:  # InvalidOdometryError: non-finite values, bad quaternion
            self._reject("odometry", str(error))
            return
        except Exception as error:  # as in _on_image
            self._reject("odometry", f"{type(error).__name__}: {error}", unexpected=True)
            return
        if result is not InsertResult.DROPPED:
            gate.accept(frame_id, child_frame_id, sample)
        if result is InsertResult.TIME_JUMP:
            self._timeline += 1
            self._stats.buffers_reset("time_jump", f"odometry stamp {sample.stamp_ns} ns went back in time")

    def _reject(self, source: str, reason: str, unexpected: bool = False) -> None:
        self._stats.input_error(source, reason)
        if unexpected:
            self.get_logger().error(f"{source}: dropped message, unexpected error: {reason}",
                                    throttle_duration_sec=5.0)
        else:
            self.get_logger().warning(f"{source}: dropped message: {reason}", throttle_duration_sec=5.0)

    def _on_time_jump(self, jump: TimeJump) -> None:
        """ROS time went back (bag loop, simulator reset) or changed source: forget every buffered input."""
        core = self._core
        if core is None:
            return
        core.reset()
        self._timeline += 1
        change = ClockChange(int(jump.clock_change))  # rclpy passes the binding's enum, not this IntEnum
        if change is ClockChange.ROS_TIME_NO_CHANGE:
            what = f"ROS time jumped back {-jump.delta.nanoseconds / NS_PER_S:.3f} s"
        else:
            what = f"clock source changed ({change.name})"
        self._stats.buffers_reset("clock_jump", what)
        self.get_logger().warning(f"{what}: input buffers reset")

    # ---------------------------------------------------------------- planning

    def _on_tick(self) -> None:
        self._stats.tick()  # counted first: every tick ends below or in _cycle as one plan or one skip
        core, engine = self._core, self._engine
        if core is None or engine is None:
            self._skip(Skip(SkipReason.NOT_ACTIVE, "no model loaded"))
            return
        if self._future is not None and not self._future.done():
            running_s = time.monotonic() - self._cycle_started_s
            self._skip(Skip(SkipReason.BUSY, f"previous cycle still running ({running_s:.1f} s)"))
            return
        obs = core.build_observation(self.get_clock().now().nanoseconds)
        if isinstance(obs, Skip):
            self._skip(obs)
            return
        if len({views.shape[1:3] for views in obs.images}) > 1:  # the model batches the views: one size
            sizes = ", ".join(f"{cam} {views.shape[1]}x{views.shape[2]}"
                              for cam, views in zip(obs.camera_names, obs.images))
            self._skip(Skip(SkipReason.IMAGE_SIZE_MISMATCH, f"cameras differ in size (HxW): {sizes}"))
            return
        self._cycle_started_s = time.monotonic()
        self._future = self._worker.submit(self._cycle, core, self._with_route(engine), obs, self._timeline)

    def _on_route(self, msg: String) -> None:
        """Alpamayo 1.5 navigation text; R1 checkpoints take none (rejected and counted)."""
        engine = self._engine
        if engine is not None and getattr(engine, "family", "r1") != "a15":
            self._reject("route", "this checkpoint (Alpamayo-R1) takes no route text")
            return
        self._route = (msg.data, self.get_clock().now().nanoseconds)

    def _with_route(self, engine: InferenceEngine) -> InferenceEngine:
        """The engine for this cycle: with the route text while it is younger than route.max_age_s."""
        route = self._route
        if route is None or not route[0] or getattr(engine, "family", "r1") != "a15":
            return engine
        age_s = (self.get_clock().now().nanoseconds - route[1]) / NS_PER_S
        if age_s > self._values["route.max_age_s"]:
            return engine
        return RoutedEngine(engine, route[0], float(self._values["route.guidance_weight"]))

    def _on_ask(self, request: Ask.Request, response: Ask.Response) -> Ask.Response:
        """Answer a question on the newest synchronised observation (Alpamayo 1.5)."""
        core, engine = self._core, self._engine
        if core is None or engine is None:
            response.message = "not configured: no model loaded"
            return response
        if getattr(engine, "family", "r1") != "a15":
            response.message = "this checkpoint (Alpamayo-R1) has no question answering; use an Alpamayo 1.5 one"
            return response
        obs = core.build_observation(self.get_clock().now().nanoseconds, allow_planned=True)
        if isinstance(obs, Skip):
            response.message = f"no synchronised observation: {obs.reason.value} {obs.detail}".strip()
            return response
        try:
            with self._engine_lock:
                response.answer = engine.ask(obs, request.question)
        except (ValueError, RuntimeError) as error:  # bad question text, model failure: say why, keep running
            response.message = f"{type(error).__name__}: {error}"
            return response
        response.success = True
        response.observation_time = convert.ns_to_stamp(obs.t0_ns)
        return response

    def _cycle(self, core: PlanningCore, engine: InferenceEngine, obs: Observation, timeline: int) -> None:
        """Run one cycle on the worker; counts it exactly once, as planned or skipped, whatever happens.

        A plan whose inputs were reset meanwhile (time went backwards) is not published: its stamps belong to
        the abandoned time line.
        """
        start = time.perf_counter()
        total_ms = 0.0
        try:
            with self._engine_lock:
                outcome = core.run(obs, engine, clock=lambda: self.get_clock().now().nanoseconds)
            total_ms = (time.perf_counter() - start) * 1e3
            if isinstance(outcome, Plan) and timeline != self._timeline:
                outcome = Skip(SkipReason.INPUT_STALE,
                               f"inputs were reset during the cycle (time went backwards); plan for t0 "
                               f"{obs.t0_ns} ns discarded")
            if isinstance(outcome, Plan):
                self._publish(outcome, engine.model_id, total_ms)
        except Exception as error:  # the engine errors are Skips already; this is publishing: count, report
            outcome = Skip(SkipReason.MODEL_ERROR, f"{type(error).__name__}: {error}")
            self.get_logger().error(f"planning cycle failed: {error!r}")
        if isinstance(outcome, Skip):
            self._stats.skipped(outcome)
        elif outcome.skip is None:
            self._stats.planned(outcome.result.timings_ms, total_ms, outcome.validation,
                                outcome.selected_index)
        else:  # a fallback (as-is, republished or stop plan) was published for a failed cycle
            self._stats.skipped(outcome.skip, fallback=outcome.source.value)
        self._publish_status()

    def _skip(self, skip: Skip) -> None:
        """Count a tick that ended without a cycle on the worker."""
        self._stats.skipped(skip)
        self.get_logger().debug(f"skipped cycle: {skip.reason.value} {skip.detail}")
        self._publish_status()

    def _publish(self, plan: Plan, model_id: str, total_ms: float) -> None:
        v = self._values
        in_odom = v["output.frame"] == "odom"
        odom_frame_id = (self._gate.odom_frame_id if self._gate is not None else "") or "odom"
        frame_id = odom_frame_id if in_odom else v["output.base_frame_id"]
        msg = convert.plan_to_trajectory_set(
            plan, frame_id=frame_id, in_odom_frame=in_odom, model_id=model_id,
            dt_s=self._core.config.waypoint_dt_s if self._core else 0.1, inference_ms=total_ms)
        pubs = self._outputs
        pubs["trajectory_set"].publish(msg)
        if msg.selected_index >= 0:
            pubs["path"].publish(msg.trajectories[msg.selected_index])
            pubs["reasoning"].publish(String(data=msg.reasoning[msg.selected_index]))
        pubs["processing_time"].publish(Float64(data=total_ms))
        if v["output.markers"]:
            lifetime_s = 2.0 / v["planning.rate_hz"]
            pubs["markers"].publish(convert.trajectory_set_markers(msg, lifetime_s=lifetime_s))
        if v["output.overlay"]:
            cam = v["output.overlay_camera"]
            overlay = convert.overlay_image(plan, msg.header.stamp, cam, self._camera_info.get(cam),
                                            tuple(v["output.overlay_camera_pose"]))
            if overlay is not None:
                pubs["overlay"].publish(overlay)

    # ---------------------------------------------------------------- status

    def statistics(self) -> dict[str, Any]:
        """A consistent snapshot of the counters (ticks, planned, skips by reason, rejections, resets)."""
        return self._stats.snapshot()

    def _publish_status(self) -> None:
        status = self._stats.status_msg(self._state_id, self._engine.model_id if self._engine else "")
        status.header.stamp = self.get_clock().now().to_msg()
        self._status_pub.publish(status)

    def _publish_diagnostics(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
        steady_s = time.monotonic()
        if now_ns != self._ros_ns_seen:
            self._ros_ns_seen, self._ros_advanced_s = now_ns, steady_s
        self._stats.set_clock_paused(steady_s - self._ros_advanced_s)
        stamps = self._core.newest_stamps_ns() if self._core is not None else {}
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = diagnostics.statuses(
            self.get_fully_qualified_name(), self._stats, stamps, now_ns, self._values,
            self._engine, self._state_id)
        self._diag_pub.publish(array)

    def destroy_node(self) -> None:
        self._worker.shutdown(wait=True)
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    forward_python_logging()
    executor = SingleThreadedExecutor()
    node = PlannerNode()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
