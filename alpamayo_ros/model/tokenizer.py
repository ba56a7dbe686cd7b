"""Build the extended text tokenizer: the real Qwen3-VL one from a local directory, or a tiny one in code.

Both get the same extension (MODEL.md §3.2): `<i0>` … `<i{N-1}>` as plain added tokens, then the 29 Alpamayo
specials as special added tokens (named as the model family names them: 1.5 renames nine unused slots,
MODEL-1.5.md §3), and are checked id by id against a `TokenLayout`. Nothing is downloaded and
no remote code runs.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from alpamayo_ros.model.tokens import (
    BASE_TOKEN_STRINGS,
    TokenizerError,
    TokenLayout,
    special_token,
    special_token_keys,
    traj_token,
    verify_tokenizer,
)

# Qwen base specials the tiny tokenizer reserves, in the real tokenizer's relative order (MODEL.md §3.1).
TINY_BASE_SPECIALS: tuple[str, ...] = (
    BASE_TOKEN_STRINGS["pad"],
    BASE_TOKEN_STRINGS["im_start"],
    BASE_TOKEN_STRINGS["im_end"],
    BASE_TOKEN_STRINGS["vision_start"],
    BASE_TOKEN_STRINGS["vision_end"],
    special_token("image_pad"),
    BASE_TOKEN_STRINGS["video_pad"],
)
# Words the tiny BPE spells as single tokens: the prompt text plus short driving explanations. Any other text
# still round-trips (byte-level BPE falls back to single bytes), it just takes more tokens. Words are merged
# after a space ("Ġword"); `_TINY_CAPITALIZED` also at a sentence start ("Word") and `_TINY_BARE` right after
# a special token.
_TINY_WORDS: tuple[str, ...] = tuple(
    (
        "a an and are assistant accurate actions ahead at accelerate because behind brake braking bus car "
        "chain change clear cone cones construction continue crossing crosswalk curve cyclist decelerate "
        "distance down driving ego exit follow for from front future gap generates gently go green highway "
        "in intersection into is it keep lane lanes lead left light lights limit maintain merge no nudge of "
        "on oncoming output parked pedestrian pedestrians proceed process ramp reasoning red right road safe "
        "school sharp should sign signal slow speed stop stopped straight that the then there thought to "
        "traffic trajectory truck turn until vehicle vehicles wait when will with yellow yield"
    ).split()
)
_TINY_CAPITALIZED: tuple[str, ...] = tuple(
    "you stop slow keep yield turn change continue wait go proceed maintain follow accelerate decelerate "
    "nudge merge the there a".split()
)
_TINY_BARE: tuple[str, ...] = ("thought", "system", "user", "assistant", "output", "of")


def extend_tokenizer(tokenizer: PreTrainedTokenizerBase, traj_vocab_size: int, family: str = "r1") -> None:
    """Add `<i0>` … `<i{traj_vocab_size-1}>` (plain) then the 29 Alpamayo specials (special), in place.

    Mirrors upstream `ReasoningVLA._build_tokenizer` with `add_special_tokens=True`; `<|image_pad|>` already
    exists in a Qwen vocabulary and keeps its id. `family` "a15" uses the 1.5 names (same ids).
    """
    tokenizer.add_tokens([traj_token(i) for i in range(traj_vocab_size)])
    tokenizer.add_tokens([special_token(key) for key in special_token_keys(family)], special_tokens=True)


def _load_local(path: Path) -> PreTrainedTokenizerBase:
    """Load a tokenizer directory with AutoTokenizer, local files only, no remote code."""
    if not path.is_dir():
        raise TokenizerError(f"tokenizer directory {path} does not exist")
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"cannot load a tokenizer from {path}: {exc}") from exc


def build_extended_tokenizer(
    qwen_dir: str | Path, layout: TokenLayout | None = None, family: str = "r1"
) -> PreTrainedTokenizerBase:
    """Load a local base Qwen3-VL tokenizer directory and extend it (MODEL.md §3).

    Args:
        qwen_dir: directory with the Qwen3-VL tokenizer files (tokenizer.json, tokenizer_config.json, …).
        layout: expected layout; default the real checkpoint's (`<i0>` = 151669, len 155697).
        family: "r1" or "a15", whose special-token names to add.

    Returns:
        The extended tokenizer.

    Raises:
        TokenizerError: the directory is missing/unreadable, the base length is wrong, or an id mismatches.
    """
    layout = layout or TokenLayout()
    path = Path(qwen_dir)
    tokenizer = _load_local(path)
    if len(tokenizer) != layout.base_vocab_size:
        raise TokenizerError(
            f"base tokenizer at {path} has {len(tokenizer)} tokens, "
            f"expected {layout.base_vocab_size} before extension"
        )
    extend_tokenizer(tokenizer, layout.traj_vocab_size, family)
    verify_tokenizer(tokenizer, layout, str(path), family)
    return tokenizer


def load_tokenizer(path: str | Path, layout: TokenLayout, family: str = "r1") -> PreTrainedTokenizerBase:
    """Load a tokenizer directory that is either a base Qwen tokenizer or an already extended one.

    A base tokenizer (len == `layout.base_vocab_size`) is extended with `family`'s names; an extended one is
    only verified, and may carry either family's names for the nine renamed slots (same ids).

    Raises:
        TokenizerError: as in `build_extended_tokenizer`, or the length fits neither form.
    """
    path = Path(path)
    tokenizer = _load_local(path)
    if len(tokenizer) == layout.base_vocab_size:
        extend_tokenizer(tokenizer, layout.traj_vocab_size, family)
        verify_tokenizer(tokenizer, layout, str(path), family)
        return tokenizer
    if len(tokenizer) != layout.vocab_size:
        raise TokenizerError(
            f"tokenizer at {path} has {len(tokenizer)} tokens: neither a base ({layout.base_vocab_size}) "
            f"nor an extended ({layout.vocab_size}) tokenizer for this model"
        )
    verify_tokenizer(tokenizer, layout, str(path))
    return tokenizer


def _tiny_bpe() -> Tokenizer:
    """Byte-level BPE over the 256 byte symbols plus left-to-right merges spelling each `_TINY_WORDS` word."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    vocab = {symbol: i for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges: list[tuple[str, str]] = []
    # Chains are ranked space-prefixed first, then capitalized, then bare, so a lower-ranked chain's first
    # pair never splits a space-prefixed word; every merge extends a word prefix, so chains never conflict
    # otherwise.
    variants = [" " + w for w in _TINY_WORDS] + [w.capitalize() for w in _TINY_CAPITALIZED] + list(_TINY_BARE)
    for variant in variants:
        ((piece, _),) = byte_level.pre_tokenize_str(variant)
        current = piece[0]
        for symbol in piece[1:]:
            if current + symbol not in vocab:
                vocab[current + symbol] = len(vocab)
                merges.append((current, symbol))
            current += symbol
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    specials = [AddedToken(text, special=True, normalized=False) for text in TINY_BASE_SPECIALS]
    tokenizer.add_special_tokens(specials)
    return tokenizer


def build_tiny_base_tokenizer() -> PreTrainedTokenizerFast:
    """The tiny base tokenizer (before extension): byte-level BPE + the 7 reserved Qwen specials at its end.

    Deterministic (no data, no download); encode/decode round-trips any text.
    """
    return PreTrainedTokenizerFast(
        tokenizer_object=_tiny_bpe(),
        pad_token=BASE_TOKEN_STRINGS["pad"],
        eos_token=BASE_TOKEN_STRINGS["im_end"],
        clean_up_tokenization_spaces=False,
    )


def tiny_token_layout(traj_vocab_size: int, future_bins: int) -> TokenLayout:
    """The `TokenLayout` of `build_tiny_tokenizer` for a given trajectory vocabulary."""
    base = build_tiny_base_tokenizer()
    ids = dict(zip(TINY_BASE_SPECIALS, base.convert_tokens_to_ids(list(TINY_BASE_SPECIALS))))
    return TokenLayout(
        base_vocab_size=len(base),
        traj_vocab_size=traj_vocab_size,
        future_bins=future_bins,
        pad_id=ids[BASE_TOKEN_STRINGS["pad"]],
        im_start_id=ids[BASE_TOKEN_STRINGS["im_start"]],
        im_end_id=ids[BASE_TOKEN_STRINGS["im_end"]],
        vision_start_id=ids[BASE_TOKEN_STRINGS["vision_start"]],
        vision_end_id=ids[BASE_TOKEN_STRINGS["vision_end"]],
        image_pad_id=ids[special_token("image_pad")],
        video_pad_id=ids[BASE_TOKEN_STRINGS["video_pad"]],
    )


def build_tiny_tokenizer(layout: TokenLayout, family: str = "r1") -> PreTrainedTokenizerFast:
    """The tiny base tokenizer extended like the real one, verified against `layout`.

    Args:
        layout: expected layout (e.g. the "tiny" preset's `config.tokens`), base ids those of the tiny base.
        family: "r1" or "a15", whose special-token names to add (e.g. the preset's `config.family`).

    Raises:
        TokenizerError: the layout does not describe the tiny tokenizer.
    """
    tokenizer = build_tiny_base_tokenizer()
    extend_tokenizer(tokenizer, layout.traj_vocab_size, family)
    verify_tokenizer(tokenizer, layout, "build_tiny_tokenizer()", family)
    return tokenizer
