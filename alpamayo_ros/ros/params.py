"""The planner node's parameters: one table (name, default, description, range, dynamic) and the builders of
the core's config dataclasses from parameter values.

`config/planner.yaml` lists every parameter here with its default (a unit test keeps them in sync), and the
README parameter table is generated from this module (`python -m alpamayo_ros.ros.params --markdown`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from alpamayo_ros.planner.cycle import PlannerConfig
from alpamayo_ros.planner.validator import NoValidPolicy, ValidatorConfig
from alpamayo_ros.planner.egomotion import HistoryConfig, SpeedSource
from alpamayo_ros.planner.selection import SelectionMode
from alpamayo_ros.planner.sync import DEFAULT_CAMERA_NAMES, SyncConfig


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
    ParamSpec("planning.rate_hz", 2.0, "Planning timer rate, Hz (ROS time: follows /clock with use_sim_time).",
              range=(0.1, 30.0), dynamic=True),
    ParamSpec("planning.num_samples", 1, "Trajectories (each with its own reasoning) sampled per cycle.",
              range=(1, 16), dynamic=True),
    ParamSpec("planning.seed", -1, "Sampling seed used every cycle; -1 = fresh randomness each cycle.",
              range=(-1, 2**31 - 1), dynamic=True),
    ParamSpec("planning.selection", "first", "How the published plan is chosen among the samples.",
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


def defaults() -> dict[str, Any]:
    return {p.name: p.default for p in PARAMS}


def markdown_table() -> str:
    """The README parameter table."""
    rows = ["| parameter | default | range / choices | dynamic | description |", "|---|---|---|---|---|"]
    for p in PARAMS:
        allowed = ", ".join(p.choices) if p.choices else (f"[{p.range[0]}, {p.range[1]}]" if p.range else "")
        rows.append(f"| `{p.name}` | `{p.default}` | {allowed} | {'yes' if p.dynamic else 'no'} | {p.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--markdown", action="store_true", help="print the README parameter table")
    if parser.parse_args().markdown:
        print(markdown_table())
