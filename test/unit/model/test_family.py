"""Model families (MODEL-1.5.md): R1 vs 1.5 detection and override, renamed tokens, tiny 1.5 checkpoints,
route conditioning with classifier-free guidance, question answering, and the engine API."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from alpamayo_ros.model.alpamayo import AlpamayoR1
from alpamayo_ros.model.config import PRESETS
from alpamayo_ros.model.config_json import (
    AmbiguousFamilyError,
    ConfigError,
    config_from_dict,
    config_to_dict,
    detect_family,
)
from alpamayo_ros.model.expert import expert_attention_mask
from alpamayo_ros.model.flow_matching import euler_sample
from alpamayo_ros.model.generation import replace_after_eos
from alpamayo_ros.model.guidance import guided_velocity
from alpamayo_ros.model.loading import SINGLE_NAME, from_pretrained, save_pretrained
from alpamayo_ros.model.tokenizer import load_tokenizer
from alpamayo_ros.model.tokens import A15_RENAMED_KEYS, TokenizerError, TokenLayout, verify_tokenizer
from alpamayo_ros.planner.engine import ModelEngine
from alpamayo_ros.planner.types import Observation

LEFT, RIGHT = "Turn left in 11m", "Turn right in 300m at the intersection"
# The nine renamed slots of the real layout (MODEL-1.5.md §3).
RENAMED_IDS = {
    "<|_padding_0|>": 155672, "<|_padding_1|>": 155675, "<|_padding_2|>": 155679, "<|_padding_3|>": 155680,
    "<|_padding_4|>": 155682, "<|_padding_5|>": 155686, "<|_padding_6|>": 155687, "<|_padding_7|>": 155688,
    "<|_padding_8|>": 155689,
}


# --- detection ---------------------------------------------------------------------------------------------

def _without(raw: dict, *keys: str) -> dict:
    return {k: v for k, v in raw.items() if k not in keys}


def test_family_is_detected_from_model_type_then_architectures_then_targets():
    r1, a15 = config_to_dict(PRESETS["alpamayo-r1-10b"]), config_to_dict(PRESETS["alpamayo-1.5-10b"])
    assert (detect_family(r1), detect_family(a15)) == ("r1", "a15")
    assert detect_family({**a15, "architectures": ["AlpamayoR1"]}) == "a15"  # model_type decides
    assert detect_family(_without(a15, "model_type")) == "a15"  # then architectures[0]
    assert detect_family(_without(a15, "model_type", "architectures")) == "a15"  # then the _target_ prefixes
    assert detect_family(_without(r1, "model_type", "architectures")) == "r1"
    bare = json.loads(json.dumps(_without(a15, "model_type", "architectures")).replace('"_target_"', '"_t"'))
    assert detect_family(bare) is None and config_from_dict(bare).family == "r1"  # says nothing: R1


def test_family_override_and_unsupported_metadata():
    r1 = config_to_dict(PRESETS["alpamayo-r1-10b"])
    assert config_from_dict(r1).family == "r1" and config_from_dict(r1, family="a15").family == "a15"
    a15 = config_from_dict(config_to_dict(PRESETS["tiny-a15"]), family="r1")
    assert a15 == PRESETS["tiny"]  # the override selects behaviour; everything else is the same model
    rl = {**r1, "model_type": "alpamayo_reasoning_vla", "architectures": ["ReasoningVLA"]}
    with pytest.raises(AmbiguousFamilyError, match="my/config.json: model_type 'alpamayo_reasoning_vla'"):
        config_from_dict(rl, "my/config.json")
    assert config_from_dict(rl, family="a15").family == "a15"
    with pytest.raises(ConfigError, match="model_type must be one of \\['alpamayo1_5', 'alpamayo_r1'\\]"):
        config_from_dict({**r1, "model_type": "qwen3_vl"})
    with pytest.raises(ConfigError, match="family must be one of"):
        config_from_dict(r1, family="a2")


def test_a15_config_json_is_the_converters_rewrite_of_r1():
    r1, a15 = (json.loads(json.dumps(config_to_dict(PRESETS[name]))) for name in ("tiny", "tiny-a15"))
    assert (a15["model_type"], a15["architectures"]) == ("alpamayo1_5", ["Alpamayo1_5"])
    targets = [v["_target_"] for v in a15.values() if isinstance(v, dict) and "_target_" in v]
    assert len(targets) == 6 and all(t.startswith("alpamayo1_5.") or t == "torch.nn.Linear" for t in targets)
    swapped = json.loads(json.dumps(a15).replace('"alpamayo1_5.', '"alpamayo_r1.'))
    assert {**swapped, "model_type": "alpamayo_r1", "architectures": ["AlpamayoR1"]} == r1


# --- tokens ------------------------------------------------------------------------------------------------

def test_a15_layout_renames_nine_slots_at_the_same_ids(real_layout_tokenizer):
    layout = TokenLayout()
    r1, a15 = layout.expected_ids("r1"), layout.expected_ids("a15")
    assert {t: a15[t] for t in RENAMED_IDS} == RENAMED_IDS and len(A15_RENAMED_KEYS) == 9
    assert set(r1) - set(a15) == {f"<|{key}|>" for key in A15_RENAMED_KEYS}
    assert {t: i for t, i in a15.items() if t not in RENAMED_IDS} == {
        t: i for t, i in r1.items() if t[2:-2] not in A15_RENAMED_KEYS}
    assert [a15[f"<|{k}|>"] for k in ("route_start", "route_end", "question_start", "answer_end")] == [
        155690, 155692, 155693, 155696]
    assert verify_tokenizer(real_layout_tokenizer, layout, "r1") == "r1"
    with pytest.raises(TokenizerError, match=r"<\|_padding_0\|>: expected id 155672"):
        verify_tokenizer(real_layout_tokenizer, layout, "r1 as a15", family="a15")


def test_tiny_a15_tokenizer_follows_the_same_rule(tiny_a15_tokenizer, tiny_tokenizer, tiny_a15_config,
                                                  tmp_path: Path):
    special = tiny_a15_config.tokens.special_token_ids()
    assert len(tiny_a15_tokenizer) == len(tiny_tokenizer) == tiny_a15_config.tokens.vocab_size
    assert tiny_a15_tokenizer.convert_tokens_to_ids("<|_padding_0|>") == special.image_pre_tkn
    assert tiny_a15_tokenizer.convert_tokens_to_ids("<|_padding_8|>") == special.vectorized_wm_pre_tkn
    assert tiny_a15_tokenizer.convert_tokens_to_ids("<|meta_action_start|>") is None  # not a token in 1.5
    assert verify_tokenizer(tiny_a15_tokenizer, tiny_a15_config.tokens, "tiny") == "a15"
    text = "<|cot_start|>Keep lane<|cot_end|><|traj_future_start|>"
    assert tiny_a15_tokenizer(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
    tiny_tokenizer.save_pretrained(tmp_path)  # an extended R1 tokenizer serves a 1.5 model too (same ids)
    loaded = load_tokenizer(tmp_path, tiny_a15_config.tokens, "a15")
    assert loaded.convert_tokens_to_ids("<|image_pre_tkn|>") == special.image_pre_tkn


# --- checkpoints -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def a15_checkpoint(tiny_a15_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny_a15")
    save_pretrained(tiny_a15_model, path)
    return path


def test_tiny_a15_checkpoint_round_trip_gives_identical_outputs(a15_checkpoint: Path, tiny_a15_model,
                                                                make_inputs):
    raw = json.loads((a15_checkpoint / "config.json").read_text())
    assert raw["model_type"] == "alpamayo1_5"
    stored = set(load_file(a15_checkpoint / SINGLE_NAME))
    assert not any(k.startswith("action_space.") or k.endswith(".freqs") for k in stored)  # non-persistent
    loaded = from_pretrained(a15_checkpoint, progress=False)
    assert loaded.family == "a15" and loaded.config == tiny_a15_model.config
    assert verify_tokenizer(loaded.tokenizer, loaded.config.tokens, "saved") == "a15"
    for name, ours in [*tiny_a15_model.named_parameters(), *tiny_a15_model.named_buffers()]:
        theirs = loaded.get_parameter(name) if "." in name and name in dict(loaded.named_parameters()) else (
            loaded.get_buffer(name))
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs), name
    images, hist_xyz, hist_rot = make_inputs(1)
    kwargs = {"num_samples": 2, "seed": 3, "route": [LEFT], "guidance_weight": 1.5, "max_new_tokens": 6}
    ours, theirs = (m.plan(images, hist_xyz, hist_rot, **kwargs) for m in (tiny_a15_model, loaded))
    assert torch.equal(ours.token_ids, theirs.token_ids) and torch.equal(ours.xyz, theirs.xyz)
    answers = [m.ask(images, "What is ahead?", seed=4, max_new_tokens=6) for m in (tiny_a15_model, loaded)]
    assert answers[0] == answers[1]


def test_family_override_on_load(a15_checkpoint: Path, tiny_model, make_inputs):
    as_r1 = from_pretrained(a15_checkpoint, family="r1", progress=False)  # its tokenizer has 1.5 names
    assert as_r1.family == "r1" and as_r1.config == tiny_model.config
    images, hist_xyz, hist_rot = make_inputs(1)
    r1_prompt = tiny_model.prepare_inputs(images, hist_xyz)[0]
    assert torch.equal(as_r1.prepare_inputs(images, hist_xyz)[0], r1_prompt)
    with pytest.raises(ValueError, match="route conditioning needs an Alpamayo 1.5 model"):
        as_r1.plan(images, hist_xyz, hist_rot, route=[LEFT])


def test_a15_ignores_checkpoint_copies_of_the_non_learned_buffers(tiny_a15_model, tmp_path: Path):
    save_pretrained(tiny_a15_model, tmp_path, include_buffers=True)
    tensors = load_file(tmp_path / SINGLE_NAME)
    tensors["action_space.accel_std"] = torch.tensor(5.0, dtype=torch.bfloat16)
    save_file(tensors, tmp_path / SINGLE_NAME)
    assert from_pretrained(tmp_path, progress=False).action_space.accel_std.item() == 0.6796875  # from config
    assert from_pretrained(tmp_path, family="r1", progress=False).action_space.accel_std.item() == 5.0


# --- route conditioning and guidance -----------------------------------------------------------------------

def _same(a, b) -> bool:
    return (torch.equal(a.token_ids, b.token_ids) and torch.equal(a.xyz, b.xyz) and torch.equal(a.rot, b.rot)
            and a.coc == b.coc)


def test_without_route_and_weight_the_plain_path_runs_bitwise(tiny_a15_model, make_inputs):
    images, hist_xyz, hist_rot = make_inputs(2)
    plain = tiny_a15_model.plan(images, hist_xyz, hist_rot, num_samples=2, seed=6)
    off = tiny_a15_model.plan(images, hist_xyz, hist_rot, num_samples=2, seed=6, route=None,
                              guidance_weight=None)
    no_routes = tiny_a15_model.plan(images, hist_xyz, hist_rot, num_samples=2, seed=6, route=[None, None])
    assert _same(plain, off) and _same(plain, no_routes)


def test_route_text_changes_the_prompt_and_the_plan(tiny_a15_model, make_inputs, tiny_a15_tokenizer):
    images, hist_xyz, hist_rot = make_inputs(1)
    plain = tiny_a15_model.prepare_inputs(images, hist_xyz)[0][0].tolist()
    left = tiny_a15_model.prepare_inputs(images, hist_xyz, route=[LEFT])[0][0].tolist()
    right = tiny_a15_model.prepare_inputs(images, hist_xyz, route=[RIGHT])[0][0].tolist()
    special = tiny_a15_model.special
    end = plain.index(special.traj_history_end) + 1
    tail = len(plain) - end  # the instruction and the assistant prefix
    assert left[:end] == plain[:end] and left[-tail:] == plain[-tail:] and left != right
    assert tiny_a15_tokenizer.decode(left[end : left.index(special.route_end) + 1]) == (
        f"<|route_start|>{LEFT}<|route_end|>")
    outputs = [tiny_a15_model.plan(images, hist_xyz, hist_rot, seed=2, route=r, greedy=True) for r in
               (None, [LEFT], [RIGHT])]
    assert not torch.equal(outputs[0].xyz, outputs[1].xyz) and not torch.equal(outputs[1].xyz, outputs[2].xyz)


def test_guidance_weight_one_is_the_guided_path(tiny_a15_model, make_inputs):
    """Also on a padded batch (routes of different lengths) with several samples per input."""
    images, hist_xyz, hist_rot = make_inputs(2)
    kwargs = {"num_samples": 2, "seed": 9, "route": [LEFT, RIGHT], "max_new_tokens": 6}
    guided = tiny_a15_model.plan(images, hist_xyz, hist_rot, **kwargs)
    w1 = tiny_a15_model.plan(images, hist_xyz, hist_rot, guidance_weight=1.0, **kwargs)
    w15 = tiny_a15_model.plan(images, hist_xyz, hist_rot, guidance_weight=1.5, **kwargs)
    assert _same(guided, w1)
    assert torch.equal(w15.token_ids, guided.token_ids) and not torch.equal(w15.xyz, guided.xyz)


def test_guidance_under_bf16_autocast(tiny_a15_config, tiny_a15_tokenizer, make_inputs):
    """bf16 weights: the blend is formed in bf16 (as upstream), w = 1 still equals the guided path."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AlpamayoR1(tiny_a15_config, tiny_a15_tokenizer).eval().cast_weights(torch.bfloat16)
    images, hist_xyz, hist_rot = make_inputs(2)
    kwargs = {"num_samples": 2, "seed": 1, "route": [LEFT, RIGHT], "max_new_tokens": 4}
    guided = model.plan(images, hist_xyz, hist_rot, **kwargs)
    assert _same(guided, model.plan(images, hist_xyz, hist_rot, guidance_weight=1.0, **kwargs))
    w15 = model.plan(images, hist_xyz, hist_rot, guidance_weight=1.5, **kwargs)
    assert w15.xyz.dtype == torch.float32 and torch.isfinite(w15.xyz).all()
    assert isinstance(model.ask(images[:1], "What is ahead?", seed=0, max_new_tokens=3), str)


def _forced_coc(model, tokenizer) -> torch.Tensor:
    special = model.special
    words = tokenizer("Keep lane", add_special_tokens=False)["input_ids"]
    return torch.tensor([[[*words, special.cot_end, special.traj_future_start, 5]]])  # [1, 1, N]


def test_guidance_weight_zero_is_the_unguided_path(tiny_a15_model, make_inputs, tiny_a15_tokenizer):
    """w = 0 ignores the route; it equals an unguided context built as MODEL-1.5.md §7 describes, with
    transformers' own forward (prefill of the route-free prompt, then the CoC teacher-forced in one pass)."""
    images, hist_xyz, hist_rot = make_inputs(1)
    forced = _forced_coc(tiny_a15_model, tiny_a15_tokenizer)
    noise = torch.randn(1, 1, 64, 2, generator=torch.Generator().manual_seed(3))
    kwargs = {"noise": noise, "forced_coc_ids": forced, "guidance_weight": 0.0}
    left, right = (tiny_a15_model.plan(images, hist_xyz, hist_rot, route=[r], **kwargs)
                   for r in (LEFT, RIGHT))
    assert torch.equal(left.xyz, right.xyz)
    guided = tiny_a15_model.plan(images, hist_xyz, hist_rot, route=[LEFT], noise=noise, forced_coc_ids=forced)
    assert not torch.equal(left.xyz, guided.xyz)

    model, special = tiny_a15_model, tiny_a15_model.special
    input_ids, pixel_values, grid, _, _ = model.prepare_inputs(images, hist_xyz)  # the route-free prompt
    coc = replace_after_eos(forced[0], special.traj_future_start, special.pad)  # G, [1, N]
    length, num = input_ids.shape[1], coc.shape[1]
    with torch.inference_mode():
        out = model.vlm(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                        pixel_values=pixel_values, image_grid_thw=grid, use_cache=True)
        cache = out.past_key_values
        model.vlm(input_ids=coc, attention_mask=torch.ones(1, length + num, dtype=torch.long),
                  past_key_values=cache, cache_position=torch.arange(length, length + num), use_cache=True)
        offset = length + coc[0].tolist().index(special.traj_future_start) + 1
        position_ids = torch.arange(64).expand(3, 1, 64) + (out.rope_deltas + offset)
        mask = torch.zeros(1, 1, 64, length + num + 64)
        mask[..., offset : length + num] = torch.finfo(torch.float32).min

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            hidden = model.expert(inputs_embeds=model.action_in_proj(x, t), position_ids=position_ids,
                                  past_key_values=cache, attention_mask=mask, use_cache=True, is_causal=False)
            cache.crop(length + num)
            return model.action_out_proj(hidden.last_hidden_state[:, -64:])

        xyz, _ = model.action_space.action_to_traj(euler_sample(velocity, noise[0], 10), hist_xyz, hist_rot)
    torch.testing.assert_close(left.xyz[:, 0], xyz, rtol=0, atol=1e-5)


def test_guided_velocity_blend():
    v_g, v_u = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 1.0, -0.25])
    x, t = torch.zeros(3), torch.zeros(1)
    blend = {w: guided_velocity(lambda *_: v_g, lambda *_: v_u, w)(x, t) for w in (0.0, 1.0, 1.5)}
    assert torch.equal(blend[0.0], v_u) and torch.equal(blend[1.0], v_g)
    torch.testing.assert_close(blend[1.5], v_g + 0.5 * (v_g - v_u))
    bf16 = guided_velocity(lambda *_: v_g.bfloat16(), lambda *_: v_u.bfloat16(), 1.5)(x, t)
    assert bf16.dtype == torch.bfloat16  # formed in the velocity dtype, as upstream under autocast


def test_padded_rows_match_their_single_runs(tiny_a15_model, make_inputs):
    """Rows padded to a common prompt length decode and see the expert context as they would alone.

    Compared on the tokens and the first Euler step's velocity: float rounding differs with the batch shape,
    and the tiny random velocity field amplifies it over the later steps."""
    images, hist_xyz, hist_rot = make_inputs(2)
    noise = torch.randn(2, 1, 64, 2, generator=torch.Generator().manual_seed(1))
    routes = [RIGHT, None]
    velocities: list[torch.Tensor] = []
    hook = tiny_a15_model.action_out_proj.register_forward_hook(lambda m, a, out: velocities.append(out))
    try:
        batch = tiny_a15_model.plan(images, hist_xyz, hist_rot, route=routes, noise=noise, greedy=True,
                                    max_new_tokens=6)
        first = velocities[0]  # [2, T, 2]
        for b in range(2):
            velocities.clear()
            single = tiny_a15_model.plan(images[b : b + 1], hist_xyz[b : b + 1], hist_rot[b : b + 1],
                                         route=routes[b : b + 1], noise=noise[b : b + 1], greedy=True,
                                         max_new_tokens=6)
            assert torch.equal(batch.token_ids[b], single.token_ids[0])
            torch.testing.assert_close(first[b], velocities[0][0], rtol=0, atol=1e-5)
    finally:
        hook.remove()


def test_expert_mask_hides_prompt_padding():
    mask = expert_attention_mask(torch.tensor([6, 5]), 7, 2, torch.float32,
                                 prompt_mask=torch.tensor([[True] * 4, [False, False, True, True]]))
    hidden = mask[:, 0, 0] != 0  # [b*, P+T]
    assert hidden.tolist() == [[False] * 6 + [True] + [False] * 2,
                               [True, True, False, False, False, True, True, False, False]]


def test_route_and_guidance_requests_are_checked(tiny_model, tiny_a15_model, make_inputs):
    images, hist_xyz, hist_rot = make_inputs(2)
    with pytest.raises(ValueError, match="route conditioning needs an Alpamayo 1.5 model"):
        tiny_model.plan(images, hist_xyz, hist_rot, route=[LEFT, LEFT])
    with pytest.raises(ValueError, match="route conditioning needs an Alpamayo 1.5 model"):
        tiny_model.plan(images, hist_xyz, hist_rot, guidance_weight=1.5)
    with pytest.raises(ValueError, match="route must be a list of 2 texts or None"):
        tiny_a15_model.plan(images, hist_xyz, hist_rot, route=[LEFT])
    with pytest.raises(ValueError, match="route must be a list of 2 texts"):
        tiny_a15_model.plan(images, hist_xyz, hist_rot, route=LEFT)
    with pytest.raises(ValueError, match="guidance_weight needs a route text for every input"):
        tiny_a15_model.plan(images, hist_xyz, hist_rot, route=[LEFT, None], guidance_weight=1.5)
    with pytest.raises(ValueError, match="guidance_weight must be finite"):
        tiny_a15_model.plan(images, hist_xyz, hist_rot, route=[LEFT, LEFT], guidance_weight=float("nan"))
    with pytest.raises(ValueError, match=r"images must be uint8 \[B, 2, 4, 3, H, W\]"):
        tiny_a15_model.plan(images, hist_xyz, hist_rot, camera_names=("camera_front_wide_120fov",) * 2)


# --- question answering ------------------------------------------------------------------------------------

def test_ask_returns_a_string_deterministically(tiny_a15_model, make_inputs):
    images = make_inputs(1)[0]
    a, b = (tiny_a15_model.ask(images, "Is it safe to turn left?", seed=7) for _ in range(2))
    c, d = (tiny_a15_model.ask(images, "Is it safe to turn left?", greedy=True) for _ in range(2))
    assert isinstance(a, str) and a == b and isinstance(c, str) and c == d


def test_ask_extracts_the_text_before_the_answer_end(tiny_a15_model, make_inputs, tiny_a15_tokenizer):
    """The lm_head is steered (a hook) to emit `<|answer_end|>` at the 4th step: the answer is the 3 sampled
    tokens before it, which depend on the seed only."""
    images = make_inputs(1)[0]
    special, calls = tiny_a15_model.special, []

    def steer(module, args, output):
        calls.append(None)
        if len(calls) == 4:
            output[:, special.answer_end] = 1e4
        elif len(calls) > 4:
            output[:, special.im_end] = 1e4
        return output

    def ask(**kwargs) -> str:
        calls.clear()
        return tiny_a15_model.ask(images, "What is ahead?", max_new_tokens=8, **kwargs)

    hook = tiny_a15_model.vlm.lm_head.register_forward_hook(steer)
    try:
        answers = [ask(seed=s) for s in (1, 1, 2)]
    finally:
        hook.remove()
    assert answers[0] == answers[1] != answers[2] and answers[0]
    assert len(calls) == 5  # prefill + 4 decode steps: stopped at <|im_end|>
    with pytest.raises(ValueError, match="question must be plain text"):
        tiny_a15_model.ask(images, "<|answer_end|>")


def test_ask_checks_family_and_images(tiny_model, tiny_a15_model, make_inputs):
    images = make_inputs(2)[0]
    with pytest.raises(ValueError, match="question answering needs an Alpamayo 1.5 model"):
        tiny_model.ask(images[:1], "What is ahead?")
    with pytest.raises(ValueError, match=r"images must be uint8 \[1, 4, 4, 3, H, W\]"):
        tiny_a15_model.ask(images, "What is ahead?")
    front = images[:1, 1:2]  # the VQA notebook's single front camera
    assert isinstance(tiny_a15_model.ask(front, "What is ahead?", camera_names=["camera_front_wide_120fov"],
                                         max_new_tokens=2), str)


# --- engine ------------------------------------------------------------------------------------------------

def _observation(config, images: torch.Tensor) -> Observation:
    io = config.io
    views = tuple(v.permute(0, 2, 3, 1).numpy() for v in images[0])  # V × [F, H, W, 3]
    return Observation(
        t0_ns=0, camera_names=io.camera_names, images=views,
        frame_stamps_ns=np.zeros((len(views), io.frames_per_camera), np.int64),
        history_xyz=np.zeros((io.history_poses, 3), np.float32),
        history_rot=np.broadcast_to(np.eye(3, dtype=np.float32), (io.history_poses, 3, 3)).copy(),
        t0_position=np.zeros(3), t0_rotation=np.eye(3), speed_mps=0.0)


def test_engine_family_route_guidance_and_ask(tiny_model, tiny_a15_model, make_inputs):
    images = make_inputs(1)[0]
    engine, r1 = ModelEngine(tiny_a15_model, "tiny-a15", 8), ModelEngine(tiny_model, "tiny", 8)
    assert (engine.family, r1.family) == ("a15", "r1")
    obs = _observation(tiny_a15_model.config, images)
    plain = engine.plan(obs, num_samples=2, seed=1)
    guided = engine.plan(obs, num_samples=2, seed=1, route=LEFT)
    cfg = engine.plan(obs, num_samples=2, seed=1, route=LEFT, guidance_weight=1.0)
    assert plain.xyz.shape == guided.xyz.shape == (2, 64, 3) and np.array_equal(guided.xyz, cfg.xyz)
    assert not np.array_equal(plain.xyz, guided.xyz)
    assert engine.ask(obs, "What is ahead?", seed=0) == engine.ask(obs, "What is ahead?", seed=0)
    with pytest.raises(ValueError, match="route conditioning needs an Alpamayo 1.5 model"):
        r1.plan(obs, num_samples=1, seed=0, route=LEFT)
    with pytest.raises(ValueError, match="question answering needs an Alpamayo 1.5 model"):
        r1.ask(obs, "What is ahead?")
