"""CoC decoding mechanics (MODEL.md §5, §11.2 item 13) against transformers' warpers and upstream's rules."""

from __future__ import annotations

import pytest
import torch
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from alpamayo_ros.model.generation import (
    StopAfterEOS,
    choose_tokens,
    extract_span,
    generate_tokens,
    replace_after_eos,
    top_p_filter,
)

VOCAB, TRAJ = 50, (20, 40)  # ids 20…39 play the <iN> tokens
EOS, IM_END, PAD = 45, 46, 47
RULES = {"traj_range": TRAJ, "eos_id": EOS, "im_end_id": IM_END, "pad_id": PAD,
         "temperature": 0.6, "top_p": 0.98}


def _scores(rows: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


def test_top_p_matches_transformers():
    scores = _scores(64, 0)
    scores[0, :10] = 5.0  # ties
    expected = TopPLogitsWarper(0.98)(None, scores.clone())
    assert torch.equal(top_p_filter(scores, 0.98), expected)
    assert torch.isfinite(top_p_filter(scores, 0.98)).sum(dim=1).min() >= 1


def test_sampling_matches_transformers_warpers_with_the_same_generator():
    scores = _scores(8, 1)
    processed = TopPLogitsWarper(0.98)(None, TemperatureLogitsWarper(0.6)(None, scores.clone()))
    expected = torch.multinomial(processed.softmax(-1), 1, generator=torch.Generator().manual_seed(5))
    ours = choose_tokens(scores, temperature=0.6, top_p=0.98, greedy=False,
                         generator=torch.Generator().manual_seed(5))
    assert torch.equal(ours, expected.squeeze(1))


def _constant_step(logits: torch.Tensor, calls: list[torch.Tensor]):
    def step(tokens: torch.Tensor) -> torch.Tensor:
        calls.append(tokens)
        return logits.clone()

    return step


@pytest.mark.parametrize("greedy", [True, False])
def test_trajectory_tokens_are_never_emitted_even_when_most_likely(greedy: bool):
    logits = _scores(4, 2)
    logits[:, TRAJ[0] : TRAJ[1]] = 100.0  # the <iN> logits dominate
    calls: list[torch.Tensor] = []
    tokens = generate_tokens(logits, _constant_step(logits, calls), max_new_tokens=30, greedy=greedy,
                             generator=torch.Generator().manual_seed(0), **RULES)
    assert tokens.shape[0] == 4 and tokens.numel() > 0
    assert not ((tokens >= TRAJ[0]) & (tokens < TRAJ[1])).any()
    assert not ((logits[:, TRAJ[0] : TRAJ[1]]) < 100).any()  # the caller's logits are not modified


def test_stop_after_eos_runs_one_token_past_the_last_eos():
    forced = torch.tensor([[1, 2, EOS, 3, 4, 5, 6], [1, EOS, 2, 3, 4, 5, 6]])
    calls: list[torch.Tensor] = []
    step = _constant_step(_scores(2, 3), calls)
    tokens = generate_tokens(_scores(2, 3), step, max_new_tokens=50, forced=forced, **RULES)
    assert tokens.tolist() == [[1, 2, EOS, 3], [1, EOS, 2, 3]]  # row 0's EOS at step 2 -> stop after step 3
    assert len(calls) == 3  # the last EOS went through the model; the final token did not


def test_stop_after_eos_criterion_alone():
    stop = StopAfterEOS(EOS, 2, torch.device("cpu"))
    # Row 1 emits EOS at call 2, so call 3 (the token after it) is the first to say stop.
    newest = ([EOS, 1], [2, 3], [4, EOS], [5, 6], [7, 8])
    assert [stop(torch.tensor(t)) for t in newest] == [False] * 3 + [True] * 2


def test_rows_ending_on_im_end_are_padded_and_all_finished_stops():
    forced = torch.tensor([[1, IM_END, 9, 9, 9], [1, 2, 3, IM_END, 9]])
    step = _constant_step(_scores(2, 4), [])
    tokens = generate_tokens(_scores(2, 4), step, max_new_tokens=50, forced=forced, **RULES)
    assert tokens.tolist() == [[1, IM_END, PAD, PAD], [1, 2, 3, IM_END]]


def test_max_new_tokens_caps_generation():
    calls: list[torch.Tensor] = []
    step = _constant_step(_scores(3, 5), calls)
    tokens = generate_tokens(_scores(3, 5), step, max_new_tokens=6, greedy=True, **RULES)
    assert tokens.shape == (3, 6) and len(calls) == 5


def test_sampling_is_reproducible_with_a_generator():
    def run(seed: int) -> torch.Tensor:
        return generate_tokens(_scores(3, 6), _constant_step(_scores(3, 7), []), max_new_tokens=12,
                               generator=torch.Generator().manual_seed(seed), **RULES)

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_replace_after_eos():
    tokens = torch.tensor([[1, 2, 3, EOS, 5, 6], [7, 8, EOS, 9, EOS, 10], [1, 2, 3, 4, 5, 6]])
    assert replace_after_eos(tokens, EOS, PAD).tolist() == [
        [1, 2, 3, EOS, PAD, PAD], [7, 8, EOS, PAD, PAD, PAD], [1, 2, 3, 4, 5, 6]]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<|cot_start|> Stop at the red light. <|cot_end|><|traj_future_start|>", "Stop at the red light."),
        ("<|cot_start|>a<|cot_start|>b<|cot_end|>c<|cot_end|>", "b"),  # last start before the first end
        ("<|cot_start|>never closed", ""),
        ("no start tag<|cot_end|>", "no start tag"),
    ],
)
def test_extract_span(text: str, expected: str):
    assert extract_span(text, "cot") == expected
