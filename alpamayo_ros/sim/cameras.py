"""The four Alpamayo-R1 cameras (MODEL.md §4.1) as ideal pinhole cameras on a mid-size car.

Frames: base_link is the rear axle centre on the ground (x forward, y left, z up). Each camera's image
frame is an optical frame (`<name>_optical_frame`: z along the optical axis, x right, y down), as ROS'
CameraInfo expects. Full resolution is 1080 x 1920 (H x W); `image_scale` shrinks it (0.25 -> 270 x 480,
1/6 -> 180 x 320, 0.1 -> 108 x 192). The real 120 deg cameras are fisheye; an undistorted pinhole with the
same horizontal field of view is a fair stand-in for synthetic data (distortion coefficients are all zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alpamayo_ros.sim.scene import EgoState

FULL_HEIGHT_PX = 1080
FULL_WIDTH_PX = 1920


@dataclass(frozen=True)
class CameraSpec:
    """Mounting and lens of one camera, independent of the image size."""

    name: str  # checkpoint camera name, also the prefix of its topics and frames
    index: int  # camera index in the dataset's table (MODEL.md §4.1)
    hfov_deg: float  # horizontal field of view
    position_m: tuple[float, float, float]  # optical centre in base_link, m
    yaw_deg: float  # optical axis azimuth from base_link x, positive to the left
    pitch_deg: float  # optical axis tilt, positive downward

    def __post_init__(self) -> None:
        if not 0.0 < self.hfov_deg < 170.0:
            raise ValueError(f"CameraSpec.hfov_deg must be in (0, 170) for a pinhole, got {self.hfov_deg}")

    @property
    def frame_id(self) -> str:
        return f"{self.name}_optical_frame"

    def rotation_base_optical(self) -> np.ndarray:
        """[3, 3] rotation taking optical-frame vectors to base_link."""
        yaw, pitch = np.deg2rad(self.yaw_deg), np.deg2rad(self.pitch_deg)
        # Optical axes in base_link for a level forward camera: x right = -y, y down = -z, z forward = +x.
        level = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
        cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
        rot_z = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
        rot_y = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])  # +pitch turns x toward -z
        return rot_z @ rot_y @ level


# Mounting: front cameras behind the windshield top, cross cameras at the front corners of the roof.
CAMERA_SPECS: tuple[CameraSpec, ...] = (
    CameraSpec("camera_cross_left_120fov", 0, 120.0, (1.65, 0.85, 1.40), 60.0, 6.0),
    CameraSpec("camera_front_wide_120fov", 1, 120.0, (1.80, 0.0, 1.45), 0.0, 4.0),
    CameraSpec("camera_cross_right_120fov", 2, 120.0, (1.65, -0.85, 1.40), -60.0, 6.0),
    CameraSpec("camera_front_tele_30fov", 6, 30.0, (1.80, 0.10, 1.45), 0.0, 1.0),
)


@dataclass(frozen=True)
class CameraModel:
    """A camera at one image size: pinhole intrinsics plus the extrinsics in base_link."""

    spec: CameraSpec
    height_px: int
    width_px: int

    def __post_init__(self) -> None:
        if self.height_px < 8 or self.width_px < 8:
            raise ValueError(
                f"CameraModel image size must be at least 8 x 8, got {self.height_px} x {self.width_px}")

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def focal_px(self) -> float:
        """Focal length in pixels (square pixels), from the horizontal field of view."""
        return 0.5 * self.width_px / np.tan(0.5 * np.deg2rad(self.spec.hfov_deg))

    @property
    def K(self) -> np.ndarray:
        """[3, 3] intrinsic matrix; the principal point is the image centre."""
        f = self.focal_px
        return np.array([[f, 0.0, 0.5 * self.width_px], [0.0, f, 0.5 * self.height_px], [0.0, 0.0, 1.0]])

    @property
    def D(self) -> np.ndarray:
        """[5] plumb_bob distortion coefficients (k1, k2, t1, t2, k3), all zero."""
        return np.zeros(5)

    @property
    def P(self) -> np.ndarray:
        """[3, 4] projection matrix [K | 0] (monocular)."""
        return np.concatenate([self.K, np.zeros((3, 1))], axis=1)

    def world_to_camera(self, ego: EgoState) -> tuple[np.ndarray, np.ndarray]:
        """Rotation [3, 3] and translation [3] with p_optical = R @ p_world + t."""
        rot_world_optical = ego.rotation @ self.spec.rotation_base_optical()
        center_world = ego.position_m + ego.rotation @ np.asarray(self.spec.position_m)
        rot = rot_world_optical.T
        return rot, -rot @ center_world

    def project(self, points_world: np.ndarray, ego: EgoState,
                near_m: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """Project world points into this camera mounted on the ego.

        Args:
            points_world: [N, 3] odometry-frame points, m.
            ego: the ego pose.
            near_m: points closer than this along the optical axis count as behind.

        Returns:
            pixels [N, 2] float64 (u right, v down; meaningless where not in front) and in_front [N] bool.
        """
        rot, trans = self.world_to_camera(ego)
        cam = points_world @ rot.T + trans  # [N, 3]
        in_front = cam[:, 2] > near_m
        depth = np.where(in_front, cam[:, 2], 1.0)
        f = self.focal_px
        u = f * cam[:, 0] / depth + 0.5 * self.width_px
        v = f * cam[:, 1] / depth + 0.5 * self.height_px
        pixels = np.stack([u, v], axis=-1)
        return pixels, in_front

    def in_image(self, pixels: np.ndarray, in_front: np.ndarray) -> np.ndarray:
        """[N] bool: in front of the camera and inside the image."""
        u, v = pixels[:, 0], pixels[:, 1]
        return in_front & (u >= 0.0) & (u < self.width_px) & (v >= 0.0) & (v < self.height_px)


def image_size(image_scale: float) -> tuple[int, int]:
    """(height, width) in pixels of the full 1080 x 1920 image scaled by `image_scale` (rounded)."""
    if not 0.0 < image_scale <= 1.0:
        raise ValueError(f"image_scale must be in (0, 1], got {image_scale}")
    return max(8, int(round(FULL_HEIGHT_PX * image_scale))), max(8, int(round(FULL_WIDTH_PX * image_scale)))


def camera_rig(image_scale: float = 1.0) -> tuple[CameraModel, ...]:
    """The four cameras in model order (cross_left, front_wide, cross_right, front_tele) at one image size."""
    height, width = image_size(image_scale)
    return tuple(CameraModel(spec, height, width) for spec in CAMERA_SPECS)
