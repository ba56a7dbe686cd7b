"""Batched Qwen3-VL vision encoding of same-size frames, and a per-frame feature cache across planning cycles.

transformers' `Qwen3VLVisionModel.forward` loops over images on the host (`tolist`/`item` in the position
tables, one SDPA call per image). Every image attends only to itself (MODEL.md §5.1) and all frames of a plan
share one size, so `BatchedVisionEncoder` runs the same modules on [N, patches, C] with one SDPA call per
block and computes the position tables once per grid. For the same reason a frame's features (merger output
and deepstack features) do not depend on the other frames: `FrameCache` keeps them by a caller-supplied
frame identity, so the 3 older frames of each camera are not re-encoded in the next cycle.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers.models.qwen3_vl.modeling_qwen3_vl import (
    Qwen3VLVisionAttention,
    Qwen3VLVisionModel,
    apply_rotary_pos_emb_vision,
)

GridHW = tuple[int, int]  # (grid_h, grid_w) patches of one frame


class BatchedVisionEncoder:
    """Runs `visual`'s modules on N frames of one patch grid at once (no weight copies)."""

    def __init__(self, visual: Qwen3VLVisionModel) -> None:
        self.visual = visual
        self._tables: dict[GridHW, tuple[Tensor, Tensor, Tensor]] = {}

    def _grid_tables(self, grid: GridHW) -> tuple[Tensor, Tensor, Tensor]:
        """(position embedding [P, C], rotary cos [P, hd], sin [P, hd]) of one frame, with the tower's own
        functions (so identical to its per-image values). Computed once per grid at inference; recomputed on
        every call while gradients are on, since the position embedding is a trained weight."""
        if grid in self._tables:
            return self._tables[grid]
        visual = self.visual
        grid_thw = torch.tensor([[1, *grid]], device=visual.pos_embed.weight.device)
        rotary = visual.rot_pos_emb(grid_thw)  # [P, hd/2]
        emb = torch.cat((rotary, rotary), dim=-1)  # [P, hd]
        tables = (visual.fast_pos_embed_interpolate(grid_thw), emb.cos(), emb.sin())
        if not torch.is_grad_enabled():
            self._tables[grid] = tables
        return tables

    def _attention(self, attn: Qwen3VLVisionAttention, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Full attention within each frame: x [N, P, C] -> [N, P, C] (one SDPA call for all frames)."""
        frames, patches, width = x.shape
        qkv = attn.qkv(x).reshape(frames, patches, 3, attn.num_heads, -1).permute(2, 0, 1, 3, 4)
        q, k, v = qkv.unbind(0)  # [N, P, H, hd] each
        q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [N, H, P, hd]
        out = F.scaled_dot_product_attention(q, k, v, scale=attn.scaling)  # non-causal
        return attn.proj(out.transpose(1, 2).reshape(frames, patches, width))

    def encode(self, pixel_values: Tensor, grid: GridHW) -> Tensor:
        """Encode N frames of one grid.

        Args:
            pixel_values: [N·P, patch_dim] patches as `preprocess_images` returns them, P = grid_h·grid_w.
            grid: (grid_h, grid_w).

        Returns:
            [N, 1 + n_deepstack, P / merge², D]: per frame the merger output, then the deepstack features
            in `deepstack_visual_indexes` order.
        """
        visual = self.visual
        pos_embeds, cos, sin = self._grid_tables(grid)
        patches = grid[0] * grid[1]
        frames = pixel_values.shape[0] // patches
        hidden = visual.patch_embed(pixel_values.to(visual.dtype))  # [N·P, C]
        hidden = hidden.view(frames, patches, -1) + pos_embeds  # [N, P, C]
        width = hidden.shape[-1]
        deepstack: list[Tensor] = []
        for index, block in enumerate(visual.blocks):
            hidden = hidden + self._attention(block.attn, block.norm1(hidden), cos, sin)
            hidden = hidden + block.mlp(block.norm2(hidden))
            if index in visual.deepstack_visual_indexes:
                merger = visual.deepstack_merger_list[visual.deepstack_visual_indexes.index(index)]
                deepstack.append(merger(hidden.reshape(-1, width)))  # [N·P/m², D]
        merged = visual.merger(hidden.reshape(-1, width))  # [N·P/m², D]
        features = torch.stack([merged, *deepstack], dim=1)  # [N·P/m², 1 + n_ds, D]
        features = features.unflatten(0, (frames, -1))  # [N, P/m², 1 + n_ds, D]
        return features.transpose(1, 2).contiguous()


def tower_outputs(features: Tensor) -> tuple[Tensor, list[Tensor]]:
    """Per-frame features [N, 1 + n_deepstack, tokens, D] -> what the tower's forward returns for those
    frames: image embeds [N·tokens, D] and the deepstack features, one [N·tokens, D] per merger."""
    width = features.shape[-1]
    deepstack = [features[:, i].reshape(-1, width) for i in range(1, features.shape[1])]
    return features[:, 0].reshape(-1, width), deepstack


class FrameCache:
    """LRU map frame identity -> features [1 + n_deepstack, tokens, D] of one grid, on the model device.

    The identity is the caller's promise that the pixels are the same (e.g. (camera, stamp_ns)); an entry is
    also ignored when the grid differs.
    """

    def __init__(self, capacity: int) -> None:
        """Args: capacity: frames kept (0 disables caching)."""
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, tuple[GridHW, Tensor]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, grid: GridHW) -> Tensor | None:
        """The cached features of `key` at `grid`, or None."""
        entry = self._entries.get(key)
        if entry is None or entry[0] != grid:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, key: Hashable, grid: GridHW, features: Tensor) -> None:
        """Store (or replace) a frame's features, evicting the least recently used beyond capacity."""
        if self.capacity <= 0:
            return
        self._entries[key] = (grid, features)
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()
