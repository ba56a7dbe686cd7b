"""Roadside props: rows of buildings and street trees that keep clear of the roads and sidewalks."""

from __future__ import annotations

import numpy as np

from alpamayo_ros.sim.scene import Prop, PropKind, RoadLayout

# Facade colours (sRGB): sand, brick, concrete, light grey, ochre, pale blue-grey.
BUILDING_COLORS = ((196, 182, 150), (150, 80, 60), (140, 140, 136), (190, 190, 185), (180, 140, 80),
                   (150, 160, 170))
TREE_COLORS = ((60, 105, 50), (72, 112, 46), (50, 92, 55))


def _footprint(center: np.ndarray, yaw: float, length: float, width: float) -> np.ndarray:
    """[4, 2] corners of a rectangle."""
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.array([[1, 1], [1, -1], [-1, -1], [-1, 1]]) * (0.5 * length, 0.5 * width)
    return center + local @ np.array([[c, s], [-s, c]])


def _clear_of_roads(layout: RoadLayout, road_center: np.ndarray, corners: np.ndarray,
                    clearance_m: float) -> bool:
    """True if every corner is outside both roads' paved width plus sidewalks plus `clearance_m`.

    Args:
        road_center: [N, 2] samples of the ego road's centre line (between the two lanes).
        corners: [4, 2] footprint corners.
    """
    half_width = layout.cross_half_width_m + layout.sidewalk_width_m + clearance_m
    distance = np.sqrt(np.min(np.sum((corners[:, None, :] - road_center[None]) ** 2, axis=-1), axis=1))
    if np.any(distance < half_width):
        return False
    if layout.intersection_s_m is not None:
        center, along, _ = layout.intersection_frame()
        if np.any(np.abs((corners - center) @ along) < half_width):
            return False
    return True


def roadside_props(rng: np.random.Generator, layout: RoadLayout) -> tuple[Prop, ...]:
    """Buildings set back from both sidewalks and trees along the sidewalks' outer edge."""
    props: list[Prop] = []
    lane = layout.lane
    road_center = lane.offset(lane.s_m, 0.5 * layout.lane_width_m)  # [N, 2]
    for side in (1, -1):
        edge = layout.left_edge_m if side > 0 else layout.right_edge_m
        cursor = lane.start_s_m
        while cursor < lane.end_s_m:
            length = rng.uniform(10.0, 25.0)
            depth = rng.uniform(8.0, 16.0)
            setback = rng.uniform(2.0, 8.0)
            height = rng.uniform(6.0, 24.0)
            color = BUILDING_COLORS[int(rng.integers(len(BUILDING_COLORS)))]
            s_center = cursor + 0.5 * length
            cursor += length + rng.uniform(2.0, 12.0)
            lateral = edge + side * (layout.sidewalk_width_m + setback + 0.5 * depth)
            center = layout.lane.offset(s_center, lateral)
            _, heading, _ = lane.sample(s_center)
            corners = _footprint(center, float(heading), length, depth)
            if _clear_of_roads(layout, road_center, corners, clearance_m=1.0):
                props.append(Prop(PropKind.BUILDING, (float(center[0]), float(center[1])), float(heading),
                                  (length, depth, height), color))
        cursor = lane.start_s_m + rng.uniform(0.0, 10.0)
        while cursor < lane.end_s_m:
            s_tree = cursor
            cursor += rng.uniform(9.0, 18.0)
            crosswalk = layout.crosswalk_s_m
            if crosswalk is not None and crosswalk[0] - 3.0 < s_tree < crosswalk[1] + 3.0:
                continue
            center = layout.lane.offset(s_tree, edge + side * 0.75 * layout.sidewalk_width_m)
            size = rng.uniform(2.0, 3.2)
            corners = _footprint(center, 0.0, 0.4, 0.4)
            if _clear_of_roads(layout, road_center, corners, clearance_m=-0.5 * layout.sidewalk_width_m):
                yaw = float(rng.uniform(0, np.pi))
                height = rng.uniform(5.0, 7.5)
                color = TREE_COLORS[int(rng.integers(len(TREE_COLORS)))]
                props.append(Prop(PropKind.TREE, (float(center[0]), float(center[1])), yaw,
                                  (size, size, height), color))
    return tuple(props)
