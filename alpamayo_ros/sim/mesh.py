"""Scene geometry as coloured quads: flat ground layers (grass, sidewalks, roads, markings) and boxes.

Every polygon is a planar convex quad [4, 3] in the odometry frame. Ground layers are drawn in layer order;
objects are grouped (one group per car, building, light...) and groups are drawn far to near, each group's
quads in the order they were added (so a cabin is drawn after the body it sits on). Box faces carry outward
normals for back-face culling, which makes every single box correct on its own.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from alpamayo_ros.sim.road import LanePath

SUN_DIRECTION = np.array([0.35, 0.45, 0.82]) / np.linalg.norm([0.35, 0.45, 0.82])  # toward the sun


class Layer(enum.IntEnum):
    """Draw order of the ground layers; everything standing up is OBJECT."""

    GROUND = 0
    SIDEWALK = 1
    ROAD = 2
    MARKING = 3
    SHADOW = 4
    OBJECT = 5


@dataclass(frozen=True)
class Mesh:
    """Coloured quads ready to project. P quads, G object groups."""

    verts: np.ndarray  # [P, 4, 3] float64 corners, m
    colors: np.ndarray  # [P, 3] float32 sRGB 0..255, already shaded
    normals: np.ndarray  # [P, 3] float64 outward unit normal (used where cull is True)
    layers: np.ndarray  # [P] int8 Layer
    groups: np.ndarray  # [P] int32 index into the group arrays, -1 for ground-layer quads
    cull: np.ndarray  # [P] bool, drop the quad when it faces away from the camera
    group_centers: np.ndarray  # [G, 2] footprint centre, m
    group_half_sizes: np.ndarray  # [G, 2] footprint half length and half width, m
    group_yaws: np.ndarray  # [G] footprint yaw, rad
    centroids: np.ndarray  # [P, 2] horizontal quad centres, m (precomputed: the static mesh is reused)

    @staticmethod
    def concat(a: Mesh, b: Mesh) -> Mesh:
        """Both meshes in one; b's quads come after a's, b's group indices are shifted."""
        shift = len(a.group_yaws)
        return Mesh(
            verts=np.concatenate([a.verts, b.verts]),
            colors=np.concatenate([a.colors, b.colors]),
            normals=np.concatenate([a.normals, b.normals]),
            layers=np.concatenate([a.layers, b.layers]),
            groups=np.concatenate([a.groups, np.where(b.groups >= 0, b.groups + shift, -1)]),
            cull=np.concatenate([a.cull, b.cull]),
            group_centers=np.concatenate([a.group_centers, b.group_centers]),
            group_half_sizes=np.concatenate([a.group_half_sizes, b.group_half_sizes]),
            group_yaws=np.concatenate([a.group_yaws, b.group_yaws]),
            centroids=np.concatenate([a.centroids, b.centroids]),
        )


class MeshBuilder:
    """Accumulates quads and groups, then freezes them into a Mesh."""

    def __init__(self) -> None:
        self._verts: list[np.ndarray] = []  # each [k, 4, 3]
        self._colors: list[np.ndarray] = []  # each [k, 3]
        self._normals: list[np.ndarray] = []
        self._layers: list[np.ndarray] = []
        self._groups: list[np.ndarray] = []
        self._cull: list[np.ndarray] = []
        self._group_rows: list[tuple[float, float, float, float, float]] = []  # cx, cy, half_l, half_w, yaw
        self._current_group = -1

    def begin_group(self, center_xy: np.ndarray, half_size: tuple[float, float], yaw_rad: float) -> None:
        """Quads added from now on belong to a new object group with this footprint (for depth sorting)."""
        row = (float(center_xy[0]), float(center_xy[1]), half_size[0], half_size[1], yaw_rad)
        self._group_rows.append(row)
        self._current_group = len(self._group_rows) - 1

    def end_group(self) -> None:
        self._current_group = -1

    def add(self, quads: np.ndarray, color: tuple[float, float, float] | np.ndarray, layer: Layer,
            normals: np.ndarray | None = None, shade: bool = True) -> None:
        """Add quads [k, 4, 3] (or one [4, 3]); with `normals` [k, 3] they are back-face culled, and
        sun-shaded unless `shade` is False (lamps)."""
        quads = np.asarray(quads, dtype=np.float64).reshape(-1, 4, 3)
        k = len(quads)
        colors = np.broadcast_to(np.asarray(color, dtype=np.float32), (k, 3)).copy()
        if normals is None:
            normals = np.tile([0.0, 0.0, 1.0], (k, 1))
            cull = np.zeros(k, dtype=bool)
        else:
            normals = np.asarray(normals, dtype=np.float64).reshape(k, 3)
            if shade:
                light = 0.62 + 0.38 * np.clip(normals @ SUN_DIRECTION, 0.0, 1.0)  # [k]
                colors *= light[:, None].astype(np.float32)
            cull = np.ones(k, dtype=bool)
        self._verts.append(quads)
        self._colors.append(colors)
        self._normals.append(normals)
        self._layers.append(np.full(k, int(layer), dtype=np.int8))
        self._groups.append(np.full(k, self._current_group, dtype=np.int32))
        self._cull.append(cull)

    def build(self) -> Mesh:
        rows = np.asarray(self._group_rows, dtype=np.float64).reshape(-1, 5)
        if not self._verts:
            self.add(np.zeros((0, 4, 3)), (0.0, 0.0, 0.0), Layer.GROUND)
        verts = np.concatenate(self._verts)
        return Mesh(
            verts=verts,
            colors=np.concatenate(self._colors),
            normals=np.concatenate(self._normals),
            layers=np.concatenate(self._layers),
            groups=np.concatenate(self._groups),
            cull=np.concatenate(self._cull),
            group_centers=rows[:, 0:2],
            group_half_sizes=rows[:, 2:4],
            group_yaws=rows[:, 4],
            centroids=verts[:, :, :2].mean(axis=1),
        )


def strip(lane: LanePath, stations_m: np.ndarray, right_m: float, left_m: float,
          z_m: float = 0.0) -> np.ndarray:
    """Quads covering lateral offsets [right_m, left_m] of the lane between consecutive stations.

    Args:
        stations_m: [M] increasing arc lengths.

    Returns:
        [M - 1, 4, 3] quads.
    """
    right = lane.offset(stations_m, right_m)  # [M, 2]
    left = lane.offset(stations_m, left_m)
    corners = np.stack([right[:-1], left[:-1], left[1:], right[1:]], axis=1)  # [M - 1, 4, 2]
    return np.concatenate([corners, np.full(corners.shape[:2] + (1,), z_m)], axis=-1)


def dashes(lane: LanePath, start_m: float, end_m: float, lateral_m: float, width_m: float, dash_m: float,
           gap_m: float) -> np.ndarray:
    """Dashed line quads [k, 4, 3] along the lane at a lateral offset (straight dashes; dashes are short)."""
    starts = np.arange(start_m, end_m - dash_m, dash_m + gap_m)
    if len(starts) == 0:
        return np.zeros((0, 4, 3))
    right = np.stack([lane.offset(starts, lateral_m - 0.5 * width_m),
                      lane.offset(starts + dash_m, lateral_m - 0.5 * width_m)], axis=1)  # [k, 2, 2]
    left = np.stack([lane.offset(starts, lateral_m + 0.5 * width_m),
                     lane.offset(starts + dash_m, lateral_m + 0.5 * width_m)], axis=1)
    corners = np.stack([right[:, 0], left[:, 0], left[:, 1], right[:, 1]], axis=1)  # [k, 4, 2]
    return np.concatenate([corners, np.zeros(corners.shape[:2] + (1,))], axis=-1)


def rect(center_xy: np.ndarray, along: np.ndarray, half_along_m: float, half_across_m: float,
         z_m: float = 0.0) -> np.ndarray:
    """A horizontal rectangle [4, 3] with its length along the unit vector `along` [2]."""
    across = np.array([-along[1], along[0]])
    corners = [center_xy + sa * half_along_m * along + sc * half_across_m * across
               for sa, sc in ((-1, -1), (-1, 1), (1, 1), (1, -1))]
    return np.concatenate([np.asarray(corners), np.full((4, 1), z_m)], axis=-1)


# Corner indices of the faces +x, -x, +y, -y, +z (front, back, left, right, top), each a closed loop.
_BOX_FACES = np.array([[1, 2, 6, 5], [0, 4, 7, 3], [2, 3, 7, 6], [0, 1, 5, 4], [4, 5, 6, 7]])
_BOX_NORMALS_LOCAL = np.array([[1.0, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]])


def box(builder: MeshBuilder, center_xy: np.ndarray, yaw_rad: float, size_m: tuple[float, float, float],
        z_bottom_m: float, color: tuple[float, float, float] | np.ndarray) -> None:
    """An oriented box without a bottom face (5 culled, shaded quads).

    Args:
        size_m: length (along yaw), width, height.
        color: one colour, or [5, 3] per face in the order front, back, left, right, top.
    """
    length, width, height = size_m
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    local = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0], [-1, -1, 1], [1, -1, 1], [1, 1, 1],
                      [-1, 1, 1]], dtype=np.float64) * (0.5 * length, 0.5 * width, height)
    corners = local @ rot.T + np.array([center_xy[0], center_xy[1], z_bottom_m])  # [8, 3]
    normals = _BOX_NORMALS_LOCAL @ rot.T
    colors = np.broadcast_to(np.asarray(color, dtype=np.float32), (5, 3))
    for face, normal, face_color in zip(_BOX_FACES, normals, colors):
        builder.add(corners[face], face_color, Layer.OBJECT, normal)


def face_decal(builder: MeshBuilder, center_xy: np.ndarray, yaw_rad: float, forward_m: float,
               lateral_m: float, z_m: float, half_width_m: float, half_height_m: float,
               color: tuple[float, float, float], facing: float, shade: bool = True) -> None:
    """A small vertical rectangle facing along +yaw (`facing` = 1) or -yaw (-1), e.g. a lamp on a box face.

    Its centre is `forward_m` along yaw and `lateral_m` to the left of `center_xy`, at height `z_m`; `shade`
    False keeps its colour as is (a lit lamp).
    """
    along = np.array([np.cos(yaw_rad), np.sin(yaw_rad)])
    left = np.array([-along[1], along[0]])
    middle = center_xy + forward_m * along + lateral_m * left
    corners = [np.append(middle + dl * half_width_m * left, z_m + dz * half_height_m)
               for dl, dz in ((-1, -1), (1, -1), (1, 1), (-1, 1))]
    builder.add(np.asarray(corners), color, Layer.OBJECT, np.append(facing * along, 0.0), shade)
