"""Small quaternion helpers in ROS order (x, y, z, w), float64.

Written here rather than taken from scipy/transforms3d so the planning core needs numpy only, and so the
quaternion order is never in doubt: every quaternion in `alpamayo_ros.planner` is (x, y, z, w).
"""

from __future__ import annotations

import math

import numpy as np


def quat_normalize(q_xyzw: np.ndarray) -> np.ndarray:
    """Return `q_xyzw` ([4]) scaled to unit norm; raises ValueError for a (near-)zero quaternion."""
    q = np.asarray(q_xyzw, dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not norm > 1e-12:  # also catches NaN
        raise ValueError(f"cannot normalise quaternion {q.tolist()} (norm {norm})")
    return q / norm


def quat_conjugate(q_xyzw: np.ndarray) -> np.ndarray:
    """Inverse rotation of a unit quaternion ([4])."""
    x, y, z, w = q_xyzw
    return np.array([-x, -y, -z, w], dtype=np.float64)


def quat_multiply(a_xyzw: np.ndarray, b_xyzw: np.ndarray) -> np.ndarray:
    """Hamilton product a * b ([4] each): the rotation b followed by a, as for rotation matrices A @ B.

    Grouped as (aw bv + bw av) + av x bv so that q^-1 * q has an exactly zero vector part.
    """
    a_vec, a_w = np.asarray(a_xyzw[:3], dtype=np.float64), float(a_xyzw[3])
    b_vec, b_w = np.asarray(b_xyzw[:3], dtype=np.float64), float(b_xyzw[3])
    vec = (a_w * b_vec + b_w * a_vec) + np.cross(a_vec, b_vec)  # [3]
    return np.array([*vec, a_w * b_w - float(np.dot(a_vec, b_vec))], dtype=np.float64)


def quat_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] of a quaternion [4] (normalised first)."""
    x, y, z, w = quat_normalize(q_xyzw)
    return np.array(
        [
            [1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y - z * w), 2.0 * (x * z + y * w)],
            [2.0 * (x * y + z * w), 1.0 - 2.0 * (x * x + z * z), 2.0 * (y * z - x * w)],
            [2.0 * (x * z - y * w), 2.0 * (y * z + x * w), 1.0 - 2.0 * (x * x + y * y)],
        ],
        dtype=np.float64,
    )


def quat_slerp(q0_xyzw: np.ndarray, q1_xyzw: np.ndarray, u: float) -> np.ndarray:
    """Spherical interpolation from q0 (u = 0) to q1 (u = 1) along the shorter arc.

    Computed as q0 * exp(u * log(q0^-1 q1)), so u outside [0, 1] extrapolates at the same constant angular
    rate, which is what bounded extrapolation of odometry needs.

    Args:
        q0_xyzw: [4] unit quaternion at u = 0.
        q1_xyzw: [4] unit quaternion at u = 1.
        u: interpolation parameter (any real number).

    Returns:
        [4] unit quaternion, (x, y, z, w).
    """
    q0 = quat_normalize(q0_xyzw)
    rel = quat_multiply(quat_conjugate(q0), quat_normalize(q1_xyzw))  # [4], rotation from q0 to q1
    if rel[3] < 0.0:  # q and -q are the same rotation; take the short way round
        rel = -rel
    vec_norm = float(np.linalg.norm(rel[:3]))
    half_angle = math.atan2(vec_norm, rel[3])  # in [0, pi/2]
    if vec_norm < 1e-15:
        return q0
    axis = rel[:3] / vec_norm
    scaled = u * half_angle
    step = np.concatenate([axis * math.sin(scaled), [math.cos(scaled)]])
    return quat_normalize(quat_multiply(q0, step))


def matrix_to_quat(rot: np.ndarray) -> np.ndarray:
    """Unit quaternions [..., 4] (x, y, z, w, w >= 0) of rotation matrices [..., 3, 3].

    Shepperd's method: per matrix, the largest of (w, x, y, z) is taken from the diagonal and the other three
    from off-diagonal sums, which keeps the division well conditioned for every rotation.
    """
    r = np.asarray(rot, dtype=np.float64)
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    # 4 * (w², x², y², z²) from the diagonal, [..., 4] in (x, y, z, w) order.
    squares = np.stack([1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22, 1 + m00 + m11 + m22], -1)
    pivot = np.argmax(squares, axis=-1)  # [...]
    s = 2.0 * np.sqrt(np.maximum(np.take_along_axis(squares, pivot[..., None], -1)[..., 0], 1e-300))  # 4|q_pivot|
    d21, d02, d10 = r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]
    s01, s02, s12 = r[..., 0, 1] + r[..., 1, 0], r[..., 0, 2] + r[..., 2, 0], r[..., 1, 2] + r[..., 2, 1]
    candidates = np.stack([
        np.stack([s / 4, s01 / s, s02 / s, d21 / s], -1),  # x largest
        np.stack([s01 / s, s / 4, s12 / s, d02 / s], -1),  # y largest
        np.stack([s02 / s, s12 / s, s / 4, d10 / s], -1),  # z largest
        np.stack([d21 / s, d02 / s, d10 / s, s / 4], -1),  # w largest
    ], -2)  # [..., 4 pivots, 4]
    q = np.take_along_axis(candidates, pivot[..., None, None], -2)[..., 0, :]  # [..., 4]
    q = np.where(q[..., 3:4] < 0, -q, q)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)
