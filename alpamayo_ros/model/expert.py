"""The action expert: a Qwen3-VL text decoder without embeddings, appending its tokens to the VLM's KV cache.

Per flow step (MODEL.md §6.2, upstream `sample_trajectories_from_data_with_vlm_rollout`): the T action tokens
of row i sit right after that row's first `<|traj_future_start|>` (position rope_deltas_i + offset_i + j on
all three M-RoPE axes), see every cached prompt/CoC token before offset_i, none of the row's post-EOS tokens,
and each other (non-causal). Layer ℓ appends its own k/v to VLM layer ℓ's cache; afterwards every layer is
cropped back to the prefill length, so each step sees the identical prefix.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import Qwen3VLTextConfig, Qwen3VLTextModel
from transformers.cache_utils import Cache


def build_expert(config: Qwen3VLTextConfig) -> Qwen3VLTextModel:
    """A `Qwen3VLTextModel` for `config` with `embed_tokens` deleted (no `expert.embed_tokens` key, §1.4)."""
    expert = Qwen3VLTextModel(config)
    del expert.embed_tokens
    return expert


def expert_offsets(sequences: Tensor, eos_id: int) -> tuple[Tensor, Tensor]:
    """Per-row offset = index of the first EOS (`<|traj_future_start|>`) + 1.

    A row without EOS gets offset = sequence length (upstream falls back to the last index, with a warning);
    `found` reports which rows had one so callers can flag the others.

    Args:
        sequences: [b*, L] prompt + generated ids.
        eos_id: id of `<|traj_future_start|>`.

    Returns:
        offsets [b*] int64 and found [b*] bool.
    """
    is_eos = sequences == eos_id  # [b*, L]
    found = is_eos.any(dim=1)
    first = is_eos.int().argmax(dim=1)
    last = torch.full_like(first, sequences.shape[1] - 1)
    return torch.where(found, first, last).to(torch.int64) + 1, found


def expert_position_ids(rope_deltas: Tensor, offsets: Tensor, num_tokens: int) -> Tensor:
    """M-RoPE positions of the expert tokens: rope_deltas_i + offset_i + j on all three axes.

    Args:
        rope_deltas: [b*, 1] from the prompt's 3-D positions.
        offsets: [b*] from `expert_offsets`.
        num_tokens: T.

    Returns:
        [3, b*, T] int64.
    """
    start = rope_deltas.reshape(-1, 1) + offsets.reshape(-1, 1)  # [b*, 1]
    positions = start + torch.arange(num_tokens, device=offsets.device)  # [b*, T]
    return positions.unsqueeze(0).expand(3, -1, -1)


def expert_attention_mask(
    offsets: Tensor,
    prefill_len: int,
    num_tokens: int,
    dtype: torch.dtype,
    non_causal: bool = True,
    prompt_mask: Tensor | None = None,
) -> Tensor:
    """Additive attention mask of the expert tokens over [cache ‖ expert tokens].

    Columns [offset_i, prefill_len) of row i are finfo(dtype).min (post-EOS tokens in the cache), and so are
    the prompt's padding columns when `prompt_mask` is given (MODEL-1.5.md §6); every other column is 0.
    With `non_causal=False` expert token j also cannot see expert tokens after j.
    (Upstream's flag is a no-op under SDPA because a mask is always given; the checkpoint sets it true.)

    Args:
        offsets: [b*] int64.
        prefill_len: cache length P.
        num_tokens: T.
        dtype: mask dtype (float32 under autocast as upstream; else the expert's activation dtype).
        non_causal: expert tokens see each other both ways.
        prompt_mask: [b*, L_p] bool, False at the prompt's padding (L_p <= P); None = no padding.

    Returns:
        [b*, 1, T, P + T].
    """
    columns = torch.arange(prefill_len + num_tokens, device=offsets.device)  # [P+T]
    hidden = (columns >= offsets[:, None]) & (columns < prefill_len)  # [b*, P+T]
    if prompt_mask is not None:
        hidden[:, : prompt_mask.shape[1]] |= ~prompt_mask.to(offsets.device)
    shape = (offsets.shape[0], 1, num_tokens, prefill_len + num_tokens)
    mask = torch.zeros(shape, dtype=dtype, device=offsets.device)
    mask = mask.masked_fill(hidden[:, None, None, :], torch.finfo(dtype).min)
    if not non_causal:
        rows = prefill_len + torch.arange(num_tokens, device=offsets.device)  # [T] absolute query index
        mask = mask.masked_fill(columns[None, :] > rows[:, None], torch.finfo(dtype).min)  # [T, P+T]
    return mask


def crop_cache(cache: Cache, length: int) -> None:
    """Cut every layer of a dynamic cache back to `length` tokens (an absolute length; portable to 5.x)."""
    for layer in cache.layers:
        layer.keys = layer.keys[..., :length, :]
        layer.values = layer.values[..., :length, :]


def repeat_cache_rows(cache: Cache, repeats: int) -> None:
    """Repeat every cache row `repeats` times in place, interleaved (row b·S + s = copy s of row b), as
    transformers' generate expands the prompt for `num_return_sequences`."""
    for layer in cache.layers:
        layer.keys = layer.keys.repeat_interleave(repeats, dim=0)
        layer.values = layer.values.repeat_interleave(repeats, dim=0)


def run_expert(
    expert: Qwen3VLTextModel, embeds: Tensor, cache: Cache, position_ids: Tensor, attention_mask: Tensor
) -> Tensor:
    """One expert pass over the VLM cache; the cache is cropped back to its prior length even on error.

    Args:
        expert: from `build_expert` (SDPA attention).
        embeds: [b*, T, D_expert] action-token embeddings.
        cache: the VLM's dynamic cache, b* rows, P tokens per layer.
        position_ids: [3, b*, T] from `expert_position_ids`.
        attention_mask: [b*, 1, T, P + T] from `expert_attention_mask`.

    Returns:
        [b*, T, D_expert] final-norm hidden states of the expert tokens.
    """
    prefill_len = cache.get_seq_length()
    try:
        out = expert(
            inputs_embeds=embeds,
            position_ids=position_ids,
            attention_mask=attention_mask,
            past_key_values=cache,
            use_cache=True,
            is_causal=False,  # causality, if any, is in the mask
        )
    finally:
        crop_cache(cache, prefill_len)
    return out.last_hidden_state[:, -embeds.shape[1] :]
