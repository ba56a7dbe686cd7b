"""Rasterise a scenario into camera images: project quads, clip them at the near plane, fill far to near.

A painter's algorithm with OpenCV's convex polygon fill: ground layers in layer order, then object groups
sorted by the distance from the camera to their footprint (far first), each group's quads in build order.
Simple and fast (a few ms per small image on one core) and good enough for flat-world scenes where objects
do not interpenetrate.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from alpamayo_ros.sim.cameras import CameraModel
from alpamayo_ros.sim.mesh import Layer, Mesh
from alpamayo_ros.sim.scene import EgoState, Scenario
from alpamayo_ros.sim.world import dynamic_mesh, static_mesh

SKY_TOP = np.array([96, 146, 212], dtype=np.float32)
SKY_HORIZON = np.array([196, 214, 230], dtype=np.float32)
HAZE = np.array([186, 200, 214], dtype=np.float32)
SUBPIXEL_BITS = 4  # fixed-point fraction bits passed to OpenCV (vertices at 1/16 pixel)


@dataclass(frozen=True)
class RenderConfig:
    """Rasteriser settings."""

    near_m: float = 0.5  # near clipping distance along the optical axis, m
    far_m: float = 300.0  # objects and markings farther than this (horizontal distance) are skipped, m
    haze_distance_m: float = 400.0  # colours blend toward the haze colour with exp(-d / this), m
    supersample: int = 1  # render k times larger and area-downsample (anti-aliasing for documentation images)

    def __post_init__(self) -> None:
        if not 0.0 < self.near_m < self.far_m:
            raise ValueError(
                f"RenderConfig needs 0 < near_m < far_m, got near_m={self.near_m} far_m={self.far_m}")
        if not self.haze_distance_m > 0.0:
            raise ValueError(f"RenderConfig.haze_distance_m must be > 0, got {self.haze_distance_m}")
        if not 1 <= self.supersample <= 4:
            raise ValueError(f"RenderConfig.supersample must be in [1, 4], got {self.supersample}")


def _clip_near(poly: np.ndarray, near_m: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a convex polygon [k, 3] (camera frame) to z >= near_m; may return [0, 3]."""
    out = []
    for i in range(len(poly)):
        a, b = poly[i], poly[(i + 1) % len(poly)]
        a_in, b_in = a[2] >= near_m, b[2] >= near_m
        if a_in:
            out.append(a)
        if a_in != b_in:
            out.append(a + (b - a) * ((near_m - a[2]) / (b[2] - a[2])))
    return np.asarray(out).reshape(-1, 3)


def _footprint_distance(mesh: Mesh, point_xy: np.ndarray) -> np.ndarray:
    """[G] horizontal distance from a point to each group's footprint rectangle (0 inside)."""
    rel = point_xy - mesh.group_centers  # [G, 2]
    c, s = np.cos(mesh.group_yaws), np.sin(mesh.group_yaws)
    local = np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]], axis=-1)
    outside = np.maximum(np.abs(local) - mesh.group_half_sizes, 0.0)
    return np.hypot(outside[:, 0], outside[:, 1])


def _sky(height: int, width: int, camera: CameraModel) -> np.ndarray:
    """[H, W, 3] uint8 vertical sky gradient, palest at the horizon row of a level camera."""
    scale = height / camera.height_px  # supersampling factor
    horizon = 0.5 * height - scale * camera.focal_px * np.tan(np.deg2rad(camera.spec.pitch_deg))
    rows = np.clip((horizon - np.arange(height)) / max(horizon, 1.0), 0.0, 1.0) ** 0.6  # [H] 1 top, 0 horizon
    colors = SKY_HORIZON + rows[:, None] * (SKY_TOP - SKY_HORIZON)  # [H, 3]
    return np.ascontiguousarray(np.broadcast_to(colors[:, None, :], (height, width, 3)).astype(np.uint8))


def rasterize(mesh: Mesh, camera: CameraModel, ego: EgoState, background: np.ndarray, config: RenderConfig,
              scale: int = 1) -> np.ndarray:
    """Draw `mesh` as seen by `camera` on `ego` over a copy of `background` ([H*scale, W*scale, 3] uint8)."""
    image = background.copy()
    rot, trans = camera.world_to_camera(ego)
    cam_center = -rot.T @ trans  # [3] camera centre in the world
    verts = mesh.verts @ rot.T + trans  # [P, 4, 3] camera frame
    z = verts[..., 2]
    front = z >= config.near_m  # [P, 4]
    any_front = front.any(axis=1)

    group_dist = _footprint_distance(mesh, cam_center[:2])  # [G]
    has_group = mesh.groups >= 0
    centroid_dist = np.hypot(mesh.centroids[:, 0] - cam_center[0], mesh.centroids[:, 1] - cam_center[1])
    quad_dist = np.where(has_group, group_dist[np.maximum(mesh.groups, 0)], centroid_dist)  # [P]
    to_camera = cam_center - mesh.verts[:, 0]  # [P, 3]
    facing = ~mesh.cull | (np.einsum("pk,pk->p", mesh.normals, to_camera) > 0.0)
    near_enough = (mesh.layers <= Layer.ROAD) | (quad_dist <= config.far_m)
    keep = any_front & facing & near_enough

    f = camera.focal_px * scale
    cx, cy = 0.5 * camera.width_px * scale, 0.5 * camera.height_px * scale
    depth = np.where(front, z, 1.0)
    u = f * verts[..., 0] / depth + cx  # [P, 4]
    v = f * verts[..., 1] / depth + cy
    all_front = front.all(axis=1)
    height, width = image.shape[:2]
    u_min, u_max, v_min, v_max = u.min(axis=1), u.max(axis=1), v.min(axis=1), v.max(axis=1)
    outside = (u_max < 0) | (u_min >= width) | (v_max < 0) | (v_min >= height)
    # Quads whose projection spans less than a third of a pixel draw nothing worth drawing.
    tiny = np.maximum(u_max - u_min, v_max - v_min) < 0.33
    keep &= ~(all_front & (outside | tiny))

    haze = 1.0 - np.exp(-quad_dist / config.haze_distance_m)
    haze[mesh.layers == Layer.GROUND] = 0.0
    colors = mesh.colors + haze[:, None] * (HAZE - mesh.colors)  # [P, 3]

    index = np.flatnonzero(keep)
    sort_dist = np.where(has_group[index], quad_dist[index], 0.0)
    order = index[np.lexsort((index, -sort_dist, mesh.layers[index]))]
    fixed = float(1 << SUBPIXEL_BITS)
    uv = np.stack([u, v], axis=-1)  # [P, 4, 2]
    uv_fixed = np.round(np.where(all_front[:, None, None], uv, 0.0) * fixed).astype(np.int32)
    color_list = colors.astype(np.int32).tolist()
    for p in order.tolist():
        if all_front[p]:
            poly = uv_fixed[p]
        else:
            clipped = _clip_near(verts[p], config.near_m)
            if len(clipped) < 3:
                continue
            u_clip = f * clipped[:, 0] / clipped[:, 2] + cx
            v_clip = f * clipped[:, 1] / clipped[:, 2] + cy
            poly = np.round(np.stack([u_clip, v_clip], axis=-1) * fixed).astype(np.int32)
        cv2.fillConvexPoly(image, poly, color_list[p], cv2.LINE_8, SUBPIXEL_BITS)
    return image


class SceneRenderer:
    """Renders one scenario for a camera rig; builds the static world once."""

    def __init__(self, scenario: Scenario, cameras: tuple[CameraModel, ...],
                 config: RenderConfig = RenderConfig()):
        self.scenario = scenario
        self.cameras = {camera.name: camera for camera in cameras}
        self.config = config
        self._static = static_mesh(scenario.layout, scenario.props)
        k = config.supersample
        self._sky = {c.name: _sky(c.height_px * k, c.width_px * k, c) for c in cameras}

    def render(self, camera_name: str, t_s: float) -> np.ndarray:
        """The image of camera `camera_name` at scenario time `t_s`.

        Returns:
            [H, W, 3] uint8 RGB.
        """
        return self.render_many([camera_name], t_s)[0]

    def render_many(self, camera_names: list[str], t_s: float) -> list[np.ndarray]:
        """Images [H, W, 3] uint8 RGB of several cameras at one time (the moving actors are built once)."""
        ego = self.scenario.ego_state(t_s)
        mesh = Mesh.concat(self._static, dynamic_mesh(self.scenario, t_s))
        images = []
        for name in camera_names:
            camera = self.cameras[name]
            k = self.config.supersample
            image = rasterize(mesh, camera, ego, self._sky[name], self.config, scale=k)
            if k > 1:
                image = cv2.resize(image, (camera.width_px, camera.height_px), interpolation=cv2.INTER_AREA)
            images.append(image)
        return images
