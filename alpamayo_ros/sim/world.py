"""Turns a Scenario into quads: the static world once, the moving actors and the traffic light per instant."""

from __future__ import annotations

import numpy as np

from alpamayo_ros.sim.mesh import Layer, Mesh, MeshBuilder, box, dashes, face_decal, rect, strip
from alpamayo_ros.sim.road import LanePath
from alpamayo_ros.sim.scene import ActorKind, LightState, Prop, PropKind, RoadLayout, Scenario

# sRGB palette.
GRASS = (104, 118, 80)
SIDEWALK = (168, 166, 160)
ASPHALT = (78, 79, 83)
WHITE_PAINT = (232, 232, 226)
SHADOW = (40, 41, 44)
GLASS = (48, 58, 72)
WINDOWS = (66, 80, 100)
TIRES = (24, 24, 26)
TRUNK = (92, 68, 44)
POLE = (70, 72, 70)
SKIN = (222, 182, 150)
PANTS = (42, 46, 62)
LAMP_ON = {LightState.RED: (255, 45, 30), LightState.YELLOW: (255, 190, 20), LightState.GREEN: (40, 255, 120)}
LAMP_OFF = {LightState.RED: (70, 22, 20), LightState.YELLOW: (70, 55, 15), LightState.GREEN: (18, 55, 30)}
CROSS_ROAD_HALF_LENGTH_M = 250.0
LINE_WIDTH_M = 0.15


def _straight_path(center_xy: np.ndarray, direction: np.ndarray, half_length_m: float) -> LanePath:
    """A straight centre line through `center_xy` along the unit vector `direction` (s = 0 at the centre)."""
    s = np.linspace(-half_length_m, half_length_m, 3)
    heading = float(np.arctan2(direction[1], direction[0]))
    return LanePath(s_m=s, xy_m=center_xy + s[:, None] * direction, heading_rad=np.full(3, heading),
                    curvature_1pm=np.zeros(3))


def _intervals_without(start: float, end: float,
                       gaps: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """[start, end] minus the (sorted, disjoint) gaps, as a list of intervals."""
    out, cursor = [], start
    for low, high in sorted(gaps):
        if low > cursor:
            out.append((cursor, min(low, end)))
        cursor = max(cursor, high)
    if cursor < end:
        out.append((cursor, end))
    return out


def _road_markings(builder: MeshBuilder, path: LanePath, stations: np.ndarray, center_lateral_m: float,
                   lane_width_m: float, gaps: list[tuple[float, float]]) -> None:
    """Solid edge lines and a dashed centre line on a two-lane road, interrupted by `gaps` (arc lengths)."""
    for low, high in _intervals_without(path.start_s_m, path.end_s_m, gaps):
        inner = stations[(stations > low) & (stations < high)]
        span = np.concatenate([[low], inner, [high]])
        for edge in (center_lateral_m - lane_width_m, center_lateral_m + lane_width_m):
            builder.add(strip(path, span, edge - 0.5 * LINE_WIDTH_M, edge + 0.5 * LINE_WIDTH_M), WHITE_PAINT,
                        Layer.MARKING)
        builder.add(dashes(path, low + 1.0, high, center_lateral_m, LINE_WIDTH_M, 3.0, 6.0), WHITE_PAINT,
                    Layer.MARKING)


def _zebra(builder: MeshBuilder, lane: LanePath, s_range: tuple[float, float], right_m: float,
           left_m: float) -> None:
    for lateral in np.arange(right_m + 0.25, left_m - 0.5, 1.0):
        builder.add(strip(lane, np.asarray(s_range), lateral, lateral + 0.5), WHITE_PAINT, Layer.MARKING)


def _building(builder: MeshBuilder, prop: Prop) -> None:
    center = np.asarray(prop.center_xy_m)
    length, width, height = prop.size_m
    builder.begin_group(center, (0.5 * length, 0.5 * width), prop.yaw_rad)
    box(builder, center, prop.yaw_rad, prop.size_m, 0.0, prop.color_rgb)
    for floor in range(min(6, int(height // 3.0))):
        for side in (1.0, -1.0):  # window bands on both long faces; culling keeps the visible one
            face_decal(builder, center, prop.yaw_rad + side * 0.5 * np.pi, 0.5 * width + 0.03, 0.0,
                       3.0 * floor + 1.7, 0.42 * length, 0.55, WINDOWS, facing=1.0)
    builder.end_group()


def _tree(builder: MeshBuilder, prop: Prop) -> None:
    center = np.asarray(prop.center_xy_m)
    crown, _, height = prop.size_m
    builder.begin_group(center, (0.5 * crown, 0.5 * crown), prop.yaw_rad)
    box(builder, center, prop.yaw_rad, (0.3, 0.3, 2.4), 0.0, TRUNK)
    box(builder, center, prop.yaw_rad, (crown, crown, height - 2.2), 2.2, prop.color_rgb)
    box(builder, center, prop.yaw_rad + 0.25 * np.pi, (0.8 * crown, 0.8 * crown, height - 1.6), 1.9,
        np.asarray(prop.color_rgb) * 0.85)
    builder.end_group()


def static_mesh(layout: RoadLayout, props: tuple[Prop, ...]) -> Mesh:
    """Ground, sidewalks, roads, markings, stop line, crosswalks, buildings and trees."""
    builder = MeshBuilder()
    lane = layout.lane
    low, high = lane.xy_m.min(axis=0) - 1500.0, lane.xy_m.max(axis=0) + 1500.0
    ground = [[low[0], low[1], 0], [high[0], low[1], 0], [high[0], high[1], 0], [low[0], high[1], 0]]
    builder.add(np.array(ground), GRASS, Layer.GROUND)
    stations = lane.render_stations(max_step_m=12.0, max_turn_rad=np.deg2rad(3.0))
    sidewalk = layout.sidewalk_width_m
    right, left = layout.right_edge_m, layout.left_edge_m
    builder.add(strip(lane, stations, right - sidewalk, right), SIDEWALK, Layer.SIDEWALK)
    builder.add(strip(lane, stations, left, left + sidewalk), SIDEWALK, Layer.SIDEWALK)
    builder.add(strip(lane, stations, layout.right_edge_m, layout.left_edge_m), ASPHALT, Layer.ROAD)
    center_lateral = 0.5 * layout.lane_width_m
    gaps: list[tuple[float, float]] = []
    if layout.crosswalk_s_m is not None:
        gaps.append(layout.crosswalk_s_m)
        _zebra(builder, lane, layout.crosswalk_s_m, layout.right_edge_m, layout.left_edge_m)
    if layout.stop_line_s_m is not None:
        builder.add(strip(lane, np.array([layout.stop_line_s_m, layout.stop_line_s_m + 0.4]),
                          -0.5 * layout.lane_width_m, center_lateral), WHITE_PAINT, Layer.MARKING)
    if layout.intersection_s_m is not None:
        center, along, cross = layout.intersection_frame()
        half = layout.cross_half_width_m
        cross_path = _straight_path(center, cross, CROSS_ROAD_HALF_LENGTH_M)
        for side in (-1.0, 1.0):
            builder.add(strip(cross_path, cross_path.s_m, side * half, side * (half + sidewalk)), SIDEWALK,
                        Layer.SIDEWALK)
        builder.add(strip(cross_path, cross_path.s_m, -half, half), ASPHALT, Layer.ROAD)
        far_crosswalk = (layout.intersection_s_m + half + 1.0, layout.intersection_s_m + half + 4.0)
        _zebra(builder, lane, far_crosswalk, layout.right_edge_m, layout.left_edge_m)
        gaps += [(layout.intersection_s_m - half, layout.intersection_s_m + half), far_crosswalk]
        _road_markings(builder, cross_path, cross_path.s_m, 0.0, layout.lane_width_m,
                       [(-half - sidewalk, half + sidewalk)])
    _road_markings(builder, lane, stations, center_lateral, layout.lane_width_m, gaps)
    for prop in props:
        (_building if prop.kind == PropKind.BUILDING else _tree)(builder, prop)
    return builder.build()


def _car(builder: MeshBuilder, xy: np.ndarray, yaw: float, size: tuple[float, float, float],
         color: tuple[int, int, int], braking: bool) -> None:
    length, width, height = size
    along = np.array([np.cos(yaw), np.sin(yaw)])
    builder.add(rect(xy, along, 0.5 * length + 0.15, 0.5 * width + 0.15), SHADOW, Layer.SHADOW)
    builder.begin_group(xy, (0.5 * length, 0.5 * width), yaw)
    box(builder, xy, yaw, (0.82 * length, 0.92 * width, 0.34), 0.0, TIRES)
    box(builder, xy, yaw, (length, width, 0.58), 0.32, color)
    cabin = np.array([GLASS, GLASS, GLASS, GLASS, color], dtype=np.float32)
    box(builder, xy - 0.08 * length * along, yaw, (0.52 * length, 0.86 * width, height - 0.9), 0.9, cabin)
    brake = (255, 30, 25) if braking else (120, 18, 18)
    for side in (-1.0, 1.0):
        face_decal(builder, xy, yaw, -0.5 * length - 0.02, side * (0.5 * width - 0.22), 0.74, 0.16, 0.07,
                   brake, facing=-1.0, shade=not braking)
        face_decal(builder, xy, yaw, 0.5 * length + 0.02, side * (0.5 * width - 0.25), 0.7, 0.16, 0.06,
                   (235, 235, 210), facing=1.0)
    builder.end_group()


def _pedestrian(builder: MeshBuilder, xy: np.ndarray, yaw: float, color: tuple[int, int, int]) -> None:
    along = np.array([np.cos(yaw), np.sin(yaw)])
    builder.add(rect(xy, along, 0.3, 0.35), SHADOW, Layer.SHADOW)
    builder.begin_group(xy, (0.2, 0.3), yaw)
    box(builder, xy, yaw, (0.24, 0.36, 0.86), 0.0, PANTS)
    box(builder, xy, yaw, (0.3, 0.5, 0.6), 0.86, color)
    box(builder, xy, yaw, (0.22, 0.2, 0.25), 1.5, SKIN)
    builder.end_group()


def _signal_head(builder: MeshBuilder, center: np.ndarray, yaw: float, z_bottom: float,
                 state: LightState) -> None:
    """A three-lamp housing whose lamps face along -yaw (toward the approaching ego)."""
    box(builder, center, yaw, (0.35, 0.45, 1.1), z_bottom, (28, 30, 28))
    for i, lamp in enumerate((LightState.GREEN, LightState.YELLOW, LightState.RED)):
        lit = lamp == state
        face_decal(builder, center, yaw, -0.19, 0.0, z_bottom + 0.22 + 0.33 * i, 0.13, 0.13,
                   LAMP_ON[lamp] if lit else LAMP_OFF[lamp], facing=-1.0, shade=not lit)


def _traffic_light(builder: MeshBuilder, layout: RoadLayout, state: LightState) -> None:
    """An overhead signal past the intersection above the ego lane and a post signal at the stop line."""
    center, along, cross = layout.intersection_frame()
    lane_center = center - 0.5 * layout.lane_width_m * cross
    yaw = float(np.arctan2(along[1], along[0]))
    half = layout.cross_half_width_m
    far = lane_center + (half + 5.0) * along
    pole = far + (layout.right_edge_m - 1.0) * cross
    arm_center = 0.5 * (pole + far)
    arm_length = float(np.linalg.norm(far - pole)) + 0.6
    builder.begin_group(arm_center, (0.2, 0.5 * arm_length), yaw)
    box(builder, pole, yaw, (0.25, 0.25, 6.0), 0.0, POLE)
    box(builder, arm_center, yaw, (0.18, arm_length, 0.18), 5.75, POLE)
    _signal_head(builder, far, yaw, 4.6, state)
    builder.end_group()
    post = lane_center + (layout.stop_line_s_m - layout.intersection_s_m - 0.5) * along + (
        layout.right_edge_m - 0.8) * cross
    builder.begin_group(post, (0.2, 0.2), yaw)
    box(builder, post, yaw, (0.15, 0.15, 2.4), 0.0, POLE)
    _signal_head(builder, post, yaw, 2.4, state)
    builder.end_group()


def dynamic_mesh(scenario: Scenario, t_s: float) -> Mesh:
    """Actors and the traffic light at time `t_s`."""
    builder = MeshBuilder()
    for actor in scenario.actors:
        xy, yaw, accel = actor.state_at(t_s)
        if actor.kind == ActorKind.CAR:
            _car(builder, xy, yaw, actor.size_m, actor.color_rgb, braking=accel < -0.5)
        else:
            _pedestrian(builder, xy, yaw, actor.color_rgb)
    state = scenario.light_state(t_s)
    if state is not None:
        _traffic_light(builder, scenario.layout, state)
    return builder.build()
