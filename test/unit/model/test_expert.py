"""Expert step over the VLM cache: mask, positions, cropping, non-causality (MODEL.md §6.2, §11.2 item 12)."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicCache

from alpamayo_ros.model.alpamayo import AlpamayoR1
from alpamayo_ros.model.expert import (
    crop_cache,
    expert_attention_mask,
    expert_offsets,
    expert_position_ids,
    run_expert,
)

MIN = torch.finfo(torch.float32).min
P, T = 10, 6  # cached tokens, expert tokens


def test_offsets_are_first_eos_plus_one_or_the_length():
    sequences = torch.tensor([[1, 9, 2, 9, 3], [1, 2, 3, 4, 9], [1, 2, 3, 4, 5]])
    offsets, found = expert_offsets(sequences, eos_id=9)
    assert offsets.tolist() == [2, 5, 5] and found.tolist() == [True, True, False]


def test_position_ids_follow_the_eos_on_all_three_axes():
    positions = expert_position_ids(torch.tensor([[-32], [-8]]), torch.tensor([100, 7]), num_tokens=4)
    assert positions.shape == (3, 2, 4)
    assert positions[0].tolist() == [[68, 69, 70, 71], [-1, 0, 1, 2]]
    assert torch.equal(positions[0], positions[1]) and torch.equal(positions[0], positions[2])


def test_mask_hides_post_eos_cache_columns_only():
    mask = expert_attention_mask(torch.tensor([4, 9, 10]), P, T, torch.float32)
    assert mask.shape == (3, 1, T, P + T)
    hidden = mask[:, 0] == MIN  # [b*, T, P+T]
    assert torch.equal(hidden[0], torch.tensor([[c in range(4, 10) for c in range(P + T)]] * T))
    assert hidden[1].sum() == T and hidden[1][:, 9].all()  # only the single post-EOS column
    assert not hidden[2].any()  # EOS was the last cached token
    assert not hidden[..., P:].any()  # expert tokens see each other (non-causal)
    assert set(mask.unique().tolist()) == {0.0, MIN}


def test_causal_variant_hides_later_expert_tokens():
    hidden = expert_attention_mask(torch.tensor([10]), P, T, torch.float32, non_causal=False)[0, 0] == MIN
    assert torch.equal(hidden[:, P:], torch.ones(T, T, dtype=torch.bool).triu(1))
    assert not hidden[:, :P].any()


def _cache(config, rows: int, seed: int = 0) -> DynamicCache:
    """A filled VLM-shaped cache: every layer [rows, kv_heads, P, head_dim]."""
    generator = torch.Generator().manual_seed(seed)
    cache = DynamicCache()
    shape = (rows, config.text.num_key_value_heads, P, config.text.head_dim)
    for layer in range(config.text.num_hidden_layers):
        cache.update(torch.randn(shape, generator=generator), torch.randn(shape, generator=generator), layer)
    return cache


def _step(model, cache: DynamicCache, embeds: torch.Tensor, offsets: torch.Tensor, non_causal: bool = True):
    positions = expert_position_ids(torch.full((len(offsets), 1), -3), offsets, T)
    mask = expert_attention_mask(offsets, P, T, torch.float32, non_causal)
    with torch.inference_mode():
        return run_expert(model.expert, embeds, cache, positions, mask)


def _embeds(model, rows: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, T, model.config.expert.hidden_size, generator=generator)


def test_cache_returns_to_prefill_length_and_content(tiny_model):
    cache = _cache(tiny_model.config, 2)
    before = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
    seen: list[tuple[int, ...]] = []
    norm = tiny_model.expert.norm  # runs after every layer appended its k/v
    hook = norm.register_forward_pre_hook(lambda *_: seen.append(tuple(cache.layers[-1].keys.shape)))
    try:
        out = _step(tiny_model, cache, _embeds(tiny_model, 2), torch.tensor([P, P]))
    finally:
        hook.remove()
    assert out.shape == (2, T, tiny_model.config.expert.hidden_size)
    assert seen == [(2, 2, P + T, 16)]  # during the step: expert k/v appended with the VLM's KV geometry
    assert cache.get_seq_length() == P
    for (keys, values), layer in zip(before, cache.layers):
        assert torch.equal(keys, layer.keys) and torch.equal(values, layer.values)


def test_cache_is_cropped_even_when_the_step_fails(tiny_model):
    cache = _cache(tiny_model.config, 1)
    bad_mask = torch.zeros(1, 1, T, P)  # too few key columns
    with pytest.raises(RuntimeError):
        positions = expert_position_ids(torch.zeros(1, 1), torch.tensor([P]), T)
        run_expert(tiny_model.expert, _embeds(tiny_model, 1), cache, positions, bad_mask)
    assert cache.get_seq_length() == P


def test_masked_cache_columns_do_not_influence_the_expert(tiny_model):
    offsets, embeds = torch.tensor([6]), _embeds(tiny_model, 1)
    cache = _cache(tiny_model.config, 1)
    reference = _step(tiny_model, cache, embeds, offsets)
    for layer in cache.layers:  # scramble the hidden post-EOS columns 6…9
        layer.keys = torch.cat([layer.keys[..., :6, :], torch.randn_like(layer.keys[..., 6:, :])], dim=-2)
    torch.testing.assert_close(_step(tiny_model, cache, embeds, offsets), reference, rtol=0, atol=0)
    for layer in cache.layers:  # a visible column does matter
        layer.keys = layer.keys + (torch.arange(P) == 2).float()[:, None]
    assert not torch.allclose(_step(tiny_model, cache, embeds, offsets), reference)


def test_expert_tokens_attend_to_later_tokens_only_when_non_causal(tiny_model):
    cache, embeds, offsets = _cache(tiny_model.config, 1), _embeds(tiny_model, 1), torch.tensor([P])
    changed = embeds.clone()
    changed[:, -1] += 1.0  # perturb the last expert token
    for non_causal in (True, False):
        first = _step(tiny_model, cache, embeds, offsets, non_causal)[:, 0]
        first_changed = _step(tiny_model, cache, changed, offsets, non_causal)[:, 0]
        assert torch.equal(first, first_changed) != non_causal


def test_crop_cache_keeps_an_absolute_length(tiny_model):
    cache = _cache(tiny_model.config, 2)
    crop_cache(cache, 4)
    assert [tuple(layer.keys.shape) for layer in cache.layers] == [(2, 2, 4, 16)] * 2
    crop_cache(cache, 0)  # 0 really means empty (the 4.57.1 `crop(0)` pitfall does not apply)
    assert cache.get_seq_length() == 0


def test_expert_has_no_embedding_and_always_uses_sdpa(tiny_config, tiny_tokenizer):
    eager = AlpamayoR1(tiny_config, tiny_tokenizer, attn_implementation="eager")
    assert eager.vlm.model.language_model.config._attn_implementation == "eager"
    assert eager.expert.config._attn_implementation == "sdpa"
    assert not hasattr(eager.expert, "embed_tokens")
