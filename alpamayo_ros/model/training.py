"""Training loss of `AlpamayoR1`: next-token loss on the Chain-of-Causation text plus flow matching.

One teacher-forced pass reuses the inference code path. The prompt goes through `prepare_inputs`,
`_encode_images` and `_prefill` into a `DynamicCache`. The assistant continuation
`<coc tokens><|cot_end|><|traj_future_start|>` is then appended to that cache in one language-model call.
The expert reads the finished cache exactly as `sample_actions` does at inference (MODEL.md §6.2): it sits
right after each row's `<|traj_future_start|>` (offset = its index + 1) and cannot see the row's padding
after it. Flow matching follows MODEL.md §6.3: x_t = t·x_data + (1 − t)·noise, target v = x_data − noise,
t = 0.999·(1 − u) with u ~ Beta(1.5, 1). The targets x_data are `action_space.traj_to_action` of the
ground-truth future. Both losses reach every module: the flow loss flows into the VLM through the cached keys
and values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers.cache_utils import DynamicCache

from alpamayo_ros.model.alpamayo import AlpamayoR1
from alpamayo_ros.model.engine.vision import BatchedVisionEncoder, tower_outputs
from alpamayo_ros.model.flow_matching import interpolate, sample_training_time, target_velocity
from alpamayo_ros.model.tokens import special_token

IGNORE_INDEX = -100  # cross-entropy ignore label (padding after <|traj_future_start|>)


@dataclass(frozen=True)
class TrainingBatch:
    """B training examples, in the shapes `AlpamayoR1.plan` takes plus the supervision."""

    images: Tensor  # [B, V, F, 3, H, W] uint8 RGB, cameras in config order, oldest frame first
    hist_xyz: Tensor  # [B, H, 3] float32 history positions, m, t0 ego frame
    hist_rot: Tensor  # [B, H, 3, 3] float32 history rotations
    fut_xyz: Tensor  # [B, T, 3] float32 ground-truth future positions at t0 + 0.1 … t0 + T·0.1 s
    fut_rot: Tensor  # [B, T, 3, 3] float32 ground-truth future rotations
    coc_text: tuple[str, ...]  # B Chain-of-Causation strings (the explanation)


@dataclass(frozen=True)
class LossOutput:
    """Losses of one batch; `total` is what to back-propagate."""

    total: Tensor  # scalar, coc_weight·coc + flow_weight·flow
    coc: Tensor  # scalar, mean next-token cross-entropy over the continuation tokens (nats)
    flow: Tensor  # scalar, mean squared velocity error per action dimension
    coc_token_accuracy: float  # fraction of continuation tokens predicted exactly by the argmax


def continuation_ids(model: AlpamayoR1, coc_text: tuple[str, ...]) -> Tensor:
    """Token ids of `<coc><|cot_end|><|traj_future_start|>` per row, right-padded with the pad id.

    Returns:
        [B, N] int64; N = longest continuation.
    """
    suffix = special_token("cot_end") + special_token("traj_future_start")
    rows = [model.tokenizer(text + suffix, add_special_tokens=False)["input_ids"] for text in coc_text]
    width = max(len(row) for row in rows)
    padded = [row + [model.special.pad] * (width - len(row)) for row in rows]
    return torch.tensor(padded, dtype=torch.int64)


def action_targets(model: AlpamayoR1, batch: TrainingBatch) -> Tensor:
    """Normalised ground-truth actions x_data = traj_to_action(future | history) -> [B, T, 2] float32."""
    device = model.device
    with torch.no_grad():
        return model.action_space.traj_to_action(
            batch.fut_xyz.to(device), batch.fut_rot.to(device), batch.hist_xyz.to(device),
            batch.hist_rot.to(device),
        )


@dataclass
class TeacherForced:
    """The VLM pass over prompt + continuation, as `plan` would have left it after decoding the CoC."""

    logits: Tensor  # [B, N, vocab] next-token logits for every continuation token (<iN> masked to −inf)
    labels: Tensor  # [B, N] int64 continuation ids, IGNORE_INDEX on the padding
    sequences: Tensor  # [B, L + N] prompt + continuation ids
    rope_deltas: Tensor  # [B, 1]
    cache: DynamicCache  # the language model's cache over all L + N tokens


def teacher_force(
    model: AlpamayoR1,
    images: Tensor,
    hist_xyz: Tensor,
    coc_text: tuple[str, ...],
    vision: BatchedVisionEncoder | None = None,
) -> TeacherForced:
    """Prefill the prompt like `plan`, then append `<coc><|cot_end|><|traj_future_start|>` in one call.

    The continuation gets the positions decode steps would give it (cache index + rope delta on all three
    M-RoPE axes), so its logits equal those of token-by-token decoding.

    Args:
        model: the network.
        images: [B, V, F, 3, H, W] uint8.
        hist_xyz: [B, H, 3].
        coc_text: B CoC strings.
        vision: encode all frames in one batch with this (same modules and values as the tower's per-image
            loop, several times fewer calls); None: the tower's own forward.
    """
    device, cfg = model.device, model.config
    input_ids, pixel_values, grid, position_ids, rope_deltas = model.prepare_inputs(images, hist_xyz)
    if vision is None:
        image_embeds, deepstack = model._encode_images(pixel_values, grid)
    else:
        if not bool((grid == grid[0]).all()):
            grids = grid.unique(dim=0).tolist()
            raise ValueError(f"batched vision needs one patch grid for all frames, got {grids}")
        features = vision.encode(pixel_values, (int(grid[0, 1]), int(grid[0, 2])))  # [N, 1 + n_ds, tokens, D]
        image_embeds, deepstack = tower_outputs(features)
    cache = DynamicCache()
    first_logits = model._prefill(input_ids, position_ids, image_embeds, deepstack, cache)  # [B, vocab]
    cont = continuation_ids(model, coc_text).to(device)  # [B, N]
    prompt_len, cont_len = input_ids.shape[1], cont.shape[1]
    steps = torch.arange(prompt_len, prompt_len + cont_len, device=device)  # [N]
    cont_positions = (steps[None, :] + rope_deltas).unsqueeze(0).expand(3, -1, -1)  # [3, B, N]
    lm = model.vlm.model.language_model
    hidden = lm(inputs_embeds=lm.embed_tokens(cont), position_ids=cont_positions, past_key_values=cache,
                use_cache=True).last_hidden_state  # [B, N, D]
    logits = torch.cat([first_logits[:, None], model.vlm.lm_head(hidden[:, :-1])], dim=1)  # [B, N, vocab]
    # Inference masks every <iN> logit (generation.mask_trajectory_logits); train the same distribution.
    traj = torch.zeros(logits.shape[-1], dtype=torch.bool, device=device)
    traj[cfg.tokens.traj_token_start_idx : cfg.tokens.traj_token_end_idx] = True
    return TeacherForced(
        logits=logits.masked_fill(traj, float("-inf")),
        labels=cont.masked_fill(cont == model.special.pad, IGNORE_INDEX),
        sequences=torch.cat([input_ids, cont], dim=1),
        rope_deltas=rope_deltas,
        cache=cache,
    )


def training_loss(
    model: AlpamayoR1,
    batch: TrainingBatch,
    generator: torch.Generator,
    *,
    flow_samples: int = 1,
    coc_weight: float = 1.0,
    flow_weight: float = 1.0,
    x_data: Tensor | None = None,
    vision: BatchedVisionEncoder | None = None,
) -> LossOutput:
    """Teacher-forced CoC cross-entropy + flow-matching loss of one batch (model in train mode).

    Args:
        model: the network; float32 weights (no autocast here).
        batch: the examples.
        generator: source of the flow noise and times (on the model device).
        flow_samples: K noise/time draws per example, all over the same VLM cache (the cache is repeated,
            as `plan` repeats it per sample).
        coc_weight: weight of the CoC loss.
        flow_weight: weight of the flow loss.
        x_data: [B, T, 2] precomputed `action_targets(model, batch)`; computed when None.
        vision: batched frame encoder for `teacher_force` (None: the tower's per-image forward).

    Returns:
        LossOutput.
    """
    device, num_tokens = model.device, model.config.n_waypoints
    forced = teacher_force(model, batch.images, batch.hist_xyz, batch.coc_text, vision)
    logits, labels, cache = forced.logits, forced.labels, forced.cache
    coc = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
    valid = labels != IGNORE_INDEX
    accuracy = float((logits.argmax(-1) == labels)[valid].float().mean())

    # The expert over the teacher-forced cache, K draws per example (row b·K + k), through the same velocity
    # field `sample_actions` integrates at inference.
    sequences = forced.sequences.repeat_interleave(flow_samples, 0)  # [B·K, L+N]
    for layer in cache.layers:
        layer.keys = layer.keys.repeat_interleave(flow_samples, dim=0)
        layer.values = layer.values.repeat_interleave(flow_samples, dim=0)
    velocity_fn = model._velocity(cache, sequences, forced.rope_deltas.repeat_interleave(flow_samples, 0))
    if x_data is None:
        x_data = action_targets(model, batch)
    x_data = x_data.to(device).repeat_interleave(flow_samples, 0)  # [B·K, T, 2]
    rows = batch.images.shape[0] * flow_samples
    noise = torch.randn(rows, num_tokens, 2, generator=generator, device=device)  # [B·K, T, 2]
    t = sample_training_time(rows, generator, device)[:, None, None]  # [B·K, 1, 1]
    velocity = velocity_fn(interpolate(x_data, noise, t), t)  # [B·K, T, 2]
    flow = F.mse_loss(velocity.float(), target_velocity(x_data, noise))
    return LossOutput(total=coc_weight * coc + flow_weight * flow, coc=coc, flow=flow,
                      coc_token_accuracy=accuracy)
