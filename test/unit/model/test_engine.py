"""`FastEngine` against the reference path (`AlpamayoR1.plan`) on the tiny preset, CPU float32.

The tiny random velocity field is chaotic in x (Fourier max_freq 100 with random weights): a 1e-7 difference
in the first Euler step (summation order: the fast path attends over a fixed-size masked cache) grows to
metres after 10 steps. So trajectories over the whole loop are compared on a tiny model whose Fourier max_freq
is 4 (`smooth_model`, a well-conditioned field like a trained one), and on the standard tiny model only the
first velocity is compared. Tokens are compared everywhere and must be identical.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers.cache_utils import DynamicCache

from alpamayo_ros.model.alpamayo import STAGES, AlpamayoR1
from alpamayo_ros.model.config import PRESETS
from alpamayo_ros.model.engine import FastEngine, FastEngineConfig, Planner
from alpamayo_ros.model.engine.vision import BatchedVisionEncoder, FrameCache
from alpamayo_ros.model.tokenizer import build_tiny_tokenizer
from alpamayo_ros.planner.engine import ModelEngine
from alpamayo_ros.planner.types import Observation

from .conftest import build_model, straight_history

TRAJ_ATOL = 1e-4  # m, the fast path's trajectories vs the reference's (smooth field, full Euler loop)
ROT_ATOL = 1e-5
VELOCITY_ATOL = 1e-6  # first expert velocity on the chaotic tiny field


@pytest.fixture(scope="module")
def smooth_model(tiny_config, tiny_tokenizer) -> AlpamayoR1:
    """The tiny model with Fourier max_freq 4: its velocity field does not amplify rounding chaotically."""
    config = replace(tiny_config, action_in_proj=replace(tiny_config.action_in_proj, max_freq=4.0))
    return build_model(config, tiny_tokenizer)


def _forced_ids(model: AlpamayoR1, batch: int, samples: int) -> torch.Tensor:
    """[B, S, 6] CoC tokens with EOS at different steps (one row never emits it)."""
    s = model.special
    rows = [
        [10, 11, s.cot_end, s.traj_future_start, 5, 6],
        [12, s.traj_future_start, 7, 8, 9, 10],
        [13, 14, 15, 16, 17, 18],
        [s.traj_future_start, 1, 2, 3, 4, 5],
    ]
    return torch.tensor([rows[i % len(rows)] for i in range(batch * samples)]).reshape(batch, samples, -1)


def _assert_same_plan(ref, fast, traj_atol: float | None = TRAJ_ATOL) -> None:
    assert torch.equal(ref.token_ids, fast.token_ids)
    assert ref.coc == fast.coc and torch.equal(ref.eos_found, fast.eos_found)
    if traj_atol is not None:
        torch.testing.assert_close(fast.xyz, ref.xyz, rtol=0, atol=traj_atol)
        torch.testing.assert_close(fast.rot, ref.rot, rtol=0, atol=ROT_ATOL)


@pytest.mark.parametrize("mode", ["greedy", "forced"])
def test_tokens_and_trajectories_match_the_reference(smooth_model, make_inputs, mode):
    images, hist_xyz, hist_rot = make_inputs(2)
    kwargs = {"greedy": True} if mode == "greedy" else {"forced_coc_ids": _forced_ids(smooth_model, 2, 2)}
    ref = smooth_model.plan(images, hist_xyz, hist_rot, num_samples=2, seed=3, **kwargs)
    fast = FastEngine(smooth_model).plan(images, hist_xyz, hist_rot, num_samples=2, seed=3, **kwargs)
    _assert_same_plan(ref, fast)
    assert tuple(fast.timings_ms) == STAGES
    assert isinstance(smooth_model, Planner) and isinstance(FastEngine(smooth_model), Planner)
    if mode == "forced":  # EOS at step 3 and 1 (+1 step), one row without: the longest rule decides
        assert fast.num_coc_tokens == 6 and fast.eos_found.tolist() == [[True, True], [False, True]]


@pytest.mark.parametrize("lookahead", [0, 3])
def test_sampled_tokens_and_generator_state_match_the_reference(smooth_model, make_inputs, lookahead):
    """Same generator -> same tokens, same noise drawn afterwards, generator left in the same state."""
    images, hist_xyz, hist_rot = make_inputs(2)
    engine = FastEngine(smooth_model, FastEngineConfig(stop_lookahead=lookahead))
    ref_gen, fast_gen = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ref = smooth_model.plan(images, hist_xyz, hist_rot, num_samples=3, generator=ref_gen, max_new_tokens=12)
    fast = engine.plan(images, hist_xyz, hist_rot, num_samples=3, generator=fast_gen, max_new_tokens=12)
    _assert_same_plan(ref, fast)
    assert torch.equal(ref_gen.get_state(), fast_gen.get_state())


def test_global_rng_is_consumed_like_the_reference(smooth_model, make_inputs):
    images, hist_xyz, hist_rot = make_inputs(1)
    with torch.random.fork_rng():
        torch.manual_seed(9)
        ref = smooth_model.plan(images, hist_xyz, hist_rot, num_samples=2, max_new_tokens=8)
        ref_next = torch.rand(3)
        torch.manual_seed(9)
        fast = FastEngine(smooth_model).plan(images, hist_xyz, hist_rot, num_samples=2, max_new_tokens=8)
        fast_next = torch.rand(3)
    _assert_same_plan(ref, fast)
    assert torch.equal(ref_next, fast_next)


def test_stop_rule_with_lookahead_discards_the_extra_steps(smooth_model, make_inputs):
    """EOS at step 1 in every row: the reference stops after 3 tokens; the engine runs up to 3 more steps."""
    images, hist_xyz, hist_rot = make_inputs(1)
    eos = smooth_model.special.traj_future_start
    forced = torch.tensor([[[20, eos, 21, 22, 23, 24, 25, 26]]])
    ref = smooth_model.plan(images, hist_xyz, hist_rot, seed=0, forced_coc_ids=forced)
    for lookahead in (0, 3):
        engine = FastEngine(smooth_model, FastEngineConfig(stop_lookahead=lookahead))
        fast = engine.plan(images, hist_xyz, hist_rot, seed=0, forced_coc_ids=forced)
        _assert_same_plan(ref, fast)
        assert fast.num_coc_tokens == 3 and engine.session.step.item() == 3 + lookahead  # steps run


def test_first_expert_velocity_matches_on_the_chaotic_tiny_field(tiny_model, make_inputs):
    images, hist_xyz, hist_rot = make_inputs(1)
    noise = torch.randn(1, 2, 64, 2, generator=torch.Generator().manual_seed(1))
    velocities: list[torch.Tensor] = []
    hook = tiny_model.action_out_proj.register_forward_hook(lambda m, a, out: velocities.append(out.clone()))
    try:
        ref = tiny_model.plan(images, hist_xyz, hist_rot, num_samples=2, greedy=True, noise=noise)
        engine = FastEngine(tiny_model)
        fast = engine.plan(images, hist_xyz, hist_rot, num_samples=2, greedy=True, noise=noise)
    finally:
        hook.remove()
    steps = tiny_model.config.flow.num_steps
    assert len(velocities) == 2 * steps
    assert torch.equal(ref.token_ids, fast.token_ids)
    torch.testing.assert_close(velocities[steps], velocities[0], rtol=0, atol=VELOCITY_ATOL)


def test_expert_loop_leaves_the_prefix_cache_untouched(smooth_model, make_inputs):
    images, hist_xyz, hist_rot = make_inputs(1)
    engine = FastEngine(smooth_model)
    snapshots: list[torch.Tensor] = []

    def snapshot(module, args):
        if not snapshots:
            snapshots.append(engine.session.cache.kv[..., : engine.session.capacity, :].clone())

    hook = smooth_model.action_in_proj.register_forward_pre_hook(snapshot)
    try:
        out = engine.plan(images, hist_xyz, hist_rot, num_samples=2, seed=4)
    finally:
        hook.remove()
    session = engine.session
    assert len(snapshots) == 1 and out.num_coc_tokens >= 1
    assert torch.equal(session.cache.kv[..., : session.capacity, :], snapshots[0])  # bitwise
    assert session.cache.kv[..., session.capacity :, :].abs().sum() > 0  # the expert wrote its own slots


def test_prefix_slots_hold_the_reference_prefill(tiny_model, make_inputs):
    images, hist_xyz, hist_rot = make_inputs(2)
    engine = FastEngine(tiny_model)
    engine.plan(images, hist_xyz, hist_rot, num_samples=2, greedy=True, max_new_tokens=1)
    input_ids, pixel_values, grid, positions, _ = tiny_model.prepare_inputs(images, hist_xyz)
    cache = DynamicCache()
    with torch.inference_mode():
        embeds, deepstack = tiny_model._encode_images(pixel_values, grid)
        tiny_model._prefill(input_ids, positions, embeds, deepstack, cache)
    length = input_ids.shape[1]
    keys = engine.session.cache.layer(1)[0][:, :, :length]  # [b*, kv, L, hd]
    torch.testing.assert_close(keys, cache.layers[1].keys.repeat_interleave(2, 0), rtol=0, atol=1e-6)


def test_batched_vision_matches_the_tower(tiny_model, make_inputs):
    images, hist_xyz, _ = make_inputs(1)
    _, pixel_values, grid, _, _ = tiny_model.prepare_inputs(images, hist_xyz)
    encoder = BatchedVisionEncoder(tiny_model.vlm.model.visual)
    with torch.inference_mode():
        embeds, deepstack = tiny_model._encode_images(pixel_values, grid)
        features = encoder.encode(pixel_values, (int(grid[0, 1]), int(grid[0, 2])))
    frames, per_frame = features.shape[0], features.shape[2]
    assert features.shape == (16, 1 + len(deepstack), per_frame, 64) and frames * per_frame == embeds.shape[0]
    torch.testing.assert_close(features[:, 0].reshape(-1, 64), embeds, rtol=0, atol=1e-6)
    for i, layer in enumerate(deepstack):
        torch.testing.assert_close(features[:, 1 + i].reshape(-1, 64), layer, rtol=0, atol=1e-6)


def _rolling_views(config, cycle: int, size: int = 64) -> tuple[torch.Tensor, list[tuple[str, int]]]:
    """Cycle k's images [1, V, F, 3, s, s] (frames k … k+F−1 per camera) and their (camera, stamp) ids."""
    io = config.io
    frames, ids = [], []
    for v, name in enumerate(io.camera_names):
        for stamp in range(cycle, cycle + io.frames_per_camera):
            generator = torch.Generator().manual_seed(1000 * v + stamp)
            frames.append(torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=generator))
            ids.append((name, stamp))
    shape = (1, len(io.camera_names), io.frames_per_camera, 3, size, size)
    return torch.stack(frames).reshape(shape), ids


def test_vision_cache_skips_seen_frames_and_keeps_the_outputs(smooth_model):
    config = smooth_model.config
    hist_xyz, hist_rot = straight_history(1, config.io.history_poses)
    cached, cold = FastEngine(smooth_model), FastEngine(smooth_model)
    encoded: list[int] = []
    hook = smooth_model.vlm.model.visual.patch_embed.register_forward_hook(
        lambda m, args, out: encoded.append(out.shape[0])
    )
    try:
        for cycle in range(3):
            images, ids = _rolling_views(config, cycle)
            encoded.clear()
            hit = cached.plan(images, hist_xyz, hist_rot, num_samples=2, seed=cycle, frame_ids=ids)
            patches_cached = sum(encoded)
            encoded.clear()
            miss = cold.plan(images, hist_xyz, hist_rot, num_samples=2, seed=cycle)
            patches_cold = sum(encoded)
            _assert_same_plan(miss, hit)
            new_frames = config.io.num_images if cycle == 0 else len(config.io.camera_names)
            assert patches_cached * config.io.num_images == patches_cold * new_frames
    finally:
        hook.remove()
    views = len(config.io.camera_names)
    assert cached.frames_encoded == 16 + 2 * views and cached.frames_reused == 2 * (16 - views)
    assert cold.frames_encoded == 3 * 16 and len(cold.frames) == 0


def test_frame_cache_is_lru_and_checks_the_grid():
    cache = FrameCache(capacity=2)
    a, b, c = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    cache.put("a", (4, 4), a)
    cache.put("b", (4, 4), b)
    assert cache.get("a", (4, 4)) is a and cache.get("a", (6, 4)) is None
    cache.put("c", (4, 4), c)  # evicts "b", the least recently used
    assert cache.get("b", (4, 4)) is None and len(cache) == 2
    FrameCache(capacity=0).put("a", (4, 4), a)


def test_static_buffers_are_reused_until_the_shape_changes(smooth_model, make_inputs):
    images, hist_xyz, hist_rot = make_inputs(1)
    engine = FastEngine(smooth_model)
    engine.warmup(tuple(images.shape[-2:]), num_samples=2)
    session = engine.session
    engine.plan(images, hist_xyz, hist_rot, num_samples=2, seed=0)
    assert engine.session is session and not engine.uses_cuda_graphs
    assert session.capacity % 256 == 0
    engine.plan(images, hist_xyz, hist_rot, num_samples=3, seed=0)
    assert engine.session is not session and engine.session.rows == 3


def test_a15_route_runs_on_the_fast_path_and_guidance_on_the_reference(tiny_tokenizer, make_inputs):
    config = PRESETS["tiny-a15"]
    config = replace(config, action_in_proj=replace(config.action_in_proj, max_freq=4.0))
    model = build_model(config, build_tiny_tokenizer(config.tokens))
    images, hist_xyz, hist_rot = make_inputs(1)
    engine = FastEngine(model)
    for kwargs in ({"route": ["Turn left"]}, {"route": ["Turn left"], "guidance_weight": 1.5}):
        ref = model.plan(images, hist_xyz, hist_rot, num_samples=2, seed=2, **kwargs)
        fast = engine.plan(images, hist_xyz, hist_rot, num_samples=2, seed=2, **kwargs)
        _assert_same_plan(ref, fast)
    assert engine.frames_encoded == 16  # the guided plan ran the reference path


def test_bad_inputs_raise(tiny_model, make_inputs):
    images, hist_xyz, hist_rot = make_inputs(1)
    engine = FastEngine(tiny_model)
    with pytest.raises(ValueError, match="frame_ids"):
        engine.plan(images, hist_xyz, hist_rot, frame_ids=[("cam", 0)] * 3)
    with pytest.raises(ValueError, match="images"):
        engine.plan(images[:, :2], hist_xyz, hist_rot)
    with pytest.raises(ValueError, match="modes"):
        engine.warmup((64, 64), modes=("beam",))
    with pytest.raises(ValueError, match="stop_lookahead"):
        FastEngineConfig(stop_lookahead=-1)


_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CUDA graph capture)")


@pytest.fixture(scope="module")
def cuda_models(tiny_config, tiny_tokenizer) -> tuple[AlpamayoR1, AlpamayoR1]:
    """(float32, bf16) smooth tiny models on CUDA."""
    config = replace(tiny_config, action_in_proj=replace(tiny_config.action_in_proj, max_freq=4.0))
    fp32 = build_model(config, tiny_tokenizer).cuda()
    return fp32, build_model(config, tiny_tokenizer).cuda().cast_weights(torch.bfloat16)


@pytest.mark.gpu
@_CUDA
@pytest.mark.parametrize("mode", ["sample", "greedy", "forced"])
def test_cuda_graphs_equal_eager_and_the_reference(cuda_models, make_inputs, mode):
    images, hist_xyz, hist_rot = make_inputs(1)
    for model in cuda_models:
        kwargs = {"sample": {}, "greedy": {"greedy": True},
                  "forced": {"forced_coc_ids": _forced_ids(model, 1, 3)}}[mode]
        graphs, eager = FastEngine(model), FastEngine(model, FastEngineConfig(cuda_graphs=False))
        graphs.warmup(tuple(images.shape[-2:]), num_samples=3, modes=(mode,))
        assert graphs.uses_cuda_graphs and not eager.uses_cuda_graphs
        outs = []
        for runner in (graphs.plan, eager.plan, model.plan):
            generator = torch.Generator(device="cuda").manual_seed(7)
            outs.append((runner(images, hist_xyz, hist_rot, num_samples=3, generator=generator, **kwargs),
                         generator.get_state()))
        (graph_out, graph_rng), (eager_out, eager_rng), (ref_out, ref_rng) = outs
        _assert_same_plan(eager_out, graph_out, traj_atol=0.0)  # same kernels, replayed
        assert torch.equal(graph_rng, eager_rng) and torch.equal(graph_rng, ref_rng)
        if model.dtype == torch.float32:
            _assert_same_plan(ref_out, graph_out)
        else:  # bf16: summation-order differences are ~1e-2 relative; tokens may legitimately differ
            assert torch.isfinite(graph_out.xyz).all()


def test_model_engine_wires_the_fast_engine_with_frame_ids(smooth_model):
    """`ModelEngine(engine="fast")` passes (camera, stamp) frame ids and gives the reference's result."""
    io = smooth_model.config.io
    hist_xyz, hist_rot = straight_history(1, io.history_poses)

    def observation(cycle: int) -> Observation:
        images, ids = _rolling_views(smooth_model.config, cycle)
        views = tuple(images[0, v].permute(0, 2, 3, 1).numpy() for v in range(len(io.camera_names)))
        stamps = np.array([stamp for _, stamp in ids], np.int64).reshape(len(views), io.frames_per_camera)
        return Observation(t0_ns=cycle, camera_names=io.camera_names, images=views, frame_stamps_ns=stamps,
                           history_xyz=hist_xyz[0].numpy(), history_rot=hist_rot[0].numpy(),
                           t0_position=np.zeros(3), t0_rotation=np.eye(3), speed_mps=8.0)

    fast, reference = ModelEngine(smooth_model, "tiny", 6, "fast"), ModelEngine(smooth_model, "tiny", 6)
    assert reference.fast is None and fast.describe()["engine"] == "fast"
    fast.warmup((64, 64), num_samples=2)
    assert len(fast.fast.frames) == 0  # the warm-up's grey frames are forgotten
    for cycle in range(2):
        ours, theirs = (e.plan(observation(cycle), num_samples=2, seed=cycle) for e in (fast, reference))
        assert ours.reasoning == theirs.reasoning
        np.testing.assert_allclose(ours.xyz, theirs.xyz, rtol=0, atol=TRAJ_ATOL)
    assert fast.fast.frames_reused == 16 - len(io.camera_names)
    with pytest.raises(ValueError, match="engine"):
        ModelEngine(smooth_model, "tiny", 6, "turbo")
