"""Vocabulary layout (MODEL.md §3, §11.2 item 1) and the real/tiny tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest

from alpamayo_ros.model.tokenizer import (
    build_extended_tokenizer,
    build_tiny_base_tokenizer,
    build_tiny_tokenizer,
    load_tokenizer,
    tiny_token_layout,
)
from alpamayo_ros.model.tokens import (
    NUM_NEW_SPECIAL_TOKENS,
    SPECIAL_TOKEN_KEYS,
    TokenizerError,
    TokenLayout,
    verify_tokenizer,
)

# The §3.2 table.
REAL_SPECIAL_IDS = {
    "prompt_start": 155669, "prompt_end": 155670, "image_start": 155671, "image_pre_tkn": 155672,
    "image_end": 155673, "traj_history_start": 155674, "traj_history_pre_tkn": 155675,
    "traj_history_end": 155676, "cot_start": 155677, "cot_end": 155678, "meta_action_start": 155679,
    "meta_action_end": 155680, "traj_future_start": 155681, "traj_future_pre_tkn": 155682,
    "traj_future_end": 155683, "traj_history": 155684, "traj_future": 155685, "image_pad": 151655,
    "vectorized_wm": 155686, "vectorized_wm_start": 155687, "vectorized_wm_end": 155688,
    "vectorized_wm_pre_tkn": 155689, "route_start": 155690, "route_pad": 155691,
    "route_end": 155692, "question_start": 155693, "question_end": 155694, "answer_start": 155695,
    "answer_end": 155696,
}
SENTENCES = (
    "Stop at the red light ahead.",
    "Slow down for the braking lead vehicle",
    "Keep lane and follow the road",
    "Yield to the pedestrian crossing, 12 m ahead!",
    "Nudge left because of the parked truck; then continue straight at 8.5 m/s.",
)


def test_real_layout_matches_the_spec_table():
    layout = TokenLayout()
    ids = layout.special_token_ids()
    assert {key: getattr(ids, key) for key in SPECIAL_TOKEN_KEYS} == REAL_SPECIAL_IDS
    assert (layout.traj_token_start_idx, layout.traj_token_end_idx) == (151669, 155669)
    assert layout.vocab_size == 155697
    assert layout.hist_token_start_idx == 154669
    assert (ids.pad, ids.im_start, ids.im_end, ids.vision_start, ids.vision_end, ids.video_pad) == (
        151643, 151644, 151645, 151652, 151653, 151656)
    assert NUM_NEW_SPECIAL_TOKENS == 28


def test_extended_real_tokenizer_has_the_checkpoint_ids(real_layout_tokenizer):
    tok = real_layout_tokenizer
    assert len(tok) == 155697
    assert tok.convert_tokens_to_ids(["<i0>", "<i3999>", "<|prompt_start|>", "<|traj_future_start|>"]) == [
        151669, 155668, 155669, 155681]
    # Trajectory tokens are plain added tokens, the 29 keys special ones (upstream add_tokens calls).
    decoder = tok.added_tokens_decoder
    assert not decoder[151669].special and decoder[155681].special


def test_base_tokenizer_of_wrong_length_is_rejected(qwen_like_dir: Path):
    with pytest.raises(TokenizerError, match=str(qwen_like_dir)) as err:
        build_extended_tokenizer(qwen_like_dir, TokenLayout(base_vocab_size=151670))
    assert "151669 tokens, expected 151670" in str(err.value)


def test_missing_tokenizer_directory_is_a_clear_error(tmp_path: Path):
    missing = tmp_path / "nope"
    with pytest.raises(TokenizerError, match="nope does not exist"):
        build_extended_tokenizer(missing)


def test_verify_lists_every_mismatch(real_layout_tokenizer):
    shifted = TokenLayout(future_bins=3000, base_vocab_size=151669, traj_vocab_size=3999)
    with pytest.raises(TokenizerError) as err:
        verify_tokenizer(real_layout_tokenizer, shifted, "some/path")
    message = str(err.value)
    assert "some/path" in message
    assert "len(tokenizer): expected 155696, got 155697" in message
    assert "<|prompt_start|>: expected id 155668, got 155669" in message


def test_load_tokenizer_accepts_base_or_extended(qwen_like_dir: Path, real_layout_tokenizer, tmp_path: Path):
    assert len(load_tokenizer(qwen_like_dir, TokenLayout())) == 155697
    real_layout_tokenizer.save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path, TokenLayout()).convert_tokens_to_ids("<i3999>") == 155668
    with pytest.raises(TokenizerError, match="neither a base"):
        load_tokenizer(tmp_path, TokenLayout(traj_vocab_size=100, future_bins=0))


def test_tiny_layout_follows_the_same_rule(tiny_config):
    base = build_tiny_base_tokenizer()
    layout = tiny_token_layout(tiny_config.tokens.traj_vocab_size, tiny_config.tokens.future_bins)
    assert layout == tiny_config.tokens  # the preset's hard-coded numbers are the tokenizer's
    assert layout.traj_token_start_idx == len(base)
    assert layout.vocab_size == len(base) + 1020 + 28
    tok = build_tiny_tokenizer(layout)
    assert tok.convert_tokens_to_ids(["<i0>", "<i1019>", "<|prompt_start|>", "<|answer_end|>"]) == [
        len(base), len(base) + 1019, len(base) + 1020, layout.vocab_size - 1]
    assert tok.convert_tokens_to_ids("<|image_pad|>") == layout.image_pad_id < len(base)


def test_tiny_tokenizer_round_trips_and_is_deterministic(tiny_tokenizer, tiny_config):
    again = build_tiny_tokenizer(tiny_config.tokens)
    for sentence in SENTENCES:
        ids = tiny_tokenizer(sentence, add_special_tokens=False)["input_ids"]
        assert tiny_tokenizer.decode(ids) == sentence
        assert again(sentence)["input_ids"] == ids
    # Known words are single tokens.
    assert len(tiny_tokenizer("Stop at the red light ahead.")["input_ids"]) == 7


def test_tiny_tokenizer_save_and_load(tiny_tokenizer, tiny_config, tmp_path: Path):
    tiny_tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path, tiny_config.tokens)
    text = "<|cot_start|>Keep lane<|cot_end|><|traj_future_start|><i7>"
    assert loaded(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
    assert loaded.decode(loaded(text)["input_ids"]) == text
