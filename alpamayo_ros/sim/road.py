"""Planar road geometry: a lane centre line built from a piecewise-linear curvature profile.

The world is flat (z = 0) and uses the odometry frame convention of MODEL.md §4.4 (x forward at the start,
y left, z up). Curvature is positive for a left turn. Linear curvature ramps give clothoid transitions, so yaw
rate stays continuous for a vehicle that follows the line at a continuous speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CurvaturePiece:
    """One piece of a curvature profile: curvature ramps linearly to `end_curvature_1pm` over `length_m`."""

    length_m: float  # arc length of the piece, m
    end_curvature_1pm: float  # curvature at the end of the piece, 1/m (left turn positive)

    def __post_init__(self) -> None:
        if not self.length_m > 0.0:
            raise ValueError(f"CurvaturePiece.length_m must be > 0, got {self.length_m}")


@dataclass(frozen=True)
class LanePath:
    """A lane centre line sampled at constant arc-length spacing."""

    s_m: np.ndarray  # [N] float64 arc length, m, strictly increasing (may start below 0)
    xy_m: np.ndarray  # [N, 2] float64 position, m
    heading_rad: np.ndarray  # [N] float64 heading, continuous (never wrapped)
    curvature_1pm: np.ndarray  # [N] float64 curvature, 1/m

    @property
    def start_s_m(self) -> float:
        return float(self.s_m[0])

    @property
    def end_s_m(self) -> float:
        return float(self.s_m[-1])

    def sample(self, s_m: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position, heading and curvature at arc lengths `s_m` (linear interpolation, clamped at the ends).

        Args:
            s_m: [...] arc lengths, m.

        Returns:
            xy [..., 2] m, heading [...] rad, curvature [...] 1/m.
        """
        s = np.asarray(s_m, dtype=np.float64)
        x = np.interp(s, self.s_m, self.xy_m[:, 0])
        y = np.interp(s, self.s_m, self.xy_m[:, 1])
        heading = np.interp(s, self.s_m, self.heading_rad)
        curvature = np.interp(s, self.s_m, self.curvature_1pm)
        return np.stack([x, y], axis=-1), heading, curvature

    def offset(self, s_m: np.ndarray | float, lateral_m: np.ndarray | float) -> np.ndarray:
        """Points at arc lengths `s_m` shifted `lateral_m` to the left of the line.

        Returns:
            [..., 2] positions, m (broadcast of the two inputs).
        """
        xy, heading, _ = self.sample(s_m)
        lateral = np.asarray(lateral_m, dtype=np.float64)[..., None]
        normal = np.stack([-np.sin(heading), np.cos(heading)], axis=-1)  # left normal
        return xy + lateral * normal

    def render_stations(self, max_step_m: float, max_turn_rad: float) -> np.ndarray:
        """Arc lengths for a polygon strip: at most `max_step_m` apart and `max_turn_rad` of heading change.

        Returns:
            [M] increasing arc lengths including both ends, m.
        """
        stations = [self.start_s_m]
        last_s, last_heading = self.start_s_m, float(self.heading_rad[0])
        for s, heading in zip(self.s_m[1:], self.heading_rad[1:]):
            if s - last_s >= max_step_m or abs(heading - last_heading) >= max_turn_rad:
                stations.append(float(s))
                last_s, last_heading = float(s), float(heading)
        if stations[-1] != self.end_s_m:
            stations.append(self.end_s_m)
        return np.asarray(stations)


def build_lane_path(pieces: Sequence[CurvaturePiece], start_s_m: float, step_m: float = 0.5) -> LanePath:
    """Integrate a curvature profile into a lane centre line through the origin with heading 0 at s = 0.

    Args:
        pieces: curvature pieces in driving order; curvature starts at 0.
        start_s_m: arc length of the first sample (<= 0, so road exists behind the origin).
        step_m: sample spacing, m.

    Returns:
        The sampled line. Heading and position are shifted so that s = 0 is the origin with heading 0.
    """
    if start_s_m > 0.0:
        raise ValueError(f"start_s_m must be <= 0, got {start_s_m}")
    if not step_m > 0.0:
        raise ValueError(f"step_m must be > 0, got {step_m}")
    knots_s = [start_s_m]
    knots_k = [0.0]
    for piece in pieces:
        knots_s.append(knots_s[-1] + piece.length_m)
        knots_k.append(piece.end_curvature_1pm)
    num = int(np.floor((knots_s[-1] - start_s_m) / step_m)) + 1
    s = start_s_m + step_m * np.arange(num)  # [N]
    curvature = np.interp(s, knots_s, knots_k)  # [N]
    # Trapezoidal integration: heading from curvature, position from the heading direction.
    heading = np.concatenate([[0.0], np.cumsum(0.5 * (curvature[1:] + curvature[:-1]) * step_m)])
    heading -= np.interp(0.0, s, heading)
    direction = np.stack([np.cos(heading), np.sin(heading)], axis=-1)  # [N, 2]
    steps = 0.5 * (direction[1:] + direction[:-1]) * step_m  # [N - 1, 2]
    xy = np.concatenate([np.zeros((1, 2)), np.cumsum(steps, axis=0)])
    xy -= np.array([np.interp(0.0, s, xy[:, 0]), np.interp(0.0, s, xy[:, 1])])
    return LanePath(s_m=s, xy_m=xy, heading_rad=heading, curvature_1pm=curvature)
