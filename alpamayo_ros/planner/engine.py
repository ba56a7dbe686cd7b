"""The inference engine the planning core calls: an `AlpamayoR1` behind the `InferenceEngine` protocol.

`load_engine` picks the backend from the node's parameters: `checkpoint` loads a checkpoint directory (the
real Alpamayo-R1-10B or any `save_pretrained` output); `tiny` loads the embedded small model shipped in
`alpamayo_ros/assets/tiny` (or a tiny checkpoint at `path`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alpamayo_ros.model.alpamayo import AlpamayoR1
from alpamayo_ros.model.engine import FastEngine
from alpamayo_ros.model.loading import CheckpointError, from_pretrained
from alpamayo_ros.planner.types import EngineResult, Observation

logger = logging.getLogger(__name__)

# The embedded default: a small model of the same architecture, trained on the synthetic scenes.
EMBEDDED_TINY = Path(__file__).resolve().parents[1] / "assets" / "tiny"
# Inference paths: "fast" = `FastEngine` (static cache, CUDA graphs, vision cache), "reference" =
# `AlpamayoR1.plan`, "auto" = fast on CUDA, reference on CPU.
ENGINES = ("auto", "fast", "reference")


class ModelEngine:
    """Plans one Observation (batch 1) with `FastEngine` or the reference `AlpamayoR1.plan`."""

    def __init__(self, model: AlpamayoR1, model_id: str, max_new_tokens: int, engine: str = "auto") -> None:
        """Args:
        model: the network. model_id: for outputs and diagnostics. max_new_tokens: CoC token cap.
        engine: one of `ENGINES`; the fast engine reuses frames (by camera and stamp) across cycles.

        Raises:
            ValueError: an unknown engine.
        """
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        self.model = model
        self._model_id = model_id
        self.max_new_tokens = max_new_tokens
        use_fast = engine == "fast" or (engine == "auto" and model.device.type == "cuda")
        self.fast = FastEngine(model) if use_fast else None

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def family(self) -> str:
        """"r1" (Alpamayo-R1) or "a15" (Alpamayo 1.5: `route`, `guidance_weight` and `ask` available)."""
        return self.model.config.family

    def plan(
        self,
        obs: Observation,
        *,
        num_samples: int,
        seed: int | None,
        route: str | None = None,
        guidance_weight: float | None = None,
    ) -> EngineResult:
        """Observation -> S trajectories in the ego frame at t0 plus their reasoning.

        Args:
            obs: the synchronised observation.
            num_samples: S.
            seed: sampling seed (None: torch's global RNG).
            route: 1.5 only: navigation text ("Turn left in 11m") for the route block; None: no route.
            guidance_weight: 1.5 only: classifier-free guidance weight (needs `route`); None: off.

        Raises:
            ValueError: the cameras do not match the model's, their image sizes differ, or route/guidance on
                an R1 model (or guidance without a route).
        """
        images = self._images(obs)  # [1, V, F, 3, H, W]
        frames: dict[str, Any] = {}
        if self.fast is not None:  # a frame is identified by its camera and stamp; V·F ids in image order
            stamps = obs.frame_stamps_ns.tolist()  # [V][F]
            frames["frame_ids"] = [(name, stamp) for name, row in zip(obs.camera_names, stamps)
                                   for stamp in row]
        out = (self.model if self.fast is None else self.fast).plan(
            images,
            torch.from_numpy(obs.history_xyz).unsqueeze(0),  # [1, H, 3]
            torch.from_numpy(obs.history_rot).unsqueeze(0),  # [1, H, 3, 3]
            num_samples=num_samples,
            seed=seed,
            max_new_tokens=self.max_new_tokens,
            route=None if route is None else [route],
            guidance_weight=guidance_weight,
            **frames,
        )
        return EngineResult(
            xyz=out.xyz[0].float().cpu().numpy(),  # [S, T, 3]
            rot=out.rot[0].float().cpu().numpy(),  # [S, T, 3, 3]
            reasoning=tuple(out.coc[0]),
            timings_ms=dict(out.timings_ms),
        )

    def ask(
        self, obs: Observation, question: str, *, seed: int | None = None, max_new_tokens: int | None = None,
        greedy: bool = False,
    ) -> str:
        """1.5 only: answer a question about the observation's images (no history, no trajectory).

        Args:
            obs: the synchronised observation (its images are used).
            question: plain text.
            seed: sampling seed (None: torch's global RNG).
            max_new_tokens: answer token cap; default the engine's CoC cap.
            greedy: argmax decoding.

        Raises:
            ValueError: an R1 model, cameras that do not match, or a question holding special tokens.
        """
        cap = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        return self.model.ask(self._images(obs), question, seed=seed, greedy=greedy, max_new_tokens=cap)

    def _images(self, obs: Observation) -> torch.Tensor:
        """The observation's images as the model takes them, [1, V, F, 3, H, W] uint8.

        Raises:
            ValueError: the cameras do not match the model's, or their image sizes differ.
        """
        expected = self.model.config.io.camera_names
        if len(obs.camera_names) != len(expected):
            raise ValueError(f"the model takes {len(expected)} cameras {expected}, got {obs.camera_names}")
        sizes = {views.shape[1:3] for views in obs.images}
        if len(sizes) != 1:
            raise ValueError(f"all cameras must share one image size for batching, got {sorted(sizes)}")
        images = torch.from_numpy(np.stack(obs.images))  # [V, F, H, W, 3] uint8
        return images.permute(0, 1, 4, 2, 3).unsqueeze(0)  # [1, V, F, 3, H, W]

    def warmup(self, image_size_hw: tuple[int, int], num_samples: int = 1) -> float:
        """One full plan on a grey scene standing still (so the first real cycle is not slow); returns ms.

        The fast engine also sizes its static buffers and captures its CUDA graphs for `num_samples` here.
        """
        io = self.model.config.io
        h, w = image_size_hw
        views = tuple(np.full((io.frames_per_camera, h, w, 3), 128, np.uint8) for _ in io.camera_names)
        obs = Observation(
            t0_ns=0, camera_names=io.camera_names, images=views,
            frame_stamps_ns=np.zeros((len(views), io.frames_per_camera), np.int64),
            history_xyz=np.zeros((io.history_poses, 3), np.float32),
            history_rot=np.broadcast_to(np.eye(3, dtype=np.float32), (io.history_poses, 3, 3)).copy(),
            t0_position=np.zeros(3), t0_rotation=np.eye(3), speed_mps=0.0)
        start = time.perf_counter()
        self.plan(obs, num_samples=num_samples, seed=0)
        if self.fast is not None:
            self.fast.frames.clear()  # the grey frames' ids (stamp 0) must not stand for real frames
        return (time.perf_counter() - start) * 1e3

    def describe(self) -> dict[str, Any]:
        """Device, dtype, size and (on CUDA) memory, for diagnostics."""
        info: dict[str, Any] = {
            "device": str(self.model.device),
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "engine": "reference" if self.fast is None else "fast",
        }
        if self.model.device.type == "cuda":
            info["gpu_memory_allocated_mb"] = round(torch.cuda.memory_allocated(self.model.device) / 2**20, 1)
            info["gpu_memory_peak_mb"] = round(torch.cuda.max_memory_allocated(self.model.device) / 2**20, 1)
        return info


class RoutedEngine:
    """An Alpamayo 1.5 engine with this cycle's navigation text: `plan` adds the route and guidance weight."""

    def __init__(self, engine: ModelEngine, route: str, guidance_weight: float) -> None:
        self._engine, self.route = engine, route
        # w = 1 is the route prompt alone, bitwise; only another weight needs the unguided expert pass.
        self.guidance_weight = None if guidance_weight == 1.0 else guidance_weight

    @property
    def model_id(self) -> str:
        return self._engine.model_id

    def plan(self, obs: Observation, *, num_samples: int, seed: int | None) -> EngineResult:
        return self._engine.plan(obs, num_samples=num_samples, seed=seed, route=self.route,
                                 guidance_weight=self.guidance_weight)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; otherwise the named device (clear error if CUDA is missing)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"model.device={device!r} but CUDA is not available (torch {torch.__version__})")
    return resolved


def load_engine(*, backend: str, path: str, tokenizer_path: str, device: str, dtype: str, max_new_tokens: int,
                num_cameras: int, warmup: bool, warmup_size_hw: tuple[int, int] = (270, 480),
                engine: str = "auto", warmup_samples: int = 1, family: str | None = None) -> ModelEngine:
    """Build the engine for the node's `model.*` parameters (`engine`: see `ENGINES`; the warm-up plans
    `warmup_samples` samples, which should be the node's sample count; `family`: "r1", "a15" or None to
    detect it from config.json).

    Raises:
        CheckpointError: no checkpoint at the path (or the embedded model is missing), key mismatches.
        ValueError: bad device/dtype/engine, or a camera count the model does not take.
    """
    if backend == "checkpoint" and not path:
        raise CheckpointError("model.backend=checkpoint needs model.path (the checkpoint directory)")
    checkpoint = Path(path) if path else EMBEDDED_TINY
    if not checkpoint.is_dir():
        raise CheckpointError(f"checkpoint directory {checkpoint} does not exist")
    torch_device = resolve_device(device)
    torch_dtype = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    model = from_pretrained(checkpoint, tokenizer_path=tokenizer_path or None, dtype=torch_dtype, family=family,
                            device=torch_device)
    cameras = model.config.io.camera_names
    if len(cameras) != num_cameras:
        raise ValueError(f"the checkpoint at {checkpoint} takes {len(cameras)} cameras {cameras}, "
                         f"but sync.cameras lists {num_cameras}")
    model_engine = ModelEngine(model, f"{checkpoint.name}@{checkpoint}", max_new_tokens, engine)
    if warmup:
        logger.info("warm-up inference took %.0f ms", model_engine.warmup(warmup_size_hw, warmup_samples))
    return model_engine
