"""Vocabulary layout of the extended Qwen3-VL tokenizer: trajectory tokens, Alpamayo specials, their ids.

Rule (MODEL.md §3.2-§3.3, upstream `models/base_model.py`): after the base tokenizer's `base_vocab_size` ids
come `traj_vocab_size` plain added tokens `<i0>` … `<i{N-1}>` (future bins first, then history bins), then the
29 `<|KEY|>` specials in `SPECIAL_TOKEN_KEYS` order, of which `<|image_pad|>` already exists in the base
vocabulary, so 28 get new ids. Real checkpoint: `<i0>` = 151669, `<i3999>` = 155668, `<|prompt_start|>` =
155669, len 155697.

Alpamayo 1.5 (MODEL-1.5.md §3) keeps every id but renames nine unused slots to `<|_padding_k|>`
(`A15_RENAMED_KEYS`); `SpecialTokens` keeps the R1 slot names as field names for both families.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Protocol

logger = logging.getLogger(__name__)

# Order matters: it fixes the ids of the new specials (upstream `SPECIAL_TOKENS_KEYS`).
SPECIAL_TOKEN_KEYS: tuple[str, ...] = (
    "prompt_start",
    "prompt_end",
    "image_start",
    "image_pre_tkn",
    "image_end",
    "traj_history_start",
    "traj_history_pre_tkn",
    "traj_history_end",
    "cot_start",
    "cot_end",
    "meta_action_start",
    "meta_action_end",
    "traj_future_start",
    "traj_future_pre_tkn",
    "traj_future_end",
    "traj_history",
    "traj_future",
    "image_pad",
    "vectorized_wm",
    "vectorized_wm_start",
    "vectorized_wm_end",
    "vectorized_wm_pre_tkn",
    "route_start",
    "route_pad",
    "route_end",
    "question_start",
    "question_end",
    "answer_start",
    "answer_end",
)
# Model families: Alpamayo-R1 and Alpamayo 1.5 (MODEL-1.5.md §1).
FAMILIES: tuple[str, ...] = ("r1", "a15")
# R1 key -> 1.5 key of the nine renamed slots, same ids (MODEL-1.5.md §3; upstream 1.5 `SPECIAL_TOKENS_KEYS`).
A15_RENAMED_KEYS: dict[str, str] = {
    "image_pre_tkn": "_padding_0",
    "traj_history_pre_tkn": "_padding_1",
    "meta_action_start": "_padding_2",
    "meta_action_end": "_padding_3",
    "traj_future_pre_tkn": "_padding_4",
    "vectorized_wm": "_padding_5",
    "vectorized_wm_start": "_padding_6",
    "vectorized_wm_end": "_padding_7",
    "vectorized_wm_pre_tkn": "_padding_8",
}
# Qwen base tokens the prompt and generation use (MODEL.md §3.1), by field name of `SpecialTokens`.
BASE_TOKEN_STRINGS: dict[str, str] = {
    "pad": "<|endoftext|>",
    "im_start": "<|im_start|>",
    "im_end": "<|im_end|>",
    "vision_start": "<|vision_start|>",
    "vision_end": "<|vision_end|>",
    "video_pad": "<|video_pad|>",
}
_PRE_EXISTING_KEYS = frozenset({"image_pad"})  # specials already in the base vocabulary
NUM_NEW_SPECIAL_TOKENS = len(SPECIAL_TOKEN_KEYS) - len(_PRE_EXISTING_KEYS)  # 28


class TokenizerError(RuntimeError):
    """A tokenizer is missing, unreadable, or its ids disagree with the expected vocabulary layout."""


class _TokenizerLike(Protocol):
    def __len__(self) -> int: ...

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]: ...


def check_family(family: str) -> str:
    """Return `family` if it is one of `FAMILIES`, else raise ValueError naming it."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return family


def special_token_keys(family: str = "r1") -> tuple[str, ...]:
    """The 29 special keys of `family` in id order (1.5: nine slots renamed, same positions)."""
    if check_family(family) == "r1":
        return SPECIAL_TOKEN_KEYS
    return tuple(A15_RENAMED_KEYS.get(key, key) for key in SPECIAL_TOKEN_KEYS)


def special_token(key: str) -> str:
    """`"cot_start"` -> `"<|cot_start|>"`."""
    return f"<|{key}|>"


def traj_token(index: int) -> str:
    """Trajectory bin token string `<i{index}>`."""
    return f"<i{index}>"


@dataclass(frozen=True)
class SpecialTokens:
    """Ids of every special token used by the model: the Qwen base ones and the 29 Alpamayo keys."""

    pad: int  # <|endoftext|>, also the generation pad (MODEL.md §5)
    im_start: int
    im_end: int  # generation eos of the VLM's own generation config (MODEL.md §5)
    vision_start: int
    vision_end: int
    video_pad: int
    prompt_start: int
    prompt_end: int
    image_start: int
    image_pre_tkn: int
    image_end: int
    traj_history_start: int
    traj_history_pre_tkn: int
    traj_history_end: int
    cot_start: int
    cot_end: int
    meta_action_start: int
    meta_action_end: int
    traj_future_start: int  # the "EOS" of CoC generation (MODEL.md §5)
    traj_future_pre_tkn: int
    traj_future_end: int
    traj_history: int  # history placeholder, overwritten by history bin ids (MODEL.md §4.5)
    traj_future: int
    image_pad: int
    vectorized_wm: int
    vectorized_wm_start: int
    vectorized_wm_end: int
    vectorized_wm_pre_tkn: int
    route_start: int
    route_pad: int
    route_end: int
    question_start: int
    question_end: int
    answer_start: int
    answer_end: int

    def strings(self, family: str = "r1") -> dict[str, str]:
        """Field name -> token string of `family`, for every field."""
        names = dict(zip(SPECIAL_TOKEN_KEYS, special_token_keys(family)))
        return {**BASE_TOKEN_STRINGS, **{key: special_token(names[key]) for key in SPECIAL_TOKEN_KEYS}}


@dataclass(frozen=True)
class TokenLayout:
    """Where every token id lives in the extended vocabulary; defaults are the checkpoint's (MODEL.md §3)."""

    base_vocab_size: int = 151669  # len(Qwen3-VL tokenizer) before extension; MODEL.md §3.1
    traj_vocab_size: int = 4000  # `<iN>` tokens; config.json `traj_vocab_size` (4000 unverified, §12.1)
    future_bins: int = 3000  # future (discrete action) bins, first in `<iN>`; `traj_tokenizer_cfg.num_bins`
    pad_id: int = 151643  # <|endoftext|>; Qwen base vocabulary
    im_start_id: int = 151644  # <|im_start|>
    im_end_id: int = 151645  # <|im_end|>
    vision_start_id: int = 151652  # <|vision_start|>
    vision_end_id: int = 151653  # <|vision_end|>
    image_pad_id: int = 151655  # <|image_pad|>, pre-existing, so not re-added (§3.2)
    video_pad_id: int = 151656  # <|video_pad|>

    def __post_init__(self) -> None:
        for name in ("base_vocab_size", "traj_vocab_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TokenLayout.{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.future_bins <= self.traj_vocab_size:
            raise ValueError(
                f"TokenLayout.future_bins must be in [0, traj_vocab_size={self.traj_vocab_size}], "
                f"got {self.future_bins!r}"
            )
        base_ids = {f.name: getattr(self, f.name) for f in fields(self) if f.name.endswith("_id")}
        for name, value in base_ids.items():
            if not 0 <= value < self.base_vocab_size:
                raise ValueError(
                    f"TokenLayout.{name} must be in [0, base_vocab_size={self.base_vocab_size}), "
                    f"got {value!r}"
                )
        if len(set(base_ids.values())) != len(base_ids):
            raise ValueError(f"TokenLayout base token ids must be distinct, got {base_ids!r}")

    @property
    def traj_token_start_idx(self) -> int:
        """Id of `<i0>` (first future bin)."""
        return self.base_vocab_size

    @property
    def hist_token_start_idx(self) -> int:
        """Id of history bin 0 = traj_token_start_idx + future_bins."""
        return self.base_vocab_size + self.future_bins

    @property
    def traj_token_end_idx(self) -> int:
        """One past the last `<iN>` id: [traj_token_start_idx, traj_token_end_idx) holds every `<iN>`."""
        return self.base_vocab_size + self.traj_vocab_size

    @property
    def vocab_size(self) -> int:
        """len(extended tokenizer) = embedding rows."""
        return self.traj_token_end_idx + NUM_NEW_SPECIAL_TOKENS

    def special_token_ids(self) -> SpecialTokens:
        """Ids of all special tokens under this layout."""
        ids: dict[str, int] = {
            "pad": self.pad_id,
            "im_start": self.im_start_id,
            "im_end": self.im_end_id,
            "vision_start": self.vision_start_id,
            "vision_end": self.vision_end_id,
            "video_pad": self.video_pad_id,
            "image_pad": self.image_pad_id,
        }
        next_id = self.traj_token_end_idx
        for key in SPECIAL_TOKEN_KEYS:
            if key not in _PRE_EXISTING_KEYS:
                ids[key] = next_id
                next_id += 1
        return SpecialTokens(**ids)

    def expected_ids(self, family: str = "r1") -> dict[str, int]:
        """`family`'s token string -> expected id, for every special, base and trajectory token."""
        specials = self.special_token_ids()
        expected = {text: getattr(specials, name) for name, text in specials.strings(family).items()}
        expected.update({traj_token(i): self.traj_token_start_idx + i for i in range(self.traj_vocab_size)})
        return expected


def _mismatches(tokenizer: _TokenizerLike, layout: TokenLayout, family: str) -> list[str]:
    """Every way `tokenizer` departs from `layout` with `family`'s token names (length first)."""
    expected = layout.expected_ids(family)
    tokens = list(expected)
    actual = tokenizer.convert_tokens_to_ids(tokens)
    problems = [
        f"{tok}: expected id {expected[tok]}, got {got}"
        for tok, got in zip(tokens, actual)
        if got != expected[tok]
    ]
    if len(tokenizer) != layout.vocab_size:
        problems.insert(0, f"len(tokenizer): expected {layout.vocab_size}, got {len(tokenizer)}")
    return problems


def verify_tokenizer(
    tokenizer: _TokenizerLike, layout: TokenLayout, source: str, family: str | None = None
) -> str:
    """Check that a tokenizer's ids follow `layout` for every special and trajectory token.

    Args:
        tokenizer: an extended tokenizer (anything with `__len__` and `convert_tokens_to_ids`).
        layout: the expected layout.
        source: where the tokenizer came from (a path), named in the error.
        family: whose names the nine renamed slots must carry; None accepts either family's names (the ids
            are the same, and no inference path uses those slots).

    Returns:
        The family whose names the tokenizer carries.

    Raises:
        TokenizerError: listing the length mismatch and up to 20 token-id mismatches (of the closest family).
    """
    reports: list[list[str]] = []
    for name in FAMILIES if family is None else (check_family(family),):
        reports.append(_mismatches(tokenizer, layout, name))
        if not reports[-1]:
            logger.debug("tokenizer from %s matches the %s layout (%d tokens)", source, name,
                         layout.vocab_size)
            return name
    problems = min(reports, key=len)
    shown = "\n  ".join(problems[:20])
    more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
    raise TokenizerError(
        f"tokenizer from {source} does not match the expected vocabulary layout:\n  {shown}{more}"
    )
