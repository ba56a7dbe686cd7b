"""Conversions between ROS messages and the planning core's plain types (no cv_bridge, no tf2)."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, PoseStamped
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from alpamayo_ros.msg import TrajectorySet
from alpamayo_ros.planner.images import decode_compressed, decode_raw, encode_raw
from alpamayo_ros.planner.overlay import draw_overlay
from alpamayo_ros.planner.rotations import matrix_to_quat
from alpamayo_ros.planner.types import NS_PER_S, EgoSample, Frame, Plan


def stamp_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


def image_to_frame(msg: Image) -> Frame:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16) -> RGB Frame; raises ImageDecodeError."""
    rgb = decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))
    return Frame(stamp_ns=stamp_to_ns(msg.header.stamp), image=rgb)


def compressed_to_frame(msg: CompressedImage) -> Frame:
    """sensor_msgs/CompressedImage (jpeg, png) -> RGB Frame; raises ImageDecodeError."""
    return Frame(stamp_ns=stamp_to_ns(msg.header.stamp), image=decode_compressed(msg.format, msg.data))


def rgb_to_image(rgb: np.ndarray, stamp: Time, frame_id: str) -> Image:
    """[H, W, 3] uint8 RGB -> sensor_msgs/Image rgb8."""
    step, data = encode_raw(rgb, "rgb8")
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8", step=step)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.data = data
    return msg


def overlay_image(plan: Plan, stamp: Time, camera: str, info: CameraInfo | None,
                  camera_pose: tuple[float, ...]) -> Image | None:
    """The frame of `camera` at t0 with the selected trajectory and its reasoning drawn on it (rgb8), or None
    when the plan has no selected candidate or no such camera."""
    obs = plan.observation
    if camera not in obs.camera_names or plan.selected_index < 0 or not obs.images:
        return None
    image = obs.images[obs.camera_names.index(camera)][-1]  # [H, W, 3] the frame at t0
    k = np.array(info.k, dtype=np.float64).reshape(3, 3) if info is not None and any(info.k) else None
    rgb = draw_overlay(
        image, plan.result.xyz, plan.selected_index, plan.result.reasoning[plan.selected_index],
        camera_name=camera, camera_pose=camera_pose, intrinsics=k,
        intrinsics_size_hw=(info.height, info.width) if info is not None else None)
    return rgb_to_image(rgb, stamp, camera)


def odometry_to_sample(msg: Odometry) -> EgoSample:
    """nav_msgs/Odometry (pose of child_frame_id in header.frame_id, twist in child_frame_id) -> EgoSample.

    Validation of values (non-finite, zero quaternion) happens in the OdometryBuffer.
    """
    p, q, v = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist.linear
    return EgoSample(
        stamp_ns=stamp_to_ns(msg.header.stamp),
        position=np.array([p.x, p.y, p.z], dtype=np.float64),
        orientation_xyzw=np.array([q.x, q.y, q.z, q.w], dtype=np.float64),
        linear_velocity=np.array([v.x, v.y, v.z], dtype=np.float64),
    )


def trajectory_to_path(
    xyz: np.ndarray,
    rot: np.ndarray,
    t0_ns: int,
    dt_ns: int,
    frame_id: str,
    origin: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """One trajectory -> nav_msgs/Path; pose k is stamped t0 + (k + 1) * dt.

    Args:
        xyz: [T, 3] positions in the ego frame at t0.
        rot: [T, 3, 3] orientations in the ego frame at t0.
        origin: (position [3], rotation [3, 3]) of the ego frame at t0 in `frame_id`; None = identity
            (the path is expressed in base_link at t0).
    """
    if origin is not None:
        position, rotation = origin
        xyz = xyz.astype(np.float64) @ rotation.T + position  # [T, 3]
        rot = rotation @ rot.astype(np.float64)  # [T, 3, 3]
    quats = matrix_to_quat(rot)  # [T, 4] xyzw
    path = Path()
    path.header.stamp, path.header.frame_id = ns_to_stamp(t0_ns), frame_id
    for k, (p, q) in enumerate(zip(xyz.tolist(), quats.tolist())):
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = ns_to_stamp(t0_ns + (k + 1) * dt_ns), frame_id
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = p
        o = pose.pose.orientation
        o.x, o.y, o.z, o.w = q
        path.poses.append(pose)
    return path


def plan_to_trajectory_set(plan: Plan, *, frame_id: str, in_odom_frame: bool, model_id: str,
                           dt_s: float, inference_ms: float) -> TrajectorySet:
    """A completed Plan -> TrajectorySet stamped with t0 (never the publish time)."""
    obs, result = plan.observation, plan.result
    origin = (obs.t0_position, obs.t0_rotation) if in_odom_frame else None
    msg = TrajectorySet()
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(obs.t0_ns), frame_id
    msg.observation_time = msg.header.stamp
    dt_ns = round(dt_s * NS_PER_S)
    msg.trajectories = [
        trajectory_to_path(result.xyz[s], result.rot[s], obs.t0_ns, dt_ns, frame_id, origin)
        for s in range(result.xyz.shape[0])
    ]
    msg.scores = [float(x) for x in np.nan_to_num(plan.scores, nan=-np.inf)]
    msg.flags = [int(f) for f in plan.flags]
    msg.reasoning = list(result.reasoning)
    msg.selected_index = int(plan.selected_index)
    msg.model_id = model_id
    msg.inference_ms = float(inference_ms)
    return msg


_CANDIDATE = ColorRGBA(r=0.3, g=0.6, b=1.0, a=0.5)
_SELECTED = ColorRGBA(r=0.1, g=1.0, b=0.2, a=1.0)
_REJECTED = ColorRGBA(r=1.0, g=0.2, b=0.2, a=0.4)
_TEXT = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)


def trajectory_set_markers(msg: TrajectorySet, lifetime_s: float) -> MarkerArray:
    """RViz markers: every candidate as a line strip (selected one thick and green, rejected red) and the
    selected reasoning as a text marker above the ego vehicle."""
    markers = MarkerArray()
    clear = Marker(action=Marker.DELETEALL)
    clear.header = msg.header
    markers.markers.append(clear)
    lifetime = ns_to_stamp(round(lifetime_s * NS_PER_S))
    for i, path in enumerate(msg.trajectories):
        selected = i == msg.selected_index
        m = Marker(ns="alpamayo/candidates", id=i, type=Marker.LINE_STRIP, action=Marker.ADD)
        m.header = msg.header
        m.pose.orientation.w = 1.0
        m.scale.x = 0.35 if selected else 0.12
        m.color = _SELECTED if selected else (_REJECTED if msg.flags[i] else _CANDIDATE)
        m.points = [Point(x=p.pose.position.x, y=p.pose.position.y, z=p.pose.position.z) for p in path.poses]
        m.lifetime.sec, m.lifetime.nanosec = lifetime.sec, lifetime.nanosec
        markers.markers.append(m)
    if 0 <= msg.selected_index < len(msg.reasoning):
        text = Marker(ns="alpamayo/reasoning", id=0, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.header = msg.header
        start = msg.trajectories[msg.selected_index].poses[0].pose.position
        text.pose.position.x, text.pose.position.y, text.pose.position.z = start.x, start.y, start.z + 3.0
        text.pose.orientation.w = 1.0
        text.scale.z = 0.8
        text.color = _TEXT
        text.text = msg.reasoning[msg.selected_index] or "(no reasoning)"
        text.lifetime.sec, text.lifetime.nanosec = lifetime.sec, lifetime.nanosec
        markers.markers.append(text)
    return markers
