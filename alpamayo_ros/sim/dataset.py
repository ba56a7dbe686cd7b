"""Training and evaluation examples from synthetic scenes, pre-rendered once and cached as .npz.

An example is what the planner node would see at one observation time t0 in a bag of the scene: the four
cameras at t0 − 0.3 … t0 s as the sample bag stores them (180 x 320 JPEG, quality 75), the 16 history poses
and the 64 ground-truth future poses in the ego frame at t0, and the ground-truth cause. Each scene is
rendered once at 10 Hz; every frame time from `first_t0_s` on is a t0, so neighbouring examples share frames.
The JPEG bytes are kept as they are and decoded per batch with the node's own decoder, so training sees
exactly the pixels the node feeds the model.

Cache layout: `<cache_dir>/<config key>/scene_<seed>.npz`, the key a hash of the `SceneConfig`, so changing
any rendering setting renders afresh and never mixes scenes of different settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from alpamayo_ros.model.training import TrainingBatch
from alpamayo_ros.planner.images import decode_compressed, encode_compressed
from alpamayo_ros.planner.types import NS_PER_S, Observation
from alpamayo_ros.sim.cameras import camera_rig
from alpamayo_ros.sim.render import SceneRenderer
from alpamayo_ros.sim.scenarios import generate_scenario
from alpamayo_ros.sim.scene import (
    EXPLANATIONS,
    HISTORY_POINTS,
    TRAJECTORY_DT_S,
    Cause,
    ScenarioKind,
)

logger = logging.getLogger(__name__)

FRAMES_PER_CAMERA = 4  # frames at t0 − 0.3, −0.2, −0.1, 0 s (MODEL.md §4.1), 10 Hz apart
KINDS: tuple[ScenarioKind, ...] = tuple(ScenarioKind)


@dataclass(frozen=True)
class SceneConfig:
    """How a scene becomes examples (rendering matches the sample bag of `make setup`)."""

    duration_s: float = 16.0  # scenario length; the last t0 (the ground truth runs 6.4 s past it), s
    first_t0_s: float = 1.6  # earliest t0: the 1.5 s history and the frame 0.3 s back must exist, s
    image_scale: float = 1.0 / 6.0  # of 1080 x 1920: 180 x 320, as the sample bag
    jpeg_quality: int = 75  # as the sample bag

    def __post_init__(self) -> None:
        history_s = (HISTORY_POINTS - 1) * TRAJECTORY_DT_S
        if self.first_t0_s < history_s:
            raise ValueError(f"SceneConfig.first_t0_s must be >= {history_s} s, got {self.first_t0_s}")
        if not self.duration_s > self.first_t0_s:
            raise ValueError(f"SceneConfig.duration_s must exceed first_t0_s, got {self.duration_s}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"SceneConfig.jpeg_quality must be in 1..100, got {self.jpeg_quality}")

    @property
    def key(self) -> str:
        """Short hash naming the cache directory of scenes rendered with these settings."""
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:10]


def scene_kind(seed: int) -> ScenarioKind:
    """Scenario kinds cycle with the seed, so any 6 consecutive seeds hold every kind once."""
    return KINDS[seed % len(KINDS)]


def _frame_index(t_s: float) -> int:
    return int(round(t_s / TRAJECTORY_DT_S))


def render_scene(seed: int, config: SceneConfig) -> dict[str, np.ndarray]:
    """Render one scene into the arrays of its .npz file.

    Returns:
        jpeg [bytes] uint8 (all frames' JPEGs back to back), jpeg_offsets [K·V + 1] int64 (frame k of camera v
        is jpeg[offsets[k·V + v] : offsets[k·V + v + 1]], frame k at time (first_frame + k)·0.1 s),
        first_frame [] int64, t0_s [N] float64, hist_xyz [N, 16, 3] float32, hist_yaw [N, 16] float32,
        fut_xyz [N, 64, 3] float32, fut_yaw [N, 64] float32, cause [N] int64, seed [] and kind [] (str).
    """
    scenario = generate_scenario(seed, scene_kind(seed), config.duration_s)
    cameras = camera_rig(config.image_scale)
    renderer = SceneRenderer(scenario, cameras)
    first_t0, last_t0 = _frame_index(config.first_t0_s), _frame_index(config.duration_s)
    first_frame = first_t0 - (FRAMES_PER_CAMERA - 1)
    blobs: list[bytes] = []
    for k in range(first_frame, last_t0 + 1):
        for image in renderer.render_many([c.name for c in cameras], k * TRAJECTORY_DT_S):
            blobs.append(encode_compressed(image, "jpeg", jpeg_quality=config.jpeg_quality))
    t0_s = np.arange(first_t0, last_t0 + 1) * TRAJECTORY_DT_S  # [N]
    hist = [scenario.history_trajectory(t) for t in t0_s]
    fut = [scenario.future_trajectory(t) for t in t0_s]
    return {
        "jpeg": np.frombuffer(b"".join(blobs), dtype=np.uint8),
        "jpeg_offsets": np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64),
        "first_frame": np.int64(first_frame),
        "t0_s": t0_s,
        "hist_xyz": np.stack([h[0] for h in hist]),
        "hist_yaw": np.stack([h[1] for h in hist]),
        "fut_xyz": np.stack([f[0] for f in fut]),
        "fut_yaw": np.stack([f[1] for f in fut]),
        "cause": np.array([int(scenario.cause(t)) for t in t0_s], dtype=np.int64),
        "seed": np.int64(seed),
        "kind": np.array(scenario.kind.value),
    }


def _render_to(seed: int, config: SceneConfig, path: Path) -> Path:
    arrays = render_scene(seed, config)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)  # never leave a half-written scene behind
    return path


def build_cache(seeds: list[int], config: SceneConfig, cache_dir: str | Path, workers: int = 2) -> list[Path]:
    """Render every scene not cached yet (in `workers` processes); returns the scene files in seed order."""
    directory = Path(cache_dir) / config.key
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    paths = [directory / f"scene_{seed:05d}.npz" for seed in seeds]
    todo = [(seed, path) for seed, path in zip(seeds, paths) if not path.is_file()]
    if todo:
        logger.info("rendering %d scenes into %s (%d workers)", len(todo), directory, workers)
        # spawn: the caller may have started torch's thread pool, which does not survive a fork.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_render_to, [s for s, _ in todo], [config] * len(todo), [p for _, p in todo]))
    return paths


def _rotations(yaw: np.ndarray) -> np.ndarray:
    """R_z(yaw) [..., 3, 3] float32 from yaw [...] rad."""
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.zeros(yaw.shape + (3, 3), dtype=np.float32)
    rot[..., 0, 0], rot[..., 0, 1], rot[..., 1, 0], rot[..., 1, 1], rot[..., 2, 2] = c, -s, s, c, 1.0
    return rot


@dataclass(frozen=True)
class Example:
    """One example, the inputs as `AlpamayoR1.plan` takes them for batch 1."""

    images: np.ndarray  # [V, F, H, W, 3] uint8 RGB, model camera order, oldest frame first
    hist_xyz: np.ndarray  # [16, 3] float32
    hist_rot: np.ndarray  # [16, 3, 3] float32
    fut_xyz: np.ndarray  # [64, 3] float32
    fut_rot: np.ndarray  # [64, 3, 3] float32
    cause: Cause
    seed: int  # scene seed
    t0_s: float  # scenario time of t0

    @property
    def explanation(self) -> str:
        return EXPLANATIONS[self.cause]

    def observation(self, camera_names: tuple[str, ...]) -> Observation:
        """What the planning core hands the engine at this t0 (ego frame at t0, speed from the last history
        step; frame stamps are not kept and read 0)."""
        speed = float(np.linalg.norm(self.hist_xyz[-1] - self.hist_xyz[-2])) / TRAJECTORY_DT_S
        return Observation(
            t0_ns=round(self.t0_s * NS_PER_S), camera_names=camera_names, images=tuple(self.images),
            frame_stamps_ns=np.zeros(self.images.shape[:2], np.int64), history_xyz=self.hist_xyz,
            history_rot=self.hist_rot, t0_position=np.zeros(3), t0_rotation=np.eye(3), speed_mps=speed)


class SceneDataset:
    """All examples of a set of cached scenes, held in memory as JPEG bytes."""

    def __init__(self, paths: list[Path]) -> None:
        self._scenes = [dict(np.load(path)) for path in paths]
        pairs = [(s, i) for s, scene in enumerate(self._scenes) for i in range(len(scene["t0_s"]))]
        self.index = np.array(pairs, dtype=np.int64).reshape(-1, 2)  # [N, 2] (scene, example within it)
        self.causes = np.concatenate([scene["cause"] for scene in self._scenes])  # [N]
        self.t0_s = np.concatenate([scene["t0_s"] for scene in self._scenes])  # [N] scenario time of t0

    def __len__(self) -> int:
        return len(self.index)

    @property
    def seeds(self) -> list[int]:
        return [int(scene["seed"]) for scene in self._scenes]

    def example(self, i: int) -> Example:
        """Example i: the JPEGs decoded by the node's decoder."""
        s, j = (int(v) for v in self.index[i])
        scene = self._scenes[s]
        offsets, blob = scene["jpeg_offsets"], scene["jpeg"]
        num_views = (len(offsets) - 1) // (len(scene["t0_s"]) + FRAMES_PER_CAMERA - 1)
        views = []
        for v in range(num_views):
            frames = []
            for k in range(j, j + FRAMES_PER_CAMERA):  # frame index of t0 − 0.3 s is j
                start, end = offsets[k * num_views + v], offsets[k * num_views + v + 1]
                frames.append(decode_compressed("jpeg", blob[start:end]))
            views.append(np.stack(frames))
        return Example(
            images=np.stack(views),
            hist_xyz=scene["hist_xyz"][j],
            hist_rot=_rotations(scene["hist_yaw"][j]),
            fut_xyz=scene["fut_xyz"][j],
            fut_rot=_rotations(scene["fut_yaw"][j]),
            cause=Cause(int(scene["cause"][j])),
            seed=int(scene["seed"]),
            t0_s=float(scene["t0_s"][j]),
        )

    def batch(self, indices: list[int]) -> TrainingBatch:
        """Examples stacked into a TrainingBatch (images [B, V, F, 3, H, W] uint8)."""
        examples = [self.example(i) for i in indices]
        images = torch.from_numpy(np.stack([e.images for e in examples]))  # [B, V, F, H, W, 3]
        return TrainingBatch(
            images=images.permute(0, 1, 2, 5, 3, 4).contiguous(),
            hist_xyz=torch.from_numpy(np.stack([e.hist_xyz for e in examples])),
            hist_rot=torch.from_numpy(np.stack([e.hist_rot for e in examples])),
            fut_xyz=torch.from_numpy(np.stack([e.fut_xyz for e in examples])),
            fut_rot=torch.from_numpy(np.stack([e.fut_rot for e in examples])),
            coc_text=tuple(e.explanation for e in examples),
        )
