"""End-to-end `AlpamayoR1.plan` on the tiny preset: shapes, determinism, stage contracts, reference parity."""

from __future__ import annotations

import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from alpamayo_ros.model.alpamayo import STAGES, AlpamayoR1
from alpamayo_ros.model.config import PRESETS
from alpamayo_ros.model.flow_matching import euler_sample
from alpamayo_ros.model.generation import StopAfterEOS, replace_after_eos


def test_plan_shapes_and_outputs(tiny_model, make_inputs):
    images, hist_xyz, hist_rot = make_inputs(2)
    out = tiny_model.plan(images, hist_xyz, hist_rot, num_samples=3, seed=0)
    n = out.num_coc_tokens
    assert out.xyz.shape == (2, 3, 64, 3) and out.rot.shape == (2, 3, 64, 3, 3)
    assert out.xyz.dtype == out.rot.dtype == torch.float32 and torch.isfinite(out.xyz).all()
    assert out.token_ids.shape == (2, 3, n) and 1 <= n <= tiny_model.config.sampling.max_new_tokens
    assert out.eos_found.shape == (2, 3)
    assert [len(row) for row in out.coc] == [3, 3] and all(isinstance(t, str) for row in out.coc for t in row)
    assert tuple(out.timings_ms) == STAGES[:-1] + ("total",) and all(v >= 0 for v in out.timings_ms.values())
    assert out.timings_ms["total"] == pytest.approx(sum(out.timings_ms[s] for s in STAGES[:-1]))
    torch.testing.assert_close(out.rot @ out.rot.mT, torch.eye(3).expand_as(out.rot), rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.linalg.det(out.rot), torch.ones(2, 3, 64), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.xyz[..., 2], torch.zeros(2, 3, 64))  # z copied from the last history pose
    assert not ((out.token_ids >= 780) & (out.token_ids < 1800)).any()  # never an <iN> token


def test_plan_is_deterministic_for_a_seed(tiny_model, make_inputs):
    images, hist_xyz, hist_rot = make_inputs(1)
    a = tiny_model.plan(images, hist_xyz, hist_rot, num_samples=2, seed=7)
    b = tiny_model.plan(images, hist_xyz, hist_rot, num_samples=2, generator=torch.Generator().manual_seed(7))
    c = tiny_model.plan(images, hist_xyz, hist_rot, num_samples=2, seed=8)
    assert torch.equal(a.token_ids, b.token_ids) and torch.equal(a.xyz, b.xyz) and a.coc == b.coc
    assert not torch.equal(a.token_ids, c.token_ids)
    assert not torch.equal(a.xyz[0, 0], a.xyz[0, 1])  # samples differ


def test_expert_runs_num_steps_times_on_the_prefill_cache(tiny_model, make_inputs):
    images, hist_xyz, hist_rot = make_inputs(1)
    calls: list[tuple[int, int]] = []

    def record(module, args, kwargs):
        calls.append((kwargs["past_key_values"].get_seq_length(), kwargs["inputs_embeds"].shape[1]))

    hook = tiny_model.expert.register_forward_pre_hook(record, with_kwargs=True)
    try:
        out = tiny_model.plan(images, hist_xyz, hist_rot, seed=1)
    finally:
        hook.remove()
    prompt_len = tiny_model.prepare_inputs(images, hist_xyz)[0].shape[1]
    assert calls == [(prompt_len + out.num_coc_tokens - 1, 64)] * tiny_model.config.flow.num_steps


class _MaskTrajectory(LogitsProcessor):
    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end

    def __call__(self, input_ids, scores):
        scores[:, self.start : self.end] = float("-inf")
        return scores


class _StopAfterEOS(StoppingCriteria):
    def __init__(self, eos_id: int) -> None:
        self.eos_id, self.inner = eos_id, None

    def __call__(self, input_ids, scores, **kwargs) -> bool:
        self.inner = self.inner or StopAfterEOS(self.eos_id, input_ids.shape[0], input_ids.device)
        return self.inner(input_ids[:, -1])


@pytest.mark.parametrize(("greedy", "samples"), [(True, 1), (False, 3)])
def test_decoding_matches_transformers_generate(tiny_model, make_inputs, greedy: bool, samples: int):
    """Same tokens as upstream's `vlm.generate` call (same processors, stop rule and RNG stream)."""
    images, hist_xyz, hist_rot = make_inputs(2)
    special, tokens = tiny_model.special, tiny_model.config.tokens
    input_ids, pixel_values, grid, _, _ = tiny_model.prepare_inputs(images, hist_xyz)
    with torch.random.fork_rng():
        torch.manual_seed(11)
        ours = tiny_model.plan(images, hist_xyz, hist_rot, num_samples=samples, greedy=greedy,
                               max_new_tokens=20)
    with torch.random.fork_rng(), torch.inference_mode():
        torch.manual_seed(11)
        reference = tiny_model.vlm.generate(
            input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixel_values,
            image_grid_thw=grid, do_sample=not greedy, temperature=0.6 if not greedy else None,
            top_p=0.98 if not greedy else None, top_k=None, num_return_sequences=samples, max_new_tokens=20,
            logits_processor=LogitsProcessorList(
                [_MaskTrajectory(tokens.traj_token_start_idx, tokens.traj_token_end_idx)]
            ),
            stopping_criteria=StoppingCriteriaList([_StopAfterEOS(special.traj_future_start)]),
            pad_token_id=special.pad, eos_token_id=special.im_end,
        )
    generated = replace_after_eos(reference[:, input_ids.shape[1] :], special.traj_future_start, special.pad)
    assert torch.equal(ours.token_ids.reshape(2 * samples, -1), generated)


def test_expert_path_matches_an_upstream_style_rollout(tiny_model, make_inputs, tiny_tokenizer):
    """Teacher-forced CoC with EOS at different steps + injected noise, against upstream's step_fn transcribed
    onto a cache that transformers' forward builds token by token as `generate` does (`crop(prefill_len)`,
    `rope_deltas + offset`). The tiny random velocity field is chaotic in x (Fourier max_freq 100), so only a
    bit-identical cache makes the comparison meaningful."""
    images, hist_xyz, hist_rot = make_inputs(2)
    special = tiny_model.special
    words = tiny_tokenizer("Keep lane", add_special_tokens=False)["input_ids"]
    forced = torch.tensor([
        [*words, special.cot_end, special.traj_future_start, 5],
        [*words, special.traj_future_start, 6, 7],  # EOS one step earlier: its last 2 tokens are masked
    ])
    noise = torch.randn(2, 1, 64, 2, generator=torch.Generator().manual_seed(3))
    out = tiny_model.plan(images, hist_xyz, hist_rot, noise=noise, forced_coc_ids=forced[:, None])
    assert out.coc == [["Keep lane"], [""]] and out.eos_found.tolist() == [[True], [True]]
    assert out.token_ids[1, 0].tolist() == [*words, special.traj_future_start, special.pad, special.pad]

    input_ids, pixel_values, grid, _, _ = tiny_model.prepare_inputs(images, hist_xyz)
    length, vlm = input_ids.shape[1], tiny_model.vlm
    with torch.inference_mode():
        prefill_out = vlm(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                          pixel_values=pixel_values, image_grid_thw=grid, use_cache=True)
        cache, rope_deltas = prefill_out.past_key_values, prefill_out.rope_deltas
        for j in range(forced.shape[1] - 1):  # the last token never enters the cache
            seen = torch.ones(2, length + j + 1, dtype=torch.long)
            vlm(input_ids=forced[:, j : j + 1], attention_mask=seen, past_key_values=cache,
                cache_position=torch.tensor([length + j]), use_cache=True)
        prefill = cache.get_seq_length()
        sequences = torch.cat([input_ids, forced], dim=1)
        sequences = replace_after_eos(sequences, special.traj_future_start, special.pad)
        offset = (sequences == special.traj_future_start).int().argmax(dim=1) + 1
        position_ids = torch.arange(64).expand(3, 2, 64) + (rope_deltas + offset[:, None])
        mask = torch.zeros(2, 1, 64, prefill + 64)
        for i in range(2):
            mask[i, :, :, offset[i] : -64] = torch.finfo(torch.float32).min

        def step_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            embeds = tiny_model.action_in_proj(x, t)
            hidden = tiny_model.expert(inputs_embeds=embeds, position_ids=position_ids, past_key_values=cache,
                                       attention_mask=mask, use_cache=True, is_causal=False)
            cache.crop(prefill)
            return tiny_model.action_out_proj(hidden.last_hidden_state[:, -64:])

        action = euler_sample(step_fn, noise[:, 0], 10)
        xyz, rot = tiny_model.action_space.action_to_traj(action, hist_xyz, hist_rot)
    torch.testing.assert_close(out.xyz[:, 0], xyz, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.rot[:, 0], rot, rtol=0, atol=1e-6)


def test_bf16_weights_run_under_autocast_with_float32_rope(tiny_config, tiny_tokenizer, make_inputs):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AlpamayoR1(tiny_config, tiny_tokenizer).eval().cast_weights(torch.bfloat16)
    assert model.dtype == torch.bfloat16 and model.expert.rotary_emb.inv_freq.dtype == torch.float32
    assert model.action_space.accel_std.dtype == torch.bfloat16  # stats stay the bf16 reference values (§8.3)
    out = model.plan(*make_inputs(1), seed=0, max_new_tokens=4)
    assert out.xyz.dtype == torch.float32 and torch.isfinite(out.xyz).all()


def test_sample_s_of_input_b_is_row_b_times_s_plus_s(tiny_model, make_inputs, tiny_tokenizer):
    images, hist_xyz, hist_rot = make_inputs(2)
    special, texts = tiny_model.special, [["Stop", "Slow down"], ["Keep lane", "Yield"]]
    end = [special.cot_end, special.traj_future_start]
    forced = torch.full((2, 2, 6), special.pad)
    for b, row in enumerate(texts):
        for s, text in enumerate(row):
            ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"] + end
            forced[b, s, : len(ids)] = torch.tensor(ids)
    out = tiny_model.plan(images, hist_xyz, hist_rot, num_samples=2, forced_coc_ids=forced, seed=0)
    assert out.coc == texts and out.eos_found.all()


def test_micro_geometry_plans(tiny_tokenizer, make_inputs):
    micro = PRESETS["micro"]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AlpamayoR1(micro, tiny_tokenizer).eval()
    images, hist_xyz, hist_rot = make_inputs(1, config=micro)
    assert images.shape == (1, 2, 2, 3, 64, 64) and hist_xyz.shape == (1, 4, 3)
    out = model.plan(images, hist_xyz, hist_rot, num_samples=2, seed=0)
    assert out.xyz.shape == (1, 2, 8, 3) and out.rot.shape == (1, 2, 8, 3, 3)
    assert model.prepare_inputs(images, hist_xyz)[4].tolist() == [[-8]]  # MODEL.md §11.1 rope_deltas


def test_invalid_inputs_are_rejected(tiny_model, make_inputs):
    images, hist_xyz, hist_rot = make_inputs(1)
    with pytest.raises(ValueError, match=r"images must be uint8 \[B, 4, 4, 3, H, W\]"):
        tiny_model.plan(images[:, :3], hist_xyz, hist_rot)
    with pytest.raises(ValueError, match="images must be uint8"):
        tiny_model.plan(images.float(), hist_xyz, hist_rot)
    with pytest.raises(ValueError, match="hist_xyz/hist_rot must be"):
        tiny_model.plan(images, hist_xyz[:, 1:], hist_rot)
    with pytest.raises(ValueError, match=r"noise must be \[1, 2, 64, 2\]"):
        tiny_model.plan(images, hist_xyz, hist_rot, num_samples=2, noise=torch.zeros(1, 1, 64, 2))
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, got 1 and 0"):
        tiny_model.plan(images, hist_xyz, hist_rot, max_new_tokens=0)
    with pytest.raises(ValueError, match=r"forced_coc_ids must be \[1, 1, N >= 1\]"):
        tiny_model.plan(images, hist_xyz, hist_rot, forced_coc_ids=torch.zeros(1, 1, 0, dtype=torch.long))
