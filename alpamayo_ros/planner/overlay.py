"""Debug overlay: the planned trajectories projected into a camera image, with the reasoning text."""

from __future__ import annotations

import re

import cv2
import numpy as np

_SELECTED_RGB = (40, 255, 60)
_CANDIDATE_RGB = (80, 160, 255)


def camera_rotation(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """[3, 3] rotation of a camera body frame (x forward, y left, z up) in base_link, from Z-Y-X Euler angles."""
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    return rz @ ry @ rx


# Optical frame (z forward, x right, y down) axes expressed in the body frame (x forward, y left, z up).
_BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def default_intrinsics(camera_name: str, size_hw: tuple[int, int]) -> np.ndarray:
    """[3, 3] pinhole K with the horizontal field of view in the camera name (`..._120fov`), centred."""
    match = re.search(r"(\d+)fov", camera_name)
    hfov = np.deg2rad(float(match.group(1)) if match else 90.0)
    h, w = size_hw
    f = (w / 2) / np.tan(hfov / 2)
    return np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]])


def project(points_base: np.ndarray, camera_pose: tuple[float, ...], k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project base_link points into the image.

    Args:
        points_base: [N, 3] points in base_link.
        camera_pose: (x, y, z, roll, pitch, yaw) of the camera body frame in base_link.
        k: [3, 3] intrinsics.

    Returns:
        (pixels [N, 2] float, in_front [N] bool)
    """
    position = np.asarray(camera_pose[:3], dtype=np.float64)
    rotation = camera_rotation(*camera_pose[3:6]) @ _BODY_FROM_OPTICAL  # optical -> base_link
    cam = (points_base - position) @ rotation  # [N, 3] in the optical frame
    in_front = cam[:, 2] > 0.1
    uvw = cam @ k.T  # [N, 3]
    pixels = uvw[:, :2] / np.maximum(uvw[:, 2:3], 1e-6)
    return pixels, in_front


def draw_overlay(image: np.ndarray, xyz: np.ndarray, selected: int, reasoning: str, *, camera_name: str,
                 camera_pose: tuple[float, ...], intrinsics: np.ndarray | None,
                 intrinsics_size_hw: tuple[int, int] | None) -> np.ndarray:
    """Draw every candidate (thin blue) and the selected one (thick green) on a copy of `image`.

    Args:
        image: [H, W, 3] uint8 RGB.
        xyz: [S, T, 3] trajectories in base_link at t0.
        intrinsics: K from CameraInfo for an image of `intrinsics_size_hw`, rescaled to `image`; None = a
            pinhole guessed from the field of view in `camera_name`.
    """
    h, w = image.shape[:2]
    if intrinsics is None or intrinsics_size_hw is None:
        k = default_intrinsics(camera_name, (h, w))
    else:
        scale = np.diag([w / intrinsics_size_hw[1], h / intrinsics_size_hw[0], 1.0])
        k = scale @ intrinsics
    out = np.ascontiguousarray(image.copy())
    thickness = max(1, round(w / 240))
    order = [s for s in range(xyz.shape[0]) if s != selected] + ([selected] if selected >= 0 else [])
    for s in order:
        pixels, in_front = project(xyz[s].astype(np.float64), camera_pose, k)
        pts = np.round(pixels[in_front]).astype(np.int32).reshape(-1, 1, 2)
        if len(pts) >= 2:
            color = _SELECTED_RGB if s == selected else _CANDIDATE_RGB
            cv2.polylines(out, [pts], False, color, thickness * (3 if s == selected else 1), cv2.LINE_AA)
    if reasoning:
        scale = max(0.3, w / 1400)
        cv2.putText(out, reasoning[:90], (8, max(16, round(24 * scale * 1.6))), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), max(1, thickness // 2), cv2.LINE_AA)
    return out
