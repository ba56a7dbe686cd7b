"""`FastEngine`: the reference inference path (`AlpamayoR1.plan`) with static shapes, CUDA graphs and caching.

Same modules and weights as the reference, same arguments and outputs; what changes is how the work runs:
- preprocessing + vision: only frames not seen in an earlier plan are resized and encoded, all in one batched
  call (`vision.py`); the 3 older frames of each camera reuse the previous cycle's features.
- prompt: token ids and M-RoPE positions are computed once per image size and camera set.
- prefill: the reference's own `_prefill`, copied once into a `StaticKVCache` (B rows -> B·S rows).
- decode: `session.decode_step` (fixed shapes, on-device sampling and stop rule), one CUDA graph replay per
  token; the host reads each step's stop flag `stop_lookahead` steps late, so it never starves the GPU, and
  the tokens past the stop point are discarded (the reference never produces them).
- expert: all K Euler steps as one CUDA graph over [prefix ‖ expert slots] of the same cache (no copy, no
  crop).
On CPU the same steps run eagerly. Alpamayo 1.5 classifier-free guidance, and route texts that make the
batch's prompts differ in length (left padding), are not on the fast path: such plans run the reference path.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor
from transformers.cache_utils import DynamicCache

from alpamayo_ros.model.alpamayo import AlpamayoR1, PlanOutput, _StageTimer
from alpamayo_ros.model.engine.graphs import GraphRunner
from alpamayo_ros.model.engine.sampling import advance_generator, device_generator
from alpamayo_ros.model.engine.session import MODES, DecodeSession, autocast, decode_step, expert_loop
from alpamayo_ros.model.engine.vision import BatchedVisionEncoder, FrameCache, GridHW, tower_outputs
from alpamayo_ros.model.expert import expert_offsets
from alpamayo_ros.model.generation import extract_span, replace_after_eos
from alpamayo_ros.model.images import preprocess_images, smart_resize
from alpamayo_ros.model.inputs import check_route
from alpamayo_ros.model.prompt import fuse_history, mrope_position_ids
from alpamayo_ros.model.tokens import special_token

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FastEngineConfig:
    """Settings of the fast path. None of them changes the outputs (there is no lossy mode)."""

    cuda_graphs: bool = True  # capture the decode step and the expert loop as CUDA graphs (CUDA only)
    # Decode steps queued before the host reads a step's stop flag: 0 reads it at once (free on CPU, where
    # everything is synchronous); 1 keeps the GPU busy while the host waits, at the cost of one extra step.
    stop_lookahead: int | None = None  # None: 1 on CUDA, 0 on CPU
    vision_cache_frames: int = 64  # per-frame vision features kept across plans (LRU); 0 disables the cache
    capacity_multiple: int = 256  # cache slots are rounded up to this: small changes keep buffers and graphs

    def __post_init__(self) -> None:
        for name in ("stop_lookahead", "vision_cache_frames"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"FastEngineConfig.{name} must be >= 0, got {value!r}")
        if self.capacity_multiple < 1:
            raise ValueError(
                f"FastEngineConfig.capacity_multiple must be >= 1, got {self.capacity_multiple!r}"
            )


@dataclass(frozen=True)
class _Prompt:
    """The prompt of one image size, camera set and route (it does not depend on pixels or history)."""

    grid: GridHW  # patches per frame (grid_h, grid_w)
    ids: Tensor  # [B or 1, L] int64 on CPU, `<|traj_history|>` placeholders still in place
    position_ids: Tensor  # [3, 1, L] int64 on the model device (the same for every row)
    rope_deltas: Tensor  # [1, 1] int64 on the model device

    @property
    def length(self) -> int:
        return self.ids.shape[-1]


class FastEngine:
    """Plans with an `AlpamayoR1`'s modules like `AlpamayoR1.plan`, faster (see the module docstring)."""

    def __init__(self, model: AlpamayoR1, config: FastEngineConfig | None = None) -> None:
        """Args: model: the network (shared, not copied; keep it in eval mode). config: settings."""
        self.model = model
        self.config = config or FastEngineConfig()
        self.device = model.device
        lookahead = self.config.stop_lookahead
        self.stop_lookahead = lookahead if lookahead is not None else int(self.device.type == "cuda")
        self.vision = BatchedVisionEncoder(model.vlm.model.visual)
        self.frames = FrameCache(self.config.vision_cache_frames)
        self.frames_encoded = 0  # frames run through the vision tower so far
        self.frames_reused = 0  # frames taken from `frames` instead
        self._generator = torch.Generator(device=self.device)  # the decode steps' private RNG
        self._graphs = GraphRunner(self.device, self.config.cuda_graphs, self._generator)
        self._session: DecodeSession | None = None
        self._prompts: dict[tuple[int, int, tuple[int, ...]], _Prompt] = {}

    @property
    def session(self) -> DecodeSession | None:
        """The current static buffers (None before the first plan or warm-up)."""
        return self._session

    @property
    def uses_cuda_graphs(self) -> bool:
        return self._graphs.enabled

    @torch.inference_mode()
    def warmup(
        self,
        image_size_hw: tuple[int, int],
        *,
        num_samples: int = 1,
        max_new_tokens: int | None = None,
        modes: Sequence[str] = ("sample",),
    ) -> None:
        """Allocate the static buffers for this shape and capture the CUDA graphs of `modes` (if on CUDA).

        Args:
            image_size_hw: input frame size (H, W) in pixels.
            num_samples: S (batch 1).
            max_new_tokens: CoC token cap; default config.sampling.max_new_tokens.
            modes: decode modes to capture, among "sample", "greedy", "forced".

        Raises:
            ValueError: an unknown mode.
        """
        unknown = [mode for mode in modes if mode not in MODES]
        if unknown:
            raise ValueError(f"modes must be among {MODES}, got {unknown}")
        steps = self.model.config.sampling.max_new_tokens if max_new_tokens is None else max_new_tokens
        prompt = self._prompt(*image_size_hw, self.model.prompts.camera_indices(), None, 1)
        session = self._session_for(num_samples, prompt.length, steps)
        for mode in modes:
            self._prepare(session, mode)

    @torch.inference_mode()
    def plan(
        self,
        images: Tensor,
        hist_xyz: Tensor,
        hist_rot: Tensor,
        *,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        max_new_tokens: int | None = None,
        noise: Tensor | None = None,
        greedy: bool = False,
        forced_coc_ids: Tensor | None = None,
        route: Sequence[str | None] | None = None,
        guidance_weight: float | None = None,
        camera_names: Sequence[str] | None = None,
        frame_ids: Sequence[Hashable] | None = None,
    ) -> PlanOutput:
        """`AlpamayoR1.plan` with the same arguments and outputs, plus `frame_ids`.

        Args:
            images … camera_names: as `AlpamayoR1.plan`; the generator ends in the same state as there.
            frame_ids: B·V·F hashable frame identities in `images.reshape(-1, 3, H, W)` order (e.g.
                (camera, stamp_ns)), promising that equal ids mean equal pixels; frames whose id was seen in
                an earlier plan reuse its vision features. None: encode every frame, cache nothing. Unused
                when the plan runs on the reference path (guidance, padded route prompts).

        Returns:
            PlanOutput (timings_ms has the reference's stages).

        Raises:
            ValueError: as `AlpamayoR1.plan`, or the wrong number of frame ids.
        """
        model, cfg, special, device = self.model, self.model.config, self.model.special, self.device
        batch, samples, num_tokens = images.shape[0], num_samples, cfg.n_waypoints
        rows = batch * samples
        max_new_tokens = cfg.sampling.max_new_tokens if max_new_tokens is None else max_new_tokens
        cameras = model.prompts.camera_indices(camera_names)
        model._check_inputs(images, hist_xyz, hist_rot, num_samples, max_new_tokens, noise, forced_coc_ids,
                            len(cameras))
        check_route(cfg, route, guidance_weight, batch)
        flat = images.reshape(-1, *images.shape[-3:])  # [B·V·F, 3, H, W] camera-major, time-minor
        if frame_ids is not None and len(frame_ids) != flat.shape[0]:
            raise ValueError(f"frame_ids must hold B·V·F = {flat.shape[0]} ids, got {len(frame_ids)}")
        prompt = self._prompt(*images.shape[-2:], cameras, route, batch)
        if guidance_weight is not None or bool((prompt.ids == special.pad).any()):
            return model.plan(images, hist_xyz, hist_rot, num_samples=num_samples, generator=generator,
                              seed=seed, max_new_tokens=max_new_tokens, noise=noise, greedy=greedy,
                              forced_coc_ids=forced_coc_ids, route=route, guidance_weight=guidance_weight,
                              camera_names=camera_names)
        if generator is None and seed is not None:
            generator = torch.Generator(device=device).manual_seed(seed)
        mode = "forced" if forced_coc_ids is not None else "greedy" if greedy else "sample"
        steps = max_new_tokens if forced_coc_ids is None else min(max_new_tokens, forced_coc_ids.shape[-1])
        forced = None if forced_coc_ids is None else forced_coc_ids.reshape(rows, -1)[:, :steps].to(device)
        session = self._session_for(rows, prompt.length, steps)
        self._prepare(session, mode)  # before any state is loaded: capturing runs the steps on the buffers
        timer = _StageTimer(device)
        with autocast(model):
            hist_ids = model.history_tokenizer.encode(hist_xyz.cpu()) + cfg.tokens.hist_token_start_idx
            input_ids = fuse_history(prompt.ids.expand(batch, -1), hist_ids, special.traj_history).to(device)
            features, misses, pixel_values = self._cached_features(flat, frame_ids, prompt.grid)
            timer.mark("preprocess")
            image_embeds, deepstack = self._image_features(features, misses, pixel_values, frame_ids,
                                                           prompt.grid)
            timer.mark("vision")
            prefill = DynamicCache()
            positions = prompt.position_ids.expand(3, batch, -1)  # [3, B, L]
            logits = model._prefill(input_ids, positions, image_embeds, deepstack, prefill)  # [B, vocab]
            session.start(prefill, logits, prompt.rope_deltas.expand(batch, 1), samples, forced)
            del prefill
            timer.mark("prefill")
            source = generator if generator is not None else device_generator(device)
            if mode == "sample":
                self._generator.set_state(source.get_state())
            coc_tokens = self._decode(session, mode, steps)
            if mode == "sample":  # leave the caller's generator where the reference leaves it
                advance_generator(source, coc_tokens, rows, session.logits.shape[-1], device)
            generated = session.tokens[:, :coc_tokens]  # [b*, N]
            generated = replace_after_eos(generated, special.traj_future_start, special.pad)
            timer.mark("decode")
            if noise is None:
                noise = torch.randn(rows, num_tokens, 2, generator=generator, device=device)
            groups = cfg.expert.num_attention_heads // cfg.text.num_key_value_heads
            session.prepare_expert(generated, prompt.length, noise.reshape(rows, num_tokens, 2).to(device),
                                   special.traj_future_start, groups, cfg.expert_non_causal_attention)
            self._graphs.run("expert", partial(expert_loop, model, session))
            hist_xyz = hist_xyz.to(device).repeat_interleave(samples, 0)  # [b*, H, 3]
            hist_rot = hist_rot.to(device).repeat_interleave(samples, 0)  # [b*, H, 3, 3]
            # [b*, T, 3] and [b*, T, 3, 3]
            xyz, rot = model.action_space.action_to_traj(session.actions, hist_xyz, hist_rot)
            timer.mark("expert")
        _, eos_found = expert_offsets(generated, special.traj_future_start)
        if not bool(eos_found.all()):
            missing = int((~eos_found).sum())
            logger.warning("%d of %d rollouts never emitted <|traj_future_start|>", missing, len(eos_found))
        texts = model.tokenizer.batch_decode(generated.tolist(), skip_special_tokens=False)
        coc = [extract_span(special_token("cot_start") + text, "cot") for text in texts]
        return PlanOutput(
            xyz=xyz.reshape(batch, samples, num_tokens, 3),
            rot=rot.reshape(batch, samples, num_tokens, 3, 3),
            coc=[coc[b * samples : (b + 1) * samples] for b in range(batch)],
            token_ids=generated.reshape(batch, samples, -1),
            eos_found=eos_found.reshape(batch, samples),
            timings_ms=timer.finish(),
        )

    def _prompt(
        self,
        height: int,
        width: int,
        cameras: tuple[int, ...],
        route: Sequence[str | None] | None,
        batch: int,
    ) -> _Prompt:
        """Prompt ids and 3-D positions for frames of height × width; cached unless a route text is given.

        With a route the ids are [B, L] (rows may be left-padded, which the caller hands to the reference).
        """
        key = (height, width, cameras)
        if route is None or all(text is None for text in route):
            if key not in self._prompts:
                self._prompts[key] = self._build_prompt(height, width, cameras, None, 1)
            return self._prompts[key]
        return self._build_prompt(height, width, cameras, route, batch)

    def _build_prompt(
        self,
        height: int,
        width: int,
        cameras: tuple[int, ...],
        route: Sequence[str | None] | None,
        batch: int,
    ) -> _Prompt:
        """Build a `_Prompt` (see `_prompt`)."""
        model, cfg = self.model, self.model.config
        geometry = model.patch_geometry
        proc = cfg.processor
        h, w = smart_resize(height, width, geometry.factor, proc.min_pixels, proc.max_pixels)
        grid = (h // geometry.patch_size, w // geometry.patch_size)
        ids = model.prompts.trajectory(batch, cameras, grid[0] * grid[1] // geometry.merge_size**2, route)
        grids = torch.tensor([[1, *grid]] * (len(cameras) * cfg.io.frames_per_camera))
        positions, deltas = mrope_position_ids(ids[:1], grids, model.special.image_pad, geometry.merge_size)
        return _Prompt(grid, ids, positions.to(self.device), deltas.to(self.device))

    def _session_for(self, rows: int, prompt_len: int, steps: int) -> DecodeSession:
        """Static buffers for `rows` rows and `prompt_len` + `steps` cache slots.

        Reallocated only when too small, then sized for at least the default CoC cap and rounded up, so that
        later plans keep the buffers and their CUDA graphs.
        """
        session = self._session
        if session is not None and session.rows == rows and session.capacity >= prompt_len + steps:
            return session
        self._session = None  # free the old buffers and graphs before allocating new ones
        self._graphs.reset()
        needed = prompt_len + max(steps, self.model.config.sampling.max_new_tokens)
        multiple = self.config.capacity_multiple
        self._session = DecodeSession.allocate(self.model, rows, -(-needed // multiple) * multiple)
        return self._session

    def _prepare(self, session: DecodeSession, mode: str) -> None:
        """Capture the decode step of `mode` and the expert loop (CUDA graphs), before any state is loaded."""
        session.position.zero_()  # capture runs the steps: keep their writes inside the buffers
        session.step.zero_()
        decode = partial(decode_step, self.model, session, mode, self._generator)
        self._graphs.prepare(("decode", mode), decode)
        self._graphs.prepare("expert", partial(expert_loop, self.model, session))

    def _cached_features(
        self, flat: Tensor, frame_ids: Sequence[Hashable] | None, grid: GridHW
    ) -> tuple[list[Tensor | None], list[int], Tensor | None]:
        """Look the frames up in the cache and preprocess the misses.

        Returns:
            per frame its cached features or None, the indices of the misses, and their pixel_values
            [misses·P, patch_dim] on the model device (None if every frame hit).
        """
        keys = [None] * len(flat) if frame_ids is None else list(frame_ids)
        features = [None if key is None else self.frames.get(key, grid) for key in keys]
        misses = [index for index, feature in enumerate(features) if feature is None]
        if not misses:
            return features, misses, None
        proc, geometry = self.model.config.processor, self.model.patch_geometry
        pixel_values, _ = preprocess_images(flat[misses], geometry, proc.min_pixels, proc.max_pixels)
        return features, misses, pixel_values.to(self.device)

    def _image_features(
        self,
        features: list[Tensor | None],
        misses: list[int],
        pixel_values: Tensor | None,
        frame_ids: Sequence[Hashable] | None,
        grid: GridHW,
    ) -> tuple[Tensor, list[Tensor]]:
        """Encode the misses in one batch, cache them, and assemble the reference's vision outputs.

        Returns:
            image embeds [B·V·F·tokens, D] and the deepstack features, one [B·V·F·tokens, D] per merger.
        """
        if pixel_values is not None:
            encoded = self.vision.encode(pixel_values, grid)  # [misses, 1 + n_ds, tokens, D]
            for row, index in enumerate(misses):
                features[index] = encoded[row]
                if frame_ids is not None:
                    self.frames.put(frame_ids[index], grid, encoded[row])
        self.frames_encoded += len(misses)
        self.frames_reused += len(features) - len(misses)
        return tower_outputs(torch.stack(features))  # stacked: [B·V·F, 1 + n_ds, tokens, D]

    def _decode(self, session: DecodeSession, mode: str, steps: int) -> int:
        """Run decode steps until the stop rule fires (or `steps` ran) -> N, the number of tokens to keep.

        The flag of step s is read once step s + `stop_lookahead` is queued, so that many steps may run past
        the stop point; their tokens are discarded and their cache slots are masked for the expert.
        """
        pending: deque[tuple[int, torch.cuda.Event | None]] = deque()
        step_fn = partial(decode_step, self.model, session, mode, self._generator)
        for step in range(steps):
            self._graphs.run(("decode", mode), step_fn)
            event = None
            if self.device.type == "cuda":
                session.host_stop[step].copy_(session.stop[step], non_blocking=True)
                event = torch.cuda.Event()
                event.record()
            pending.append((step, event))
            while len(pending) > self.stop_lookahead or (pending and step + 1 == steps):
                done, done_event = pending.popleft()
                if done_event is not None:
                    done_event.synchronize()  # waits for step `done` only; later steps keep running
                if bool(session.host_stop[done]):
                    return done + 1
        return steps
