"""Chain-of-causation (CoC) decoding: logits masking, temperature/top-p sampling, stop rule, text extraction.

Mirrors transformers 4.57.1 `generate` as upstream configures it (MODEL.md §5): the float32 copy of the last
logits goes through the trajectory-token mask (all `<iN>` -> −inf), then temperature, then top-p (no top-k);
the token is drawn with `torch.multinomial` from the caller's generator. Rows that emitted `<|im_end|>` are
padded. Generation stops one token after every row has emitted `<|traj_future_start|>` (StopAfterEOS), when
all rows hit `<|im_end|>`, or at `max_new_tokens`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from alpamayo_ros.model.tokens import special_token

StepFn = Callable[[Tensor], Tensor]
"""Feed the newest tokens [b*] through the VLM (appending them to its cache) -> next logits [b*, vocab]."""


def mask_trajectory_logits(scores: Tensor, start: int, end: int) -> Tensor:
    """scores[:, start:end] (all `<iN>`) := −inf in place; returns scores (upstream ExpertLogitsProcessor)."""
    scores[:, start:end] = float("-inf")
    return scores


def top_p_filter(scores: Tensor, top_p: float) -> Tensor:
    """transformers' TopPLogitsWarper: sort ascending, drop tokens whose cumulative probability is
    <= 1 − top_p, always keep the highest-scoring token; dropped scores become −inf.

    Args:
        scores: [b*, vocab] float32 (already temperature-scaled).
        top_p: in (0, 1]; 1 keeps everything (transformers adds no warper then).

    Returns:
        [b*, vocab] filtered scores (new tensor).
    """
    if top_p >= 1.0:
        return scores
    sorted_scores, sorted_idx = torch.sort(scores, descending=False)  # [b*, vocab]
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[..., -1:] = False  # min_tokens_to_keep = 1
    remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)
    return scores.masked_fill(remove, float("-inf"))


def choose_tokens(
    scores: Tensor, *, temperature: float, top_p: float, greedy: bool, generator: torch.Generator | None
) -> Tensor:
    """Next tokens from masked scores [b*, vocab] float32 -> [b*] int64 (argmax if greedy, else sampled)."""
    if greedy:
        return scores.argmax(dim=-1)
    probs = top_p_filter(scores / temperature, top_p).softmax(dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)


class StopAfterEOS:
    """Upstream's stopping criterion: "stop" once every row emitted EOS at an *earlier* step.

    So generation ends one token after the last row's EOS, and that EOS has passed through the VLM (it is in
    the KV cache the expert reads).
    """

    def __init__(self, eos_id: int, batch: int, device: torch.device) -> None:
        self.eos_id = eos_id
        self.found = torch.zeros(batch, dtype=torch.bool, device=device)  # [b*]

    def __call__(self, newest: Tensor) -> bool:
        """Record the newest tokens [b*]; True if every row had already emitted EOS before them."""
        if bool(self.found.all()):
            return True
        self.found |= newest == self.eos_id
        return False


def generate_tokens(
    first_logits: Tensor,
    step_fn: StepFn,
    *,
    traj_range: tuple[int, int],
    eos_id: int,
    im_end_id: int,
    pad_id: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    generator: torch.Generator | None = None,
    greedy: bool = False,
    forced: Tensor | None = None,
) -> Tensor:
    """Decode CoC tokens for b* rows.

    Args:
        first_logits: [b*, vocab] logits after the prompt (any float dtype; copied to float32).
        step_fn: appends the newest tokens to the VLM cache and returns the next logits; called once per
            generated token except the last.
        traj_range: [start, end) ids masked to −inf (all `<iN>`).
        eos_id: `<|traj_future_start|>` for the stop rule.
        im_end_id: `<|im_end|>`, the VLM's own eos: such rows are padded afterwards.
        pad_id: `<|endoftext|>`.
        temperature, top_p: sampling settings.
        max_new_tokens: cap on generated tokens.
        generator: random source for sampling (on the logits' device); None = torch's global RNG.
        greedy: take the argmax instead of sampling.
        forced: [b*, N] teacher-forced tokens used instead of choosing (padding and stop rules still apply);
            generation is capped at N.

    Returns:
        [b*, n] int64 generated tokens, n <= max_new_tokens (not yet padded after EOS).
    """
    batch = first_logits.shape[0]
    if forced is not None:
        if forced.dim() != 2 or forced.shape[0] != batch:
            raise ValueError(f"forced tokens must be [{batch}, N], got {tuple(forced.shape)}")
        max_new_tokens = min(max_new_tokens, forced.shape[1])
    stop = StopAfterEOS(eos_id, batch, first_logits.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=first_logits.device)  # [b*] rows past <|im_end|>
    logits, tokens = first_logits, []
    for step in range(max_new_tokens):
        scores = mask_trajectory_logits(logits.float().clone(), *traj_range)  # [b*, vocab]
        if forced is not None:
            token = forced[:, step].to(first_logits.device)
        else:
            token = choose_tokens(
                scores, temperature=temperature, top_p=top_p, greedy=greedy, generator=generator
            )
        token = torch.where(finished, torch.full_like(token, pad_id), token)  # [b*]
        tokens.append(token)
        finished |= token == im_end_id
        if stop(token) or bool(finished.all()) or step + 1 == max_new_tokens:
            break
        logits = step_fn(token)
    return torch.stack(tokens, dim=1)


def replace_after_eos(tokens: Tensor, eos_id: int, pad_id: int) -> Tensor:
    """Tokens after a row's first EOS become pad (upstream `replace_padding_after_eos`) -> new [b*, L]."""
    positions = torch.arange(tokens.shape[1], device=tokens.device)  # [L]
    eos_positions = torch.where(tokens == eos_id, positions, tokens.shape[1])  # [b*, L], L where not EOS
    first = eos_positions.min(dim=1, keepdim=True).values  # [b*, 1]
    return tokens.masked_fill(positions > first, pad_id)


def extract_span(text: str, key: str) -> str:
    """Text between the last `<|key_start|>` before the first `<|key_end|>` and that end tag, stripped.

    No end tag -> ""; no start tag before it -> everything before the end tag (upstream
    `extract_between_special_tokens`).
    """
    before_end, sep, _ = text.partition(special_token(f"{key}_end"))
    if not sep:
        return ""
    start_tag = special_token(f"{key}_start")
    cut = before_end.rfind(start_tag)
    return (before_end[cut + len(start_tag) :] if cut != -1 else before_end).strip()
