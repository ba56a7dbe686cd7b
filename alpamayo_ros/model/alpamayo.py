"""AlpamayoR1: Qwen3-VL reasoning VLM + flow-matching action expert, as one `nn.Module` (MODEL.md §1).

`plan()` runs the whole inference path: image preprocessing and prompt (§4), VLM prefill and CoC decoding
(§5), then per Euler step the expert over the VLM's KV cache (§6) and finally the unicycle integration (§7).
Submodule names (`vlm`, `expert`, `action_in_proj`, `action_out_proj`, `action_space`) give the checkpoint's
key names.

Dtype policy: float32 weights run without autocast; bf16 weights (the reference, on CUDA) run the whole call
under `torch.autocast(bf16)` as upstream does (§8.1). Cast weights with `cast_weights`, never `.to(dtype)`,
which would also round the float32 RoPE frequency buffers.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase, Qwen3VLForConditionalGeneration
from transformers.cache_utils import DynamicCache

from alpamayo_ros.model.action_proj import PerWaypointActionInProjV2
from alpamayo_ros.model.action_space import UnicycleAccelCurvatureActionSpace
from alpamayo_ros.model.config import AlpamayoConfig
from alpamayo_ros.model.expert import (
    build_expert,
    expert_attention_mask,
    expert_offsets,
    expert_position_ids,
    run_expert,
)
from alpamayo_ros.model.flow_matching import euler_sample
from alpamayo_ros.model.generation import extract_span, generate_tokens, replace_after_eos
from alpamayo_ros.model.history import DeltaHistoryTokenizer
from alpamayo_ros.model.images import PatchGeometry, preprocess_images
from alpamayo_ros.model.prompt import fuse_history, mrope_position_ids, prompt_token_ids
from alpamayo_ros.model.tokens import special_token, verify_tokenizer

logger = logging.getLogger(__name__)

STAGES = ("preprocess", "vision", "prefill", "decode", "expert", "total")


@dataclass(frozen=True)
class PlanOutput:
    """Result of `AlpamayoR1.plan` for B inputs × S samples (sample s of input b is internal row b·S + s)."""

    xyz: Tensor  # [B, S, T, 3] float32, m, t0 ego frame (x forward, y left, z up); z = last history z
    rot: Tensor  # [B, S, T, 3, 3] float32 rotations R_z(θ_k)
    coc: list[list[str]]  # [B][S] chain-of-causation text ("" when no <|cot_end|> was generated)
    token_ids: Tensor  # [B, S, N] int64 generated ids, padded after the first <|traj_future_start|>
    eos_found: Tensor  # [B, S] bool: emitted <|traj_future_start|> (else the expert saw the whole rollout)
    timings_ms: dict[str, float]  # stage -> wall ms, stages in STAGES

    @property
    def num_coc_tokens(self) -> int:
        """N, decode steps taken (the same for every row)."""
        return self.token_ids.shape[-1]


class _StageTimer:
    """Wall-clock stage timings; synchronises CUDA before each reading so GPU work lands in its stage."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = self.last = self._now()
        self.ms: dict[str, float] = {}

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def mark(self, stage: str) -> None:
        now = self._now()
        self.ms[stage] = (now - self.last) * 1e3
        self.last = now

    def finish(self) -> dict[str, float]:
        self.ms["total"] = (self.last - self.start) * 1e3
        return self.ms


class AlpamayoR1(nn.Module):
    """Alpamayo-R1 inference network; randomly initialised (load weights with `loading.from_pretrained`)."""

    def __init__(
        self, config: AlpamayoConfig, tokenizer: PreTrainedTokenizerBase, *, attn_implementation: str = "sdpa"
    ) -> None:
        """Args:
        config: model configuration.
        tokenizer: the extended tokenizer; checked id by id against `config.tokens`.
        attn_implementation: VLM attention ("sdpa", "eager", "flash_attention_2"); the expert uses SDPA.

        Raises:
            TokenizerError: the tokenizer does not match `config.tokens`.
        """
        super().__init__()
        verify_tokenizer(tokenizer, config.tokens, "the tokenizer given to AlpamayoR1")
        self.config = config
        self.tokenizer = tokenizer
        self.special = config.tokens.special_token_ids()
        self.vlm = Qwen3VLForConditionalGeneration(config.vlm_config(attn_implementation))
        self.expert = build_expert(config.expert_config(self.vlm.config.text_config))
        self.action_in_proj = PerWaypointActionInProjV2(config.action_in_proj, config.expert.hidden_size)
        self.action_out_proj = nn.Linear(config.expert.hidden_size, 2)  # -> (accel, curvature) velocity
        self.action_space = UnicycleAccelCurvatureActionSpace(config.action_space)
        self.history_tokenizer = DeltaHistoryTokenizer(config.history)
        v = config.vision
        self.patch_geometry = PatchGeometry(v.patch_size, v.temporal_patch_size, v.spatial_merge_size)
        self._prompt_ids: dict[int, Tensor] = {}  # tokens per image -> prompt ids [L] with placeholders

    @property
    def device(self) -> torch.device:
        return self.vlm.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.vlm.lm_head.weight.dtype

    @torch.no_grad()
    def cast_weights(self, dtype: torch.dtype) -> AlpamayoR1:
        """Cast every parameter (not the buffers) to `dtype`, in place; returns self."""
        for param in self.parameters():
            param.data = param.data.to(dtype)
        return self

    def _autocast(self) -> AbstractContextManager:
        """bf16/fp16 weights run under autocast like the reference; float32 runs plain."""
        low = self.dtype in (torch.bfloat16, torch.float16)
        return torch.autocast(self.device.type, dtype=self.dtype if low else torch.bfloat16, enabled=low)

    def prepare_inputs(
        self, images: Tensor, hist_xyz: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Images + history -> VLM inputs on the model device.

        Args:
            images: [B, V, F, 3, H, W] uint8 RGB, cameras in `config.io.camera_names` order, oldest first.
            hist_xyz: [B, H, 3] history positions (m, t0 frame, oldest first).

        Returns:
            input_ids [B, L], pixel_values [B·V·F·patches, patch_dim] float32, image_grid_thw [B·V·F, 3],
            position_ids [3, B, L], rope_deltas [B, 1].
        """
        batch = images.shape[0]
        flat = images.reshape(-1, *images.shape[-3:])  # [B·V·F, 3, H, W], camera-major, time-minor
        proc = self.config.processor
        pixel_values, grid = preprocess_images(flat, self.patch_geometry, proc.min_pixels, proc.max_pixels)
        per_image = int(grid[0].prod()) // self.patch_geometry.merge_size**2
        if per_image not in self._prompt_ids:
            io = self.config.io
            self._prompt_ids[per_image] = prompt_token_ids(
                self.tokenizer, self.special, io.num_images, io.tokens_per_history_traj, per_image
            )
        hist_bins = self.history_tokenizer.encode(hist_xyz.cpu())  # [B, 3H]
        hist_ids = hist_bins + self.config.tokens.hist_token_start_idx
        prompt = self._prompt_ids[per_image].expand(batch, -1)  # [B, L]
        input_ids = fuse_history(prompt, hist_ids, self.special.traj_history)
        position_ids, rope_deltas = mrope_position_ids(
            input_ids, grid.cpu(), self.special.image_pad, self.patch_geometry.merge_size
        )
        device = self.device
        return (input_ids.to(device), pixel_values.to(device), grid.to(device), position_ids.to(device),
                rope_deltas.to(device))

    def _encode_images(self, pixel_values: Tensor, grid: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Vision tower -> (image embeds [Σ tokens, D], deepstack features, one [Σ tokens, D] per merger)."""
        visual = self.vlm.model.visual
        # transformers 5.x returns an output object here instead of the tuple.
        return visual(pixel_values.to(visual.dtype), grid_thw=grid)

    def _prefill(
        self,
        input_ids: Tensor,
        position_ids: Tensor,
        image_embeds: Tensor,
        deepstack: list[Tensor],
        cache: DynamicCache,
    ) -> Tensor:
        """Run the prompt through the language model into `cache` -> last-position logits [B, vocab]."""
        lm = self.vlm.model.language_model
        embeds = lm.embed_tokens(input_ids)  # [B, L, D]
        image_mask = input_ids == self.special.image_pad  # [B, L]
        embeds = embeds.masked_scatter(image_mask[..., None], image_embeds.to(embeds.dtype))
        out = lm(
            inputs_embeds=embeds,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            visual_pos_masks=image_mask,
            deepstack_visual_embeds=deepstack,
        )
        return self.vlm.lm_head(out.last_hidden_state[:, -1])

    def _decode_step(self, tokens: Tensor, cache: DynamicCache, rope_deltas: Tensor) -> Tensor:
        """Append tokens [b*] at position cache length + rope_delta (3 axes) -> next logits [b*, vocab]."""
        lm = self.vlm.model.language_model
        positions = (cache.get_seq_length() + rope_deltas).reshape(1, -1, 1).expand(3, -1, -1)  # [3, b*, 1]
        embeds = lm.embed_tokens(tokens[:, None])  # [b*, 1, D]
        out = lm(inputs_embeds=embeds, position_ids=positions, past_key_values=cache, use_cache=True)
        return self.vlm.lm_head(out.last_hidden_state[:, -1])

    def sample_actions(
        self, cache: DynamicCache, sequences: Tensor, rope_deltas: Tensor, noise: Tensor
    ) -> Tensor:
        """Flow-matching Euler integration of the expert velocity field over the VLM cache (§6).

        Args:
            cache: VLM cache of the rollout, b* rows (left at its length on return).
            sequences: [b*, L_total] prompt + generated ids, padded after EOS.
            rope_deltas: [b*, 1].
            noise: [b*, T, 2] x at t = 0.

        Returns:
            [b*, T, 2] float32 normalised actions.
        """
        num_tokens = self.config.n_waypoints
        offsets, _ = expert_offsets(sequences, self.special.traj_future_start)
        position_ids = expert_position_ids(rope_deltas, offsets, num_tokens)  # [3, b*, T]
        autocast = torch.is_autocast_enabled(self.device.type)
        mask_dtype = torch.float32 if autocast else self.expert.norm.weight.dtype
        mask = expert_attention_mask(offsets, cache.get_seq_length(), num_tokens, mask_dtype,
                                     self.config.expert_non_causal_attention)  # [b*, 1, T, P+T]

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            embeds = self.action_in_proj(x, t)  # [b*, T, D_e]
            hidden = run_expert(self.expert, embeds, cache, position_ids, mask)  # [b*, T, D_e]
            return self.action_out_proj(hidden)  # [b*, T, 2]

        return euler_sample(velocity, noise, self.config.flow.num_steps)

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
    ) -> PlanOutput:
        """Reason about the scene and sample S future trajectories per input.

        Args:
            images: [B, V, F, 3, H, W] uint8 RGB (channels first), V = len(config.io.camera_names) in that
                order, F = config.io.frames_per_camera oldest first; all images of the batch share one H×W.
            hist_xyz: [B, H, 3] float32 history positions (m) in the t0 ego frame, oldest first,
                H = config.io.history_poses.
            hist_rot: [B, H, 3, 3] float32 history rotations in the t0 frame.
            num_samples: S, CoC rollouts (and trajectories) per input.
            generator: random source for token sampling and then the noise (on the model device).
            seed: convenience: a fresh generator seeded with it (ignored when `generator` is given).
            max_new_tokens: CoC token cap; default config.sampling.max_new_tokens.
            noise: [B, S, T, 2] flow noise x₀ instead of drawing it.
            greedy: argmax decoding instead of sampling.
            forced_coc_ids: [B, S, N] teacher-forced CoC tokens (parity tests); see `generate_tokens`.

        Returns:
            PlanOutput.

        Raises:
            ValueError: inputs with the wrong shape or dtype.
        """
        cfg, special, device = self.config, self.special, self.device
        batch, samples, num_tokens = images.shape[0], num_samples, cfg.n_waypoints
        max_new_tokens = cfg.sampling.max_new_tokens if max_new_tokens is None else max_new_tokens
        self._check_inputs(images, hist_xyz, hist_rot, num_samples, max_new_tokens, noise, forced_coc_ids)
        if generator is None and seed is not None:
            generator = torch.Generator(device=device).manual_seed(seed)
        timer = _StageTimer(device)
        with self._autocast():
            input_ids, pixel_values, grid, position_ids, rope_deltas = self.prepare_inputs(images, hist_xyz)
            timer.mark("preprocess")
            image_embeds, deepstack = self._encode_images(pixel_values, grid)
            timer.mark("vision")
            cache = DynamicCache()
            logits = self._prefill(input_ids, position_ids, image_embeds, deepstack, cache)  # [B, vocab]
            for layer in cache.layers:  # row b·S + s is sample s of input b, as upstream's generate
                layer.keys = layer.keys.repeat_interleave(samples, dim=0)
                layer.values = layer.values.repeat_interleave(samples, dim=0)
            logits = logits.repeat_interleave(samples, 0)  # [b*, vocab]
            rope_deltas = rope_deltas.repeat_interleave(samples, 0)  # [b*, 1]
            timer.mark("prefill")
            generated = generate_tokens(
                logits,
                lambda tokens: self._decode_step(tokens, cache, rope_deltas),
                traj_range=(cfg.tokens.traj_token_start_idx, cfg.tokens.traj_token_end_idx),
                eos_id=special.traj_future_start,
                im_end_id=special.im_end,
                pad_id=special.pad,
                temperature=cfg.sampling.temperature,
                top_p=cfg.sampling.top_p,
                max_new_tokens=max_new_tokens,
                generator=generator,
                greedy=greedy,
                forced=None if forced_coc_ids is None else forced_coc_ids.reshape(batch * samples, -1),
            )  # [b*, N]
            generated = replace_after_eos(generated, special.traj_future_start, special.pad)
            timer.mark("decode")
            if noise is None:
                noise = torch.randn(batch * samples, num_tokens, 2, generator=generator, device=device)
            sequences = torch.cat([input_ids.repeat_interleave(samples, 0), generated], dim=1)  # [b*, L+N]
            noise = noise.reshape(-1, num_tokens, 2).to(device)  # [b*, T, 2]
            action = self.sample_actions(cache, sequences, rope_deltas, noise)  # [b*, T, 2]
            hist_xyz = hist_xyz.to(device).repeat_interleave(samples, 0)  # [b*, H, 3]
            hist_rot = hist_rot.to(device).repeat_interleave(samples, 0)  # [b*, H, 3, 3]
            xyz, rot = self.action_space.action_to_traj(action, hist_xyz, hist_rot)  # [b*, T, 3], [.., 3, 3]
            timer.mark("expert")
        _, eos_found = expert_offsets(generated, special.traj_future_start)
        if not bool(eos_found.all()):
            missing = int((~eos_found).sum())
            logger.warning("%d of %d rollouts never emitted <|traj_future_start|>", missing, len(eos_found))
        texts = self.tokenizer.batch_decode(generated.tolist(), skip_special_tokens=False)
        coc = [extract_span(special_token("cot_start") + text, "cot") for text in texts]
        return PlanOutput(
            xyz=xyz.reshape(batch, samples, num_tokens, 3),
            rot=rot.reshape(batch, samples, num_tokens, 3, 3),
            coc=[coc[b * samples : (b + 1) * samples] for b in range(batch)],
            token_ids=generated.reshape(batch, samples, -1),
            eos_found=eos_found.reshape(batch, samples),
            timings_ms=timer.finish(),
        )

    def _check_inputs(
        self,
        images: Tensor,
        hist_xyz: Tensor,
        hist_rot: Tensor,
        samples: int,
        max_new_tokens: int,
        noise: Tensor | None,
        forced: Tensor | None,
    ) -> None:
        """Raise ValueError unless every `plan` input has the documented shape and dtype."""
        io, batch = self.config.io, images.shape[0] if images.dim() else 0
        views, frames, poses = len(io.camera_names), io.frames_per_camera, io.history_poses
        layout_ok = images.dim() == 6 and images.shape[1:4] == (views, frames, 3) and batch >= 1
        if not layout_ok or images.dtype != torch.uint8:
            raise ValueError(
                f"images must be uint8 [B, {views}, {frames}, 3, H, W], "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        if hist_xyz.shape != (batch, poses, 3) or hist_rot.shape != (batch, poses, 3, 3):
            raise ValueError(
                f"hist_xyz/hist_rot must be [{batch}, {poses}, 3] / [{batch}, {poses}, 3, 3], "
                f"got {tuple(hist_xyz.shape)} / {tuple(hist_rot.shape)}"
            )
        if samples < 1 or max_new_tokens < 1:
            raise ValueError(
                f"num_samples and max_new_tokens must be >= 1, got {samples} and {max_new_tokens}"
            )
        if noise is not None and noise.shape != (batch, samples, self.config.n_waypoints, 2):
            raise ValueError(
                f"noise must be [{batch}, {samples}, {self.config.n_waypoints}, 2], got {tuple(noise.shape)}"
            )
        bad_forced = forced is not None and (forced.dim() != 3 or forced.shape[:2] != (batch, samples))
        if bad_forced or (forced is not None and forced.numel() == 0):
            raise ValueError(
                f"forced_coc_ids must be [{batch}, {samples}, N >= 1], got {tuple(forced.shape)}"
            )
