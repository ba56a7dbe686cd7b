"""The Alpamayo planner: a managed (lifecycle) node around the ROS-free PlanningCore and an inference engine.

Lifecycle: configure loads the model (progress bar + log) and warms it up, activate starts the planning
timer, deactivate stops it, cleanup frees the model. With `autostart` (default) the node configures and
activates itself, so a plain launch just plans.

Threads: subscriptions run in a reentrant callback group on a MultiThreadedExecutor; the planning timer only
builds the observation and hands it to a single worker thread, so inference never blocks the subscribers.
A tick that finds the worker still busy is skipped and counted (BUSY), like every other skipped tick.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Float64, String
from visualization_msgs.msg import MarkerArray

from alpamayo_ros.msg import PlannerStatus, TrajectorySet
from alpamayo_ros.planner.cycle import InferenceEngine, PlanningCore
from alpamayo_ros.planner.engine import load_engine
from alpamayo_ros.planner.overlay import draw_overlay
from alpamayo_ros.planner.types import NS_PER_S, Plan, Skip, SkipReason
from alpamayo_ros.ros import convert, diagnostics, params
from alpamayo_ros.ros.logging_bridge import forward_python_logging

RELIABLE = QoSProfile(depth=10)


class PlannerNode(LifecycleNode):
    """Cameras + odometry in; TrajectorySet, Path, reasoning, markers, overlay, status, diagnostics out."""

    def __init__(self, node_name: str = "alpamayo_planner", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        for spec in params.PARAMS:
            self.declare_parameter(spec.name, spec.default, _descriptor(spec))
        self._values: dict[str, Any] = {p.name: self.get_parameter(p.name).value for p in params.PARAMS}
        self.add_on_set_parameters_callback(self._on_set_parameters)

        self._input_group = ReentrantCallbackGroup()
        self._timer_group = MutuallyExclusiveCallbackGroup()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alpamayo_inference")
        self._future: Future | None = None
        self._core: PlanningCore | None = None
        self._engine: InferenceEngine | None = None
        self._inputs: list[Any] = []
        self._outputs: dict[str, Any] = {}
        self._plan_timer = None
        self._camera_info: dict[str, CameraInfo] = {}

        self._stats = diagnostics.PlannerStats()
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", RELIABLE)
        self._status_pub = self.create_publisher(PlannerStatus, "~/output/status", RELIABLE)
        self._state_id = PlannerStatus.STATE_UNCONFIGURED
        self.create_timer(1.0 / self._values["diagnostics.rate_hz"], self._publish_diagnostics)

        if self._values["autostart"]:
            if self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
                self.trigger_activate()

    # ---------------------------------------------------------------- lifecycle

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        v = self._values
        try:
            config = params.planner_config(v)
        except ValueError as error:
            self.get_logger().error(f"invalid parameters: {error}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"loading model (backend={v['model.backend']}, path={v['model.path'] or '-'})")
        try:
            self._engine = load_engine(
                backend=v["model.backend"], path=v["model.path"], tokenizer_path=v["model.tokenizer_path"],
                device=v["model.device"], dtype=v["model.dtype"], max_new_tokens=v["model.max_new_tokens"],
                num_cameras=len(config.sync.camera_names), warmup=v["model.warmup"],
            )
        except Exception as error:  # a missing/corrupt checkpoint: stay unconfigured, say why
            self.get_logger().error(f"cannot load the model: {type(error).__name__}: {error}")
            self._stats.set_error(f"model load failed: {error}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"model ready: {self._engine.model_id}")
        self._core = PlanningCore(config)
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
            Odometry, "~/input/odometry", self._on_odometry, RELIABLE, callback_group=self._input_group))
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
            self._future.result()  # let a running cycle finish before its engine goes away
        for sub in self._inputs:
            self.destroy_subscription(sub)
        for pub in self._outputs.values():
            self.destroy_lifecycle_publisher(pub)
        self._inputs, self._outputs = [], {}
        self._core, self._engine, self._future = None, None, None

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
        try:
            config = params.planner_config(values)
        except ValueError as error:
            return SetParametersResult(successful=False, reason=str(error))
        rate_changed = values["planning.rate_hz"] != self._values["planning.rate_hz"]
        self._values = values
        if self._core is not None:
            self._core.reconfigure(config)
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
            core.add_frame(camera, frame)
        except ValueError as error:  # ImageDecodeError and bad shapes
            self._stats.input_error(camera, str(error))
            self.get_logger().warning(f"{camera}: dropped image: {error}", throttle_duration_sec=5.0)

    def _on_odometry(self, msg: Odometry) -> None:
        core = self._core
        if core is None:
            return
        self._stats.odom_frame_id = msg.header.frame_id or self._stats.odom_frame_id
        try:
            core.add_odometry(convert.odometry_to_sample(msg))
        except ValueError as error:  # InvalidOdometryError
            self._stats.input_error("odometry", str(error))
            self.get_logger().warning(f"dropped odometry: {error}", throttle_duration_sec=5.0)

    # ---------------------------------------------------------------- planning

    def _on_tick(self) -> None:
        core, engine = self._core, self._engine
        if core is None or engine is None:
            return
        if self._future is not None and not self._future.done():
            self._skip(Skip(SkipReason.BUSY, "previous cycle still running"))
            return
        obs = core.build_observation(self.get_clock().now().nanoseconds)
        if isinstance(obs, Skip):
            self._skip(obs)
            return
        self._future = self._worker.submit(self._cycle, core, engine, obs)

    def _cycle(self, core: PlanningCore, engine: InferenceEngine, obs) -> None:
        start = time.perf_counter()
        try:
            outcome = core.run(obs, engine, clock=lambda: self.get_clock().now().nanoseconds)
            total_ms = (time.perf_counter() - start) * 1e3
            if isinstance(outcome, Skip):
                self._skip(outcome)
            else:
                self._publish(outcome, engine.model_id, total_ms)
                if outcome.skip is None:
                    self._stats.planned(outcome.result.timings_ms, total_ms, outcome.validation, outcome.selected_index)
                else:  # a fallback (as-is, republished or stop plan) was published for a failed cycle
                    self._skip(outcome.skip, fallback=outcome.source.value)
        except Exception as error:  # publishing must never kill the worker; count and report
            self._skip(Skip(SkipReason.MODEL_ERROR, f"{type(error).__name__}: {error}"))
            self.get_logger().error(f"planning cycle failed: {error!r}")
        self._publish_status()

    def _skip(self, skip: Skip, fallback: str = "") -> None:
        self._stats.skipped(skip, fallback)
        self.get_logger().debug(f"skipped cycle: {skip.reason.value} {skip.detail} {fallback}")
        self._publish_status()

    def _publish(self, plan: Plan, model_id: str, total_ms: float) -> None:
        v = self._values
        in_odom = v["output.frame"] == "odom"
        frame_id = (self._stats.odom_frame_id or "odom") if in_odom else v["output.base_frame_id"]
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
            pubs["markers"].publish(convert.trajectory_set_markers(msg, lifetime_s=2.0 / v["planning.rate_hz"]))
        if v["output.overlay"]:
            self._publish_overlay(plan, msg)

    def _publish_overlay(self, plan: Plan, msg: TrajectorySet) -> None:
        cam = self._values["output.overlay_camera"]
        obs = plan.observation
        if cam not in obs.camera_names or plan.selected_index < 0 or not obs.images:
            return
        image = obs.images[obs.camera_names.index(cam)][-1]  # [H, W, 3] the frame at t0
        info = self._camera_info.get(cam)
        k = np.array(info.k, dtype=np.float64).reshape(3, 3) if info is not None and any(info.k) else None
        rgb = draw_overlay(
            image, plan.result.xyz, plan.selected_index, plan.result.reasoning[plan.selected_index],
            camera_name=cam, camera_pose=tuple(self._values["output.overlay_camera_pose"]), intrinsics=k,
            intrinsics_size_hw=(info.height, info.width) if info is not None else None)
        self._outputs["overlay"].publish(convert.rgb_to_image(rgb, msg.header.stamp, cam))

    # ---------------------------------------------------------------- status

    def _publish_status(self) -> None:
        status = self._stats.status_msg(self._state_id, self._engine.model_id if self._engine else "")
        status.header.stamp = self.get_clock().now().to_msg()
        self._status_pub.publish(status)

    def _publish_diagnostics(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
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


def _descriptor(spec: params.ParamSpec) -> ParameterDescriptor:
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange

    desc = ParameterDescriptor(description=spec.description, read_only=False)
    if spec.choices:
        desc.additional_constraints = f"one of: {', '.join(spec.choices)}"
    if spec.range is not None and isinstance(spec.default, bool) is False:
        if isinstance(spec.default, int):
            desc.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=0)]
        elif isinstance(spec.default, float):
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(spec.range[0]), to_value=float(spec.range[1]), step=0.0)]
    if not spec.dynamic:
        desc.additional_constraints = (desc.additional_constraints + "; " if desc.additional_constraints else "") \
            + "read-only once configured"
    return desc


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    forward_python_logging()
    executor = MultiThreadedExecutor(num_threads=4)
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
