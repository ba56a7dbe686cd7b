"""AlpamayoR1: Qwen3-VL reasoning VLM + flow-matching action expert, as one `nn.Module` (MODEL.md §1).

`plan()` runs the whole inference path: image preprocessing and prompt (§4), VLM prefill and CoC decoding
(§5), then per Euler step the expert over the VLM's KV cache (§6) and finally the unicycle integration (§7).
Submodule names (`vlm`, `expert`, `action_in_proj`, `action_out_proj`, `action_space`) give the checkpoint's
key names.

The same class runs Alpamayo 1.5 (`config.family == "a15"`, MODEL-1.5.md): the labelled prompt, an optional
route text per input with classifier-free guidance over the expert (`guidance.py`), and `ask()` for scene
questions. Without a route and guidance weight, `plan` runs exactly the plain path.

Dtype policy: float32 weights run without autocast; bf16 weights (the reference, on CUDA) run the whole call
under `torch.autocast(bf16)` as upstream does (§8.1). Cast weights with `cast_weights`, never `.to(dtype)`,
which would also round the float32 RoPE frequency buffers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
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
    repeat_cache_rows,
    run_expert,
)
from alpamayo_ros.model.flow_matching import VelocityFn, euler_sample
from alpamayo_ros.model.generation import StepFn, extract_span, generate_tokens, replace_after_eos
from alpamayo_ros.model.guidance import guided_velocity, unguided_velocity
from alpamayo_ros.model.history import DeltaHistoryTokenizer
from alpamayo_ros.model.images import PatchGeometry, preprocess_images
from alpamayo_ros.model.inputs import PromptBuilder, check_plan_inputs, check_question_inputs, check_route
from alpamayo_ros.model.prompt import fuse_history, mrope_position_ids
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
    """Alpamayo-R1 / 1.5 inference network, randomly initialised (weights: `loading.from_pretrained`)."""

    def __init__(
        self, config: AlpamayoConfig, tokenizer: PreTrainedTokenizerBase, *, attn_implementation: str = "sdpa"
    ) -> None:
        """Args:
        config: model configuration.
        tokenizer: the extended tokenizer; checked id by id against `config.tokens` (either family's names
            for the nine renamed slots).
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
        self.prompts = PromptBuilder(config, tokenizer)  # the family's prompt ids, cached

    @property
    def family(self) -> str:
        """"r1" or "a15" (`config.family`): prompt style and which of route/CFG and `ask` are available."""
        return self.config.family

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

    def _preprocess(self, images: Tensor) -> tuple[Tensor, Tensor, int]:
        """[B, V, F, 3, H, W] uint8 -> pixel_values, image_grid_thw (CPU), LLM tokens per image."""
        flat = images.reshape(-1, *images.shape[-3:])  # [B·V·F, 3, H, W], camera-major, time-minor
        proc = self.config.processor
        pixel_values, grid = preprocess_images(flat, self.patch_geometry, proc.min_pixels, proc.max_pixels)
        return pixel_values, grid, int(grid[0].prod()) // self.patch_geometry.merge_size**2

    def prepare_inputs(
        self,
        images: Tensor,
        hist_xyz: Tensor,
        *,
        route: Sequence[str | None] | None = None,
        camera_names: Sequence[str] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Images + history (+ route texts) -> VLM inputs on the model device.

        Args:
            images: [B, V, F, 3, H, W] uint8 RGB, cameras in `camera_names` order, oldest first.
            hist_xyz: [B, H, 3] history positions (m, t0 frame, oldest first).
            route: per input a navigation text for the route block, or None (no block); rows whose prompts
                then differ in length are left-padded with `<|endoftext|>` (the padding mask is
                `input_ids != pad`: the prompt never holds that token otherwise).
            camera_names: the V cameras; default `config.io.camera_names`.

        Returns:
            input_ids [B, L], pixel_values [B·V·F·patches, patch_dim] float32, image_grid_thw [B·V·F, 3],
            position_ids [3, B, L], rope_deltas [B, 1].
        """
        pixel_values, grid, per_image = self._preprocess(images)
        cameras = self.prompts.camera_indices(camera_names)
        prompt = self.prompts.trajectory(images.shape[0], cameras, per_image, route)  # [B, L]
        hist_bins = self.history_tokenizer.encode(hist_xyz.cpu())  # [B, 3H]
        hist_ids = hist_bins + self.config.tokens.hist_token_start_idx
        input_ids = fuse_history(prompt, hist_ids, self.special.traj_history)
        position_ids, rope_deltas = mrope_position_ids(
            input_ids, grid.cpu(), self.special.image_pad, self.patch_geometry.merge_size,
            self._padding_mask(input_ids),
        )
        device = self.device
        return (input_ids.to(device), pixel_values.to(device), grid.to(device), position_ids.to(device),
                rope_deltas.to(device))

    def _padding_mask(self, input_ids: Tensor) -> Tensor | None:
        """[B, L] bool, False at left padding; None when no row is padded (the plain path passes no mask)."""
        mask = input_ids != self.special.pad
        return None if bool(mask.all()) else mask

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
        attention_mask: Tensor | None = None,
    ) -> Tensor:
        """Run the prompt through the language model into `cache` -> last-position logits [B, vocab].

        `attention_mask` [B, L] bool (False at left padding) is given only for padded prompts.
        """
        lm = self.vlm.model.language_model
        embeds = lm.embed_tokens(input_ids)  # [B, L, D]
        image_mask = input_ids == self.special.image_pad  # [B, L]
        embeds = embeds.masked_scatter(image_mask[..., None], image_embeds.to(embeds.dtype))
        out = lm(
            inputs_embeds=embeds,
            position_ids=position_ids,
            attention_mask=attention_mask,
            past_key_values=cache,
            use_cache=True,
            visual_pos_masks=image_mask,
            deepstack_visual_embeds=deepstack,
        )
        return self.vlm.lm_head(out.last_hidden_state[:, -1])

    def _decode_step(
        self, tokens: Tensor, cache: DynamicCache, rope_deltas: Tensor, attention_mask: Tensor | None = None
    ) -> Tensor:
        """Append tokens [b*] at position cache length + rope_delta (3 axes) -> next logits [b*, vocab].

        `attention_mask` [b*, cache length + 1] is given only for padded prompts.
        """
        lm = self.vlm.model.language_model
        positions = (cache.get_seq_length() + rope_deltas).reshape(1, -1, 1).expand(3, -1, -1)  # [3, b*, 1]
        embeds = lm.embed_tokens(tokens[:, None])  # [b*, 1, D]
        out = lm(inputs_embeds=embeds, position_ids=positions, attention_mask=attention_mask,
                 past_key_values=cache, use_cache=True)
        return self.vlm.lm_head(out.last_hidden_state[:, -1])

    def _decoder(self, cache: DynamicCache, rope_deltas: Tensor, prompt_mask: Tensor | None) -> StepFn:
        """The decode step of `generate_tokens`; with a padded prompt [b*, L] the mask grows by one per token
        (generated tokens are always attended, as transformers' generate does)."""
        if prompt_mask is None:
            return lambda tokens: self._decode_step(tokens, cache, rope_deltas)
        mask = prompt_mask

        def step(tokens: Tensor) -> Tensor:
            nonlocal mask
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # [b*, cache length + 1]
            return self._decode_step(tokens, cache, rope_deltas, mask)

        return step

    def _velocity(
        self, cache: DynamicCache, sequences: Tensor, rope_deltas: Tensor, prompt_mask: Tensor | None = None
    ) -> VelocityFn:
        """The expert's velocity field over one rollout's cache (§6.2); see `sample_actions`."""
        num_tokens = self.config.n_waypoints
        offsets, _ = expert_offsets(sequences, self.special.traj_future_start)
        position_ids = expert_position_ids(rope_deltas, offsets, num_tokens)  # [3, b*, T]
        autocast = torch.is_autocast_enabled(self.device.type)
        mask_dtype = torch.float32 if autocast else self.expert.norm.weight.dtype
        mask = expert_attention_mask(offsets, cache.get_seq_length(), num_tokens, mask_dtype,
                                     self.config.expert_non_causal_attention, prompt_mask)  # [b*, 1, T, P+T]

        def velocity(x: Tensor, t: Tensor) -> Tensor:
            embeds = self.action_in_proj(x, t)  # [b*, T, D_e]
            hidden = run_expert(self.expert, embeds, cache, position_ids, mask)  # [b*, T, D_e]
            return self.action_out_proj(hidden)  # [b*, T, 2]

        return velocity

    def sample_actions(
        self,
        cache: DynamicCache,
        sequences: Tensor,
        rope_deltas: Tensor,
        noise: Tensor,
        *,
        prompt_mask: Tensor | None = None,
    ) -> Tensor:
        """Flow-matching Euler integration of the expert velocity field over the VLM cache (§6).

        Args:
            cache: VLM cache of the rollout, b* rows (left at its length on return).
            sequences: [b*, L_total] prompt + generated ids, padded after EOS.
            rope_deltas: [b*, 1].
            noise: [b*, T, 2] x at t = 0.
            prompt_mask: [b*, L] bool, False at the prompt's left padding; None = unpadded.

        Returns:
            [b*, T, 2] float32 normalised actions.
        """
        velocity = self._velocity(cache, sequences, rope_deltas, prompt_mask)
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
        route: Sequence[str | None] | None = None,
        guidance_weight: float | None = None,
        camera_names: Sequence[str] | None = None,
    ) -> PlanOutput:
        """Reason about the scene and sample S future trajectories per input.

        Args:
            images: [B, V, F, 3, H, W] uint8 RGB (channels first), V cameras in `camera_names` order,
                F = config.io.frames_per_camera oldest first; all images of the batch share one H×W.
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
            route: 1.5 only: per input a navigation text ("Turn left in 11m") for the prompt's route block,
                or None for no block; None = no route at all.
            guidance_weight: 1.5 only: classifier-free guidance weight w over the expert (needs a route for
                every input): v = (1 − w)·v_unguided + w·v_guided; None = no guidance (the guided path alone,
                which equals w = 1).
            camera_names: the V cameras of `images`; default config.io.camera_names. For 1.5 they must have
                upstream camera indices, in ascending order (the prompt labels them).

        Returns:
            PlanOutput.

        Raises:
            ValueError: inputs with the wrong shape or dtype, or a route/guidance request the model or
                inputs cannot take.
        """
        cfg, special, device = self.config, self.special, self.device
        batch, samples, num_tokens = images.shape[0], num_samples, cfg.n_waypoints
        max_new_tokens = cfg.sampling.max_new_tokens if max_new_tokens is None else max_new_tokens
        views = len(cfg.io.camera_names if camera_names is None else camera_names)
        self._check_inputs(images, hist_xyz, hist_rot, samples, max_new_tokens, noise, forced_coc_ids, views)
        check_route(cfg, route, guidance_weight, batch)
        if generator is None and seed is not None:
            generator = torch.Generator(device=device).manual_seed(seed)
        timer = _StageTimer(device)
        with self._autocast():
            input_ids, pixel_values, grid, position_ids, rope_deltas = self.prepare_inputs(
                images, hist_xyz, route=route, camera_names=camera_names
            )
            prompt_mask = self._padding_mask(input_ids)  # [B, L] or None
            timer.mark("preprocess")
            image_embeds, deepstack = self._encode_images(pixel_values, grid)
            timer.mark("vision")
            cache = DynamicCache()
            logits = self._prefill(input_ids, position_ids, image_embeds, deepstack, cache, prompt_mask)
            repeat_cache_rows(cache, samples)  # row b·S + s is sample s of input b, as upstream's generate
            logits = logits.repeat_interleave(samples, 0)  # [b*, vocab]
            rope_deltas = rope_deltas.repeat_interleave(samples, 0)  # [b*, 1]
            if prompt_mask is not None:
                prompt_mask = prompt_mask.repeat_interleave(samples, 0)  # [b*, L]
            timer.mark("prefill")
            generated = generate_tokens(
                logits,
                self._decoder(cache, rope_deltas, prompt_mask),
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
            if guidance_weight is None:
                action = self.sample_actions(cache, sequences, rope_deltas, noise, prompt_mask=prompt_mask)
            else:  # the unguided context counts as expert time
                velocity = guided_velocity(
                    self._velocity(cache, sequences, rope_deltas, prompt_mask),
                    unguided_velocity(self, input_ids, grid, image_embeds, deepstack, generated),
                    guidance_weight,
                )
                action = euler_sample(velocity, noise, cfg.flow.num_steps)  # [b*, T, 2]
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

    @torch.inference_mode()
    def ask(
        self,
        images: Tensor,
        question: str,
        *,
        max_new_tokens: int | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        greedy: bool = False,
        camera_names: Sequence[str] | None = None,
    ) -> str:
        """1.5 only: answer a question about the scene (MODEL-1.5.md §8; no history, no expert).

        The prompt holds the labelled images and `<|question_start|>question<|question_end|>`; the assistant
        turn starts with `<|answer_start|>`. Decoding samples as the trajectory path (temperature, top-p) but
        without the `<iN>` mask, and stops at `<|im_end|>` or `max_new_tokens`.

        Args:
            images: [1, V, F, 3, H, W] uint8 RGB as for `plan` (the reference notebook: front camera only).
            question: plain text.
            max_new_tokens: answer token cap; default config.sampling.max_new_tokens (upstream 256).
            generator: random source for sampling; seed: a fresh generator seeded with it.
            greedy: argmax decoding.
            camera_names: the V cameras of `images`; default config.io.camera_names.

        Returns:
            The generated text before the first `<|answer_end|>` (after an `<|answer_start|>` the model may
            write before it), stripped; "" if there is no `<|answer_end|>`.

        Raises:
            ValueError: an R1 model, bad images, or a question holding special tokens.
        """
        cfg, special, device = self.config, self.special, self.device
        max_new_tokens = cfg.sampling.max_new_tokens if max_new_tokens is None else max_new_tokens
        views = len(cfg.io.camera_names if camera_names is None else camera_names)
        check_question_inputs(cfg, images, max_new_tokens, views)
        if generator is None and seed is not None:
            generator = torch.Generator(device=device).manual_seed(seed)
        with self._autocast():
            pixel_values, grid, per_image = self._preprocess(images)
            input_ids = self.prompts.question(self.prompts.camera_indices(camera_names), per_image, question)
            position_ids, rope_deltas = mrope_position_ids(input_ids, grid, special.image_pad,
                                                           self.patch_geometry.merge_size)
            image_embeds, deepstack = self._encode_images(pixel_values.to(device), grid.to(device))
            cache = DynamicCache()
            input_ids, rope_deltas = input_ids.to(device), rope_deltas.to(device)
            logits = self._prefill(input_ids, position_ids.to(device), image_embeds, deepstack, cache)
            generated = generate_tokens(
                logits,
                self._decoder(cache, rope_deltas, None),
                traj_range=(0, 0),  # no <iN> mask on this path
                eos_id=special.im_end,
                im_end_id=special.im_end,
                pad_id=special.pad,
                temperature=cfg.sampling.temperature,
                top_p=cfg.sampling.top_p,
                max_new_tokens=max_new_tokens,
                generator=generator,
                greedy=greedy,
            )  # [1, N]
        # Generated tokens only, extracted as upstream extracts every key (MODEL-1.5.md §8, MODEL.md §5).
        return extract_span(self.tokenizer.decode(generated[0].tolist(), skip_special_tokens=False), "answer")

    def _check_inputs(
        self,
        images: Tensor,
        hist_xyz: Tensor,
        hist_rot: Tensor,
        samples: int,
        max_new_tokens: int,
        noise: Tensor | None,
        forced: Tensor | None,
        views: int | None = None,
    ) -> None:
        """`inputs.check_plan_inputs` for this model; V = `views`, default len(config.io.camera_names)."""
        views = len(self.config.io.camera_names) if views is None else views
        check_plan_inputs(self.config, images, hist_xyz, hist_rot, samples, max_new_tokens, noise, forced,
                          views)
