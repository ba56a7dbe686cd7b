"""Qwen3-VL text decoder layers run over a `StaticKVCache`, reusing the transformers modules' weights.

The same functions serve the VLM's CoC decode step (1 query per row, written at the current position) and the
action expert (T queries per row, written into the cache's expert slots). They call the modules of
`Qwen3VLTextModel` (norms, projections, MLP, rotary embedding) exactly as transformers 4.57.1's forward does
(MODEL.md §5.1, §6.2), and replace only the cache handling: k/v are written in place at `write_index`, and
attention runs over the whole fixed-size buffer with a boolean mask. No host syncs, fixed shapes.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor
from transformers.models.qwen3_vl.modeling_qwen3_vl import (
    Qwen3VLTextAttention,
    Qwen3VLTextDecoderLayer,
    Qwen3VLTextModel,
    apply_rotary_pos_emb,
)

from alpamayo_ros.model.engine.static_cache import StaticKVCache


def attend(
    attn: Qwen3VLTextAttention,
    x: Tensor,
    cos: Tensor,
    sin: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    write_index: Tensor,
    mask: Tensor,
) -> Tensor:
    """Self-attention of n new tokens per row: write their k/v into the cache, attend over the whole cache.

    Grouped-query heads are folded into the query axis ([b, Hq, n, hd] -> [b, Hkv, g·n, hd]) so SDPA reads
    each cached KV head once, with no `repeat_kv` copy and with any attention backend that takes a mask.

    Args:
        attn: the layer's attention module (its q/k/v/o projections and q/k norms).
        x: [b, n, D] normed hidden states.
        cos, sin: [b, n, hd] rotary tables of the new tokens.
        k_cache, v_cache: [b, Hkv, C, hd] this layer's cache views (written in place).
        write_index: [n] int64 cache slots of the new tokens.
        mask: bool, True = attend, broadcastable to [b, 1, g·n, C] (rows tiled g times, see
            `StaticKVCache.expert_mask`).

    Returns:
        [b, n, D] attention output after o_proj.
    """
    batch, length, _ = x.shape
    head_dim = attn.head_dim
    q = attn.q_norm(attn.q_proj(x).view(batch, length, -1, head_dim)).transpose(1, 2)  # [b, Hq, n, hd]
    k = attn.k_norm(attn.k_proj(x).view(batch, length, -1, head_dim)).transpose(1, 2)  # [b, Hkv, n, hd]
    v = attn.v_proj(x).view(batch, length, -1, head_dim).transpose(1, 2)  # [b, Hkv, n, hd]
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    # Cast as upstream's SDPA under autocast would: the expert's float32 keys are rounded to the cache dtype.
    k_cache.index_copy_(2, write_index, k.to(k_cache.dtype))
    v_cache.index_copy_(2, write_index, v.to(v_cache.dtype))
    kv_heads = k.shape[1]
    groups = q.shape[1] // kv_heads
    q = q.reshape(batch, kv_heads, groups * length, head_dim)  # query head h = kv·g + j -> row j·n + t
    out = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask, scale=attn.scaling)
    out = out.view(batch, kv_heads * groups, length, head_dim).transpose(1, 2)  # [b, n, Hq, hd]
    return attn.o_proj(out.reshape(batch, length, -1))


def decoder_layer(
    layer: Qwen3VLTextDecoderLayer,
    hidden: Tensor,
    cos: Tensor,
    sin: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    write_index: Tensor,
    mask: Tensor,
) -> Tensor:
    """Pre-norm attention and SwiGLU MLP with residuals, as `Qwen3VLTextDecoderLayer.forward` -> [b, n, D]."""
    hidden = hidden + attend(layer.self_attn, layer.input_layernorm(hidden), cos, sin, k_cache, v_cache,
                             write_index, mask)
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


def run_layers(
    model: Qwen3VLTextModel,
    hidden: Tensor,
    position_ids: Tensor,
    cache: StaticKVCache,
    write_index: Tensor,
    mask: Tensor,
) -> Tensor:
    """All decoder layers of a text model over the static cache, then its final norm.

    Args:
        model: the VLM's language model or the expert (embeddings are the caller's).
        hidden: [b, n, D] input embeddings.
        position_ids: [3, b, n] M-RoPE positions.
        cache: holds layer ℓ's k/v for this model's layer ℓ.
        write_index: [n] cache slots of the new tokens.
        mask: see `attend`.

    Returns:
        [b, n, D] final-norm hidden states.
    """
    cos, sin = model.rotary_emb(hidden, position_ids)  # [b, n, hd] each, in hidden's dtype
    for index, layer in enumerate(model.layers):
        hidden = decoder_layer(layer, hidden, cos, sin, *cache.layer(index), write_index, mask)
    return model.norm(hidden)
