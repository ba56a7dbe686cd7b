"""The planner node's parameters: one table (name, default, description, range, dynamic), the descriptors
built from it, their declaration, and the builders of the core's config dataclasses from parameter values.

`config/planner.yaml` lists every parameter here with its default (a unit test keeps them in sync), and the
README parameter table is generated from this module (`python -m alpamayo_ros.ros.params --markdown`).

Invalid values given at start (a params file or `-p`) never raise out of the node's constructor: `declare`
keeps the default for a value rclpy refuses (wrong type, out of range) and returns every problem, so the node
can stay alive and unconfigured and say why.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from alpamayo_ros.planner.cycle import PlannerConfig
from alpamayo_ros.planner.validator import NoValidPolicy, ValidatorConfig
from alpamayo_ros.planner.egomotion import HistoryConfig, SpeedSource
from alpamayo_ros.planner.selection import SelectionMode
from alpamayo_ros.planner.sync import DEFAULT_CAMERA_NAMES, SyncConfig
from alpamayo_ros.ros.odometry_gate import OdometryGateConfig


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter."""

    name: str
    default: Any  # bool | int | float | str | list[str] | list[float]; its type is the parameter type
    description: str
    range: tuple[float, float] | None = None  # inclusive numeric range
    choices: tuple[str, ...] | None = None  # allowed string values
    dynamic: bool = False  # may change while configured; otherwise read-only after start


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("autostart", True, "Configure and activate on start (plain `ros2 run`/launch just plans)."),
    ParamSpec("model.backend", "tiny", "Model: tiny (small embedded model, CPU) or checkpoint (model.path).",
              choices=("tiny", "checkpoint")),
    ParamSpec("model.path", "", "Checkpoint directory (config.json + safetensors); empty = embedded tiny model."),
    ParamSpec("model.tokenizer_path", "",
              "Local Qwen3-VL tokenizer directory (checkpoint backend); empty = <model.path>/tokenizer."),
    ParamSpec("model.device", "auto", "auto (cuda if available, else cpu), cpu, cuda or cuda:N."),
    ParamSpec("model.dtype", "auto", "auto (bfloat16 on cuda, float32 on cpu), float32 or bfloat16.",
              choices=("auto", "float32", "bfloat16")),
    ParamSpec("model.max_new_tokens", 64, "Upper bound on Chain-of-Causation tokens per cycle.",
              range=(1, 512), dynamic=True),
    ParamSpec("model.warmup", True, "Run one inference on dummy inputs at configure (first cycle not slow)."),
    ParamSpec("model.engine", "auto", "Inference path: fast (static cache, CUDA graphs, frame cache), reference, "
              "or auto (fast on CUDA, reference on CPU).", choices=("auto", "fast", "reference")),
    ParamSpec("model.family", "auto", "Checkpoint family: auto (from config.json), r1 or a15 (Alpamayo 1.5).",
              choices=("auto", "r1", "a15")),
    ParamSpec("route.max_age_s", 30.0, "Alpamayo 1.5: a ~/input/route text older than this is not used, s.",
              range=(0.1, 3600.0), dynamic=True),
    ParamSpec("route.guidance_weight", 1.0, "Alpamayo 1.5: classifier-free guidance weight with a route "
              "(1 = route prompt only, 0 = ignore the route, >1 = stronger; != 1 doubles expert cost).",
              range=(0.0, 5.0), dynamic=True),
    ParamSpec("planning.rate_hz", 2.0, "Planning timer rate, Hz (ROS time: follows /clock with use_sim_time).",
              range=(0.1, 30.0), dynamic=True),
    ParamSpec("planning.num_samples", PlannerConfig.num_samples,
              "Trajectories (each with its own reasoning) sampled per cycle.", range=(1, 16), dynamic=True),
    ParamSpec("planning.seed", -1, "Sampling seed used every cycle; -1 = fresh randomness each cycle.",
              range=(-1, 2**31 - 1), dynamic=True),
    ParamSpec("planning.selection", PlannerConfig.selection_mode.value,
              "How the published plan is chosen among the samples.",
              choices=tuple(m.value for m in SelectionMode), dynamic=True),
    ParamSpec("planning.max_input_age_s", 0.5, "Skip the cycle if t0 is older than this (vs ROS time), s.",
              range=(0.05, 10.0), dynamic=True),
    ParamSpec("sync.cameras", list(DEFAULT_CAMERA_NAMES),
              "Camera names in model order; input topics are ~/input/camera/<name>/image[/compressed]."),
    ParamSpec("sync.reference_camera", "camera_front_wide_120fov", "Camera whose frame stamps define t0."),
    ParamSpec("sync.tolerance_s", 0.02, "Max |frame stamp - wanted time| when matching frames, s.",
              range=(0.001, 0.05), dynamic=True),
    ParamSpec("history.max_extrapolation_s", 0.05, "How far past the newest odometry a pose may be extrapolated, s.",
              range=(0.0, 0.2), dynamic=True),
    ParamSpec("history.max_gap_s", 0.25, "Largest odometry gap a history pose may be interpolated across, s.",
              range=(0.02, 1.0), dynamic=True),
    ParamSpec("history.speed_source", "twist", "Ego speed at t0 from the odometry twist or from positions.",
              choices=tuple(s.value for s in SpeedSource), dynamic=True),
    ParamSpec("buffers.frame_capacity", 16, "Frames kept per camera.", range=(4, 128)),
    ParamSpec("buffers.odometry_horizon_s", 3.0, "Odometry kept, s (> history span 1.5 s).", range=(1.6, 30.0)),
    ParamSpec("buffers.time_jump_threshold_s", 1.0,
              "A stamp this much older than the newest one = time went backwards: buffers reset, s.",
              range=(0.1, 60.0)),
    ParamSpec("input.image_transport", "compressed", "Subscribe to sensor_msgs/Image (raw) or CompressedImage.",
              choices=("raw", "compressed")),
    ParamSpec("input.odom_frame_id", "",
              "Odometry header.frame_id to accept; empty = the first received, then held (others rejected)."),
    ParamSpec("input.base_frame_id", "",
              "Odometry child_frame_id to accept; empty = the first received, then held (others rejected)."),
    ParamSpec("input.odometry_max_speed_mps", 60.0,
              "Odometry positions further apart than this * dt + 0.5 m are a jump: sample rejected, m/s.",
              range=(1.0, 1000.0), dynamic=True),
    ParamSpec("output.frame", "base_link", "Frame of published paths: base_link (at t0) or odom.",
              choices=("base_link", "odom"), dynamic=True),
    ParamSpec("output.base_frame_id", "base_link", "frame_id written for the ego frame at t0."),
    ParamSpec("output.markers", True, "Publish ~/debug/markers.", dynamic=True),
    ParamSpec("output.overlay", True, "Publish ~/debug/overlay (front camera with the selected plan).",
              dynamic=True),
    ParamSpec("output.overlay_camera", "camera_front_wide_120fov", "Camera drawn in ~/debug/overlay.",
              dynamic=True),
    ParamSpec("output.overlay_camera_pose", [1.8, 0.0, 1.45, 0.0, 0.0698, 0.0],
              "Overlay camera in base_link: x, y, z (m), roll, pitch (down +), yaw (rad) of its forward axis.", dynamic=True),
    ParamSpec("output.no_valid_policy", "stop_publishing",
              "No valid new plan: stop_publishing, publish_as_is (flagged, finite) or republish_last_valid.",
              choices=tuple(p.value for p in NoValidPolicy), dynamic=True),
    ParamSpec("output.publish_stop_trajectory", False,
              "When nothing else is published: publish a straight-ahead stop trajectory instead.", dynamic=True),
    ParamSpec("output.stop_decel_mps2", 2.5, "Deceleration of the stop trajectory, m/s^2.", range=(0.5, 10.0),
              dynamic=True),
    *(ParamSpec(f"validator.{name}", getattr(ValidatorConfig(), name), f"{text} (.inf disables)", dynamic=True)
      for name, text in (
          ("wheelbase_m", "Wheelbase for steering angle = atan(wheelbase * curvature), m"),
          ("min_segment_length_m", "Segments shorter than this have no heading (standstill jitter), m"),
          ("max_waypoint_spacing_m", "SPACING: max distance between consecutive waypoints, m"),
          ("max_curvature_1pm", "CURVATURE: max |curvature|, 1/m"),
          ("max_yaw_change_rad", "YAW_RATE: max heading change between consecutive segments, rad"),
          ("max_lateral_accel_mps2", "LATERAL_ACCEL: max |v^2 * curvature|, m/s^2"),
          ("max_lateral_jerk_mps3", "LATERAL_JERK: max |d(lateral accel)/dt|, m/s^3"),
          ("max_longitudinal_accel_mps2", "LONGITUDINAL_ACCEL: max speed-up, m/s^2"),
          ("max_longitudinal_decel_mps2", "LONGITUDINAL_ACCEL: max braking, m/s^2"),
          ("max_steering_rad", "STEERING: max |road-wheel angle|, rad"),
          ("max_steering_rate_radps", "STEERING_RATE: max |d(steering)/dt|, rad/s"),
          ("max_speed_deviation_mps", "SPEED_DEVIATION: max |plan speed over the first step - ego speed|, m/s"),
          ("max_first_point_offset_m", "FIRST_POINT: max distance of the first waypoint from speed*dt ahead, m"),
          ("stopping_decel_mps2", "LENGTH: plan must reach the stopping distance at this deceleration, m/s^2"),
          ("stopping_margin_m", "LENGTH: tolerance subtracted from the stopping distance, m"),
          ("max_plan_age_s", "PLAN_AGE: max (time after inference - t0), also the republish age limit, s"),
      )),
    ParamSpec("diagnostics.rate_hz", 1.0, "Rate of /diagnostics and ~/output/status when idle, Hz.",
              range=(0.1, 10.0)),
)

SPECS: dict[str, ParamSpec] = {p.name: p for p in PARAMS}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ParameterDescriptor of `spec` (description, range, choices; rclpy enforces type and range)."""
    desc = ParameterDescriptor(description=spec.description, read_only=False)
    if spec.choices:
        desc.additional_constraints = f"one of: {', '.join(spec.choices)}"
    if spec.range is not None and not isinstance(spec.default, bool):
        low, high = spec.range
        if isinstance(spec.default, int):
            desc.integer_range = [IntegerRange(from_value=int(low), to_value=int(high), step=0)]
        elif isinstance(spec.default, float):
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)]
    if not spec.dynamic:
        constraints = [desc.additional_constraints] if desc.additional_constraints else []
        desc.additional_constraints = "; ".join([*constraints, "read-only once configured"])
    return desc


def declare(node: Node) -> dict[str, str]:
    """Declare every parameter on `node`; returns {name: why its start value was refused} (empty: all valid).

    A refused start value (wrong type or out of range, which rclpy checks; not one of `choices`, which it does
    not) is replaced by the default so the node can exist, and reported here; the node must not configure
    until each such parameter has been set to a valid value.
    """
    invalid: dict[str, str] = {}
    for spec in PARAMS:
        try:
            node.declare_parameter(spec.name, spec.default, descriptor(spec))
        except (InvalidParameterTypeException, InvalidParameterValueException) as error:
            override = node._parameter_overrides.get(spec.name)  # rclpy keeps the refused value only here
            value = override.value if override is not None else None
            if isinstance(error, InvalidParameterTypeException):
                invalid[spec.name] = (f"{spec.name}={value!r} has type {type(value).__name__}, expected "
                                      f"{type(spec.default).__name__}")
            else:
                invalid[spec.name] = check_value(spec, value) or f"{spec.name}: {error}"
            node.declare_parameter(spec.name, spec.default, descriptor(spec), ignore_override=True)
            continue
        reason = check_value(spec, node.get_parameter(spec.name).value)
        if reason is not None:
            invalid[spec.name] = reason
            node.set_parameters([Parameter(spec.name, value=spec.default)])
    return invalid


def check_value(spec: ParamSpec, value: Any) -> str | None:
    """Why `value` is not acceptable for `spec`, or None."""
    if spec.choices is not None and value not in spec.choices:
        return f"{spec.name}={value!r} is not one of {', '.join(spec.choices)}"
    if spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
        return f"{spec.name}={value!r} is outside [{spec.range[0]}, {spec.range[1]}]"
    return None


def planner_config(values: dict[str, Any]) -> PlannerConfig:
    """PlannerConfig from parameter values; raises ValueError naming the bad value."""
    cameras = tuple(values["sync.cameras"])
    return PlannerConfig(
        sync=SyncConfig(
            camera_names=cameras,
            reference_camera=values["sync.reference_camera"],
            tolerance_s=float(values["sync.tolerance_s"]),
        ),
        history=HistoryConfig(
            max_extrapolation_s=float(values["history.max_extrapolation_s"]),
            max_gap_s=float(values["history.max_gap_s"]),
            speed_source=SpeedSource(values["history.speed_source"]),
        ),
        selection_mode=SelectionMode(values["planning.selection"]),
        num_samples=int(values["planning.num_samples"]),
        seed=None if values["planning.seed"] < 0 else int(values["planning.seed"]),
        max_input_age_s=float(values["planning.max_input_age_s"]),
        frame_buffer_capacity=int(values["buffers.frame_capacity"]),
        odometry_horizon_s=float(values["buffers.odometry_horizon_s"]),
        time_jump_threshold_s=float(values["buffers.time_jump_threshold_s"]),
        validator=ValidatorConfig(**{
            name.removeprefix("validator."): float(value) for name, value in values.items()
            if name.startswith("validator.")}),
        no_valid_policy=NoValidPolicy(values["output.no_valid_policy"]),
        publish_stop_trajectory=bool(values["output.publish_stop_trajectory"]),
        stop_decel_mps2=float(values["output.stop_decel_mps2"]),
    )


def odometry_gate_config(values: dict[str, Any]) -> OdometryGateConfig:
    """OdometryGateConfig from parameter values; raises ValueError naming the bad value."""
    return OdometryGateConfig(
        odom_frame_id=values["input.odom_frame_id"],
        base_frame_id=values["input.base_frame_id"],
        max_speed_mps=float(values["input.odometry_max_speed_mps"]),
        max_gap_s=float(values["history.max_gap_s"]),
    )


def defaults() -> dict[str, Any]:
    return {p.name: p.default for p in PARAMS}


def markdown_table() -> str:
    """The README parameter table."""
    rows = ["| parameter | default | range / choices | dynamic | description |", "|---|---|---|---|---|"]
    for p in PARAMS:
        allowed = ", ".join(p.choices) if p.choices else (f"[{p.range[0]}, {p.range[1]}]" if p.range else "")
        rows.append(f"| `{p.name}` | `{p.default}` | {allowed} | {'yes' if p.dynamic else 'no'} | {p.description} |")
    return "\n".join(rows)


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ".inf" if value == float("inf") else repr(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return str(value)


def yaml_text() -> str:
    """config/planner.yaml: every parameter with its default, description, range and whether it is dynamic."""
    lines = [
        "# Parameters of the Alpamayo planner node. Generated from alpamayo_ros/ros/params.py:",
        "#   python -m alpamayo_ros.ros.params --yaml > config/planner.yaml",
        "# `/**:` applies to any node name and namespace. [dynamic] parameters may change at run time",
        "# (`ros2 param set`); the others are read-only once the node is configured.",
        "/**:",
        "  ros__parameters:",
    ]
    for p in PARAMS:
        allowed = f" One of: {', '.join(p.choices)}." if p.choices else (
            f" Range [{p.range[0]}, {p.range[1]}]." if p.range else "")
        lines.append(f"    # {p.description}{allowed}{' [dynamic]' if p.dynamic else ''}")
        lines.append(f"    {p.name}: {_yaml_value(p.default)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--markdown", action="store_true", help="print the README parameter table")
    parser.add_argument("--yaml", action="store_true", help="print config/planner.yaml")
    parsed = parser.parse_args()
    if parsed.markdown:
        print(markdown_table())
    if parsed.yaml:
        print(yaml_text(), end="")
