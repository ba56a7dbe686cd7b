"""Choosing one trajectory among the model's samples.

Scores are "higher is better" in every mode; candidates that are invalid (mask False, or any non-finite
coordinate) score -inf and are never selected.
"""

from __future__ import annotations

import enum

import numpy as np


class SelectionMode(enum.Enum):
    """How the published trajectory is picked from the S samples."""

    FIRST = "first"  # the first valid sample (upstream takes sample 0); score = -index
    MEDOID = "medoid"  # the consensus: least mean distance to the other valid samples; score = -distance, m
    MIN_LATERAL_JERK = "min_lateral_jerk"  # the smoothest sideways; score = -RMS lateral jerk, m/s^3


def _medoid_scores(xyz: np.ndarray) -> np.ndarray:
    """[S] -mean over the other samples of the average waypoint distance, for S >= 1 samples [S, T, 3]."""
    num = xyz.shape[0]
    if num == 1:
        return np.zeros(1)
    distances = np.linalg.norm(xyz[:, None] - xyz[None, :], axis=-1).mean(axis=-1)  # [S, S], diagonal 0
    return -distances.sum(axis=1) / (num - 1)


def _lateral_jerk_scores(xyz: np.ndarray, dt_s: float) -> np.ndarray:
    """[S] -RMS lateral jerk of [S, T, 3] trajectories sampled every dt_s (planar, x/y only).

    Lateral acceleration is (v x a) / |v| (= v^2 * curvature), from finite differences of the waypoints; its
    time derivative is the lateral jerk. Where |v| is ~0 the heading is undefined and the lateral acceleration
    is taken as 0 (|v x a| / |v| <= |a| keeps it bounded elsewhere).
    """
    xy = xyz[..., :2]  # [S, T, 2]
    velocity = np.diff(xy, axis=1) / dt_s  # [S, T-1, 2]
    accel = np.diff(velocity, axis=1) / dt_s  # [S, T-2, 2]
    v_mid = 0.5 * (velocity[:, 1:] + velocity[:, :-1])  # [S, T-2, 2], velocity at the accel sample times
    cross = v_mid[..., 0] * accel[..., 1] - v_mid[..., 1] * accel[..., 0]  # [S, T-2]
    speed = np.linalg.norm(v_mid, axis=-1)  # [S, T-2]
    lateral_accel = np.where(speed > 1e-6, cross / np.maximum(speed, 1e-6), 0.0)  # [S, T-2], m/s^2
    lateral_jerk = np.diff(lateral_accel, axis=1) / dt_s  # [S, T-3], m/s^3
    return -np.sqrt(np.mean(lateral_jerk**2, axis=1))


def select(
    xyz: np.ndarray,
    mode: SelectionMode,
    valid_mask: np.ndarray,
    dt_s: float = 0.1,
) -> tuple[int, np.ndarray]:
    """Pick one of S candidate trajectories.

    Args:
        xyz: [S, T, 3] waypoints in the ego frame, m.
        mode: selection rule.
        valid_mask: [S] bool, False for candidates a validator rejected.
        dt_s: waypoint spacing (MIN_LATERAL_JERK needs T >= 4).

    Returns:
        (index of the chosen candidate or -1 if none is valid, scores [S] float32 with -inf for invalid ones).
        Ties go to the lower index.
    """
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise ValueError(f"xyz must be [S, T, 3], got {xyz.shape}")
    num_samples, num_points, _ = xyz.shape
    mask = np.asarray(valid_mask)
    if mask.dtype != np.bool_ or mask.shape != (num_samples,):
        raise ValueError(f"valid_mask must be [{num_samples}] bool, got {mask.shape} {mask.dtype}")
    if not dt_s > 0:
        raise ValueError(f"dt_s must be > 0, got {dt_s}")
    if mode is SelectionMode.MIN_LATERAL_JERK and num_points < 4:
        raise ValueError(f"min_lateral_jerk needs at least 4 waypoints, got {num_points}")
    valid = mask & np.all(np.isfinite(xyz.reshape(num_samples, -1)), axis=1)  # [S]
    scores = np.full(num_samples, -np.inf, dtype=np.float32)
    if not valid.any():
        return -1, scores
    candidates = xyz[valid].astype(np.float64)  # [S', T, 3]
    if mode is SelectionMode.FIRST:
        valid_scores = 0.0 - np.flatnonzero(valid)  # 0, -1, -2, ... (0.0 - 0 avoids a -0.0 score)
    elif mode is SelectionMode.MEDOID:
        valid_scores = _medoid_scores(candidates)
    elif mode is SelectionMode.MIN_LATERAL_JERK:
        valid_scores = _lateral_jerk_scores(candidates, dt_s)
    else:
        raise ValueError(f"unknown selection mode {mode!r}")
    scores[valid] = valid_scores
    valid_indices = np.flatnonzero(valid)
    return int(valid_indices[int(np.argmax(valid_scores))]), scores
