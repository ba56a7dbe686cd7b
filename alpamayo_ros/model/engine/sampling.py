"""CoC token choice on the device without host syncs, and RNG bookkeeping keeping it equal to the reference.

`torch.multinomial(probs, 1)` draws q ~ Exp(1) with `exponential_` on a tensor shaped like probs and returns
argmax(probs / q) (ATen's single-sample path), after two `.item()` validity checks that sync with the host.
`sample_tokens` does the same draw and argmax without the checks, so for the same generator state it returns
the same tokens and leaves the generator in the same state as the reference (gpt-fast's
`multinomial_sample_one_no_sync` uses the same trick).

The fast decode loop may run a few steps past the stop point (it reads the stop flag late, see `FastEngine`),
so it draws from a private generator seeded from the caller's, and `advance_generator` then advances the
caller's generator by exactly the N draws the reference made, before the flow noise is drawn from it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from alpamayo_ros.model.generation import top_p_filter


def sample_tokens(
    scores: Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> Tensor:
    """Temperature + top-p sampling as `generation.choose_tokens`, without host syncs.

    Args:
        scores: [b*, vocab] float32 masked logits.
        temperature, top_p: sampling settings.
        generator: random source on the scores' device.

    Returns:
        [b*] int64 tokens, equal to `choose_tokens(..., greedy=False)` for the same generator state.
    """
    probs = top_p_filter(scores / temperature, top_p).softmax(dim=-1)  # [b*, vocab]
    exponential = torch.empty_like(probs).exponential_(1.0, generator=generator)
    return (probs / exponential).argmax(dim=-1)


def device_generator(device: torch.device) -> torch.Generator:
    """The default generator of `device` (what sampling with `generator=None` draws from)."""
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else
                                             torch.cuda.current_device()]
    return torch.default_generator


def advance_generator(
    generator: torch.Generator, draws: int, rows: int, vocab: int, device: torch.device
) -> None:
    """Consume what `draws` sampling steps of [rows, vocab] consume (one float32 `exponential_` each)."""
    scratch = torch.empty(rows, vocab, dtype=torch.float32, device=device)
    for _ in range(draws):
        scratch.exponential_(1.0, generator=generator)
