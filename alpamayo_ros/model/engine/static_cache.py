"""Preallocated K/V cache of every language-model layer, shared by CoC decoding and the action expert.

One buffer `kv` [layers, 2, b*, kv_heads, capacity + T, head_dim] (gpt-fast's `KVCache`, all layers in one
tensor). Slots [0, capacity) hold the prompt and the CoC tokens, written at explicit positions; the T slots
[capacity, capacity + T) hold the expert's action tokens of the current Euler step. Attention always runs
over the whole buffer with a mask, so every shape is fixed and CUDA graphs can be captured, and the expert
attends over [prefix ‖ expert] without copying or cropping the prefix (upstream concatenates the expert's
k/v to the VLM cache and crops it back each step, MODEL.md §6.2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers.cache_utils import DynamicCache


class StaticKVCache(nn.Module):
    """K/V buffers for b* rows: `capacity` slots for prompt + CoC, then `tail` expert slots, per layer."""

    def __init__(
        self,
        num_layers: int,
        rows: int,
        kv_heads: int,
        capacity: int,
        tail: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        """Args:
        num_layers: decoder layers (the expert has as many as the VLM, MODEL.md §2.3).
        rows: b* = B·S rows (row b·S + s is sample s of input b).
        kv_heads, head_dim: KV geometry (the expert's equals the VLM's).
        capacity: prefix slots, at least prompt length + CoC tokens.
        tail: T, the expert's tokens per step.
        dtype: dtype of the cached keys/values (the model's activation dtype).
        device: where the buffers live.
        """
        super().__init__()
        self.capacity, self.tail = capacity, tail
        shape = (num_layers, 2, rows, kv_heads, capacity + tail, head_dim)
        # Zeros, not empty: masked slots are still multiplied by 0 in attention, and NaN·0 = NaN.
        self.register_buffer("kv", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("columns", torch.arange(capacity + tail, device=device), persistent=False)
        self.register_buffer("tail_index", self.columns[capacity:].clone(), persistent=False)  # expert slots

    @property
    def rows(self) -> int:
        """b*, rows of the cache."""
        return self.kv.shape[2]

    def layer(self, index: int) -> tuple[Tensor, Tensor]:
        """Views (keys, values) of one layer, each [b*, kv_heads, capacity + T, head_dim]."""
        return self.kv[index, 0], self.kv[index, 1]

    def load_prefix(self, cache: DynamicCache, samples: int) -> int:
        """Copy a prefill cache of B rows into slots [0, L) of all B·S rows (row b·S + s gets row b).

        Args:
            cache: the prompt's dynamic cache, every layer [B, kv_heads, L, head_dim].
            samples: S.

        Returns:
            L, the prompt length.

        Raises:
            ValueError: the cache does not fit (rows, layers or length).
        """
        length = cache.get_seq_length()
        batch = cache.layers[0].keys.shape[0]
        layers = self.kv.shape[0]
        if batch * samples != self.rows or len(cache.layers) != layers or length > self.capacity:
            raise ValueError(
                f"a prefill cache of {len(cache.layers)} layers x {batch} rows x {length} tokens does not "
                f"fit a static cache of {layers} layers x {self.rows} rows x {self.capacity} slots "
                f"({samples} samples)"
            )
        for index, layer in enumerate(cache.layers):
            for slot, source in ((0, layer.keys), (1, layer.values)):
                target = self.kv[index, slot, :, :, :length].unflatten(0, (batch, samples))
                target.copy_(source[:, None])  # [B, S, kv, L, hd] <- [B, 1, kv, L, hd]
        return length

    def decode_mask(self, position: Tensor) -> Tensor:
        """Slots a CoC token written at `position` [1] sees, [0, position] -> [1, 1, 1, capacity + T] bool."""
        return (self.columns <= position).view(1, 1, 1, -1)

    def expert_mask(self, offsets: Tensor, fed_len: int, groups: int, non_causal: bool = True) -> Tensor:
        """Mask of the expert's T queries over the buffer (MODEL.md §6.2), query heads folded per KV head.

        Row i sees prefix slots [0, min(offset_i, fed_len)) (upstream hides [offset_i, prefill_len); slots
        from fed_len on were never fed or are stale) and the expert slots; with `non_causal=False` expert
        token j sees only expert tokens <= j.

        Args:
            offsets: [b*] int64, index of the row's first `<|traj_future_start|>` + 1 (in the full sequence).
            fed_len: tokens fed through the VLM, prompt + CoC (upstream's prefill_len).
            groups: query heads per KV head of the expert (the mask rows are tiled `groups` times to match
                `layers.attend`'s folding of query heads into the query axis).
            non_causal: expert tokens see each other both ways (the checkpoint's setting).

        Returns:
            [b*, 1, groups·T, capacity + T] bool, True = attend.
        """
        tail, cols = self.tail, self.columns
        is_expert = cols >= self.capacity  # [C+T]
        visible_prefix = cols < offsets.clamp(max=fed_len)[:, None]  # [b*, C+T]
        mask = (visible_prefix | is_expert)[:, None, None, :].expand(-1, 1, tail, -1)  # [b*, 1, T, C+T]
        if not non_causal:
            queries = torch.arange(tail, device=cols.device)[:, None]  # [T, 1]
            mask = mask & ~(is_expert & (cols - self.capacity > queries))  # [T, C+T]: hide expert tokens > j
        return mask.repeat(1, 1, groups, 1)
