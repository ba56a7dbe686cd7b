"""rosbags message objects (ROS 2 Jazzy definitions) for the simulated sensors and ground truth.

rosbags' typestore classes are plain dataclasses; these builders fill them from the scenario and camera rig.
Quaternions are ROS order (x, y, z, w); transforms3d's are (w, x, y, z) and are converted here.
"""

from __future__ import annotations

import cv2
import numpy as np
from rosbags.typesys import Stores, get_typestore
from transforms3d.quaternions import mat2quat

from alpamayo_ros.sim.cameras import CameraModel
from alpamayo_ros.sim.scene import EgoState

TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
_T = TYPESTORE.types
NS_PER_S = 1_000_000_000
ODOM_FRAME = "odom"
BASE_FRAME = "base_link"
# image_transport's CompressedImage format string: the image was rgb8, the JPEG holds it as bgr8.
JPEG_FORMAT = "rgb8; jpeg compressed bgr8"
# Diagonal standard deviations reported with the odometry (x, y, z, roll, pitch, yaw): m and rad for the
# pose, m/s and rad/s for the twist.
POSE_STDDEV = (0.05, 0.05, 0.01, 0.005, 0.005, 0.01)
TWIST_STDDEV = (0.05, 0.05, 0.01, 0.005, 0.005, 0.01)


def stamp(stamp_ns: int) -> object:
    """builtin_interfaces/Time from int nanoseconds."""
    return _T["builtin_interfaces/msg/Time"](sec=stamp_ns // NS_PER_S, nanosec=stamp_ns % NS_PER_S)


def header(stamp_ns: int, frame_id: str) -> object:
    return _T["std_msgs/msg/Header"](stamp=stamp(stamp_ns), frame_id=frame_id)


def quaternion_xyzw(rotation: np.ndarray) -> np.ndarray:
    """[4] ROS-order quaternion of a [3, 3] rotation matrix."""
    w, x, y, z = mat2quat(rotation)
    return np.array([x, y, z, w])


def _quaternion(rotation: np.ndarray) -> object:
    qx, qy, qz, qw = quaternion_xyzw(rotation)
    return _T["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz, w=qw)


def _pose(position: np.ndarray, rotation: np.ndarray) -> object:
    x, y, z = (float(v) for v in position)
    return _T["geometry_msgs/msg/Pose"](position=_T["geometry_msgs/msg/Point"](x=x, y=y, z=z),
                                        orientation=_quaternion(rotation))


def _vector3(x: float, y: float, z: float) -> object:
    return _T["geometry_msgs/msg/Vector3"](x=float(x), y=float(y), z=float(z))


def _transform(stamp_ns: int, parent: str, child: str, position: np.ndarray, rotation: np.ndarray) -> object:
    return _T["geometry_msgs/msg/TransformStamped"](
        header=header(stamp_ns, parent),
        child_frame_id=child,
        transform=_T["geometry_msgs/msg/Transform"](translation=_vector3(*position),
                                                    rotation=_quaternion(rotation)),
    )


def compressed_image(stamp_ns: int, camera: CameraModel, rgb: np.ndarray, jpeg_quality: int) -> object:
    """sensor_msgs/CompressedImage (JPEG) of an [H, W, 3] uint8 RGB image."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {camera.name}")
    return _T["sensor_msgs/msg/CompressedImage"](header=header(stamp_ns, camera.spec.frame_id),
                                                 format=JPEG_FORMAT, data=jpeg.reshape(-1))


def raw_image(stamp_ns: int, camera: CameraModel, rgb: np.ndarray) -> object:
    """sensor_msgs/Image (rgb8, no row padding) of an [H, W, 3] uint8 RGB image."""
    height, width = rgb.shape[:2]
    return _T["sensor_msgs/msg/Image"](header=header(stamp_ns, camera.spec.frame_id), height=height,
                                       width=width, encoding="rgb8", is_bigendian=0, step=3 * width,
                                       data=np.ascontiguousarray(rgb).reshape(-1))


def camera_info(stamp_ns: int, camera: CameraModel) -> object:
    """sensor_msgs/CameraInfo: pinhole, plumb_bob with zero distortion, identity rectification."""
    roi = _T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return _T["sensor_msgs/msg/CameraInfo"](
        header=header(stamp_ns, camera.spec.frame_id), height=camera.height_px, width=camera.width_px,
        distortion_model="plumb_bob", d=camera.D, k=camera.K.reshape(-1), r=np.eye(3).reshape(-1),
        p=camera.P.reshape(-1), binning_x=0, binning_y=0, roi=roi,
    )


def odometry(stamp_ns: int, ego: EgoState) -> object:
    """nav_msgs/Odometry of base_link in odom; twist in base_link (forward speed and yaw rate)."""
    with_cov = _T["geometry_msgs/msg/PoseWithCovariance"](
        pose=_pose(ego.position_m, ego.rotation), covariance=np.diag(np.square(POSE_STDDEV)).reshape(-1))
    twist = _T["geometry_msgs/msg/Twist"](linear=_vector3(ego.speed_mps, 0.0, 0.0),
                                          angular=_vector3(0.0, 0.0, ego.yaw_rate_rps))
    twist_cov = _T["geometry_msgs/msg/TwistWithCovariance"](
        twist=twist, covariance=np.diag(np.square(TWIST_STDDEV)).reshape(-1))
    return _T["nav_msgs/msg/Odometry"](header=header(stamp_ns, ODOM_FRAME), child_frame_id=BASE_FRAME,
                                       pose=with_cov, twist=twist_cov)


def odom_tf(stamp_ns: int, ego: EgoState) -> object:
    """tf2_msgs/TFMessage with odom -> base_link."""
    return _T["tf2_msgs/msg/TFMessage"](
        transforms=[_transform(stamp_ns, ODOM_FRAME, BASE_FRAME, ego.position_m, ego.rotation)])


def camera_static_tf(stamp_ns: int, cameras: tuple[CameraModel, ...]) -> object:
    """tf2_msgs/TFMessage with base_link -> <camera>_optical_frame for every camera."""
    return _T["tf2_msgs/msg/TFMessage"](transforms=[
        _transform(stamp_ns, BASE_FRAME, c.spec.frame_id, np.asarray(c.spec.position_m),
                   c.spec.rotation_base_optical())
        for c in cameras])


def clock(stamp_ns: int) -> object:
    return _T["rosgraph_msgs/msg/Clock"](clock=stamp(stamp_ns))


def string(text: str) -> object:
    return _T["std_msgs/msg/String"](data=text)


def ego_path(stamp_ns: int, xyz: np.ndarray, yaw: np.ndarray, dt_ns: int) -> object:
    """nav_msgs/Path in base_link at `stamp_ns`; pose k (0-based) is stamped stamp_ns + (k + 1) * dt_ns.

    Args:
        xyz: [T, 3] positions in the ego frame at stamp_ns, m.
        yaw: [T] yaws relative to that frame, rad.
    """
    poses = []
    for k, (position, heading) in enumerate(zip(xyz, yaw)):
        c, s = np.cos(heading), np.sin(heading)
        rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        pose_header = header(stamp_ns + (k + 1) * dt_ns, BASE_FRAME)
        poses.append(_T["geometry_msgs/msg/PoseStamped"](header=pose_header, pose=_pose(position, rotation)))
    return _T["nav_msgs/msg/Path"](header=header(stamp_ns, BASE_FRAME), poses=poses)
