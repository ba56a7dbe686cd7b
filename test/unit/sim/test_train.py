"""Training of the embedded model: the teacher-forced pass equals inference decoding, the loss falls on a
fixed mini-batch, the dataset yields what the node would see, training is a function of its seed, and the
held-out scoring scores the candidate the selection picks."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from alpamayo_ros.model.config import PRESETS
from alpamayo_ros.model.engine.vision import BatchedVisionEncoder
from alpamayo_ros.model.training import IGNORE_INDEX, TrainingBatch, teacher_force, training_loss
from alpamayo_ros.planner.engine import ModelEngine
from alpamayo_ros.planner.selection import SelectionMode, select
from alpamayo_ros.sim.dataset import SceneConfig, SceneDataset, build_cache, scene_kind
from alpamayo_ros.sim.evaluate import evaluate_scenes
from alpamayo_ros.sim.metrics import displacement_errors
from alpamayo_ros.sim.scene import EXPLANATIONS, Cause, ScenarioKind
from alpamayo_ros.sim.train import TrainConfig, build_model, train

TEXTS = (EXPLANATIONS[Cause.STOP_FOR_RED_LIGHT], EXPLANATIONS[Cause.PROCEED_ON_GREEN])


def _batch(batch_size: int = 2, seed: int = 0) -> TrainingBatch:
    """Random 64x64 frames, a straight 10 m/s history and a future braking to a stop."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch_size, 4, 4, 3, 64, 64), generator=g, dtype=torch.uint8)
    hist_x = 10.0 * torch.arange(-15, 1) * 0.1  # [16]
    t = torch.arange(1, 65) * 0.1  # [64]
    fut_x = torch.where(t < 4.0, 10.0 * t - 1.25 * t**2, torch.full_like(t, 20.0))  # 2.5 m/s² to a stop
    eye = torch.eye(3)
    return TrainingBatch(
        images=images,
        hist_xyz=torch.stack([hist_x, torch.zeros(16), torch.zeros(16)], -1).repeat(batch_size, 1, 1),
        hist_rot=eye.expand(batch_size, 16, 3, 3).clone(),
        fut_xyz=torch.stack([fut_x, torch.zeros(64), torch.zeros(64)], -1).repeat(batch_size, 1, 1),
        fut_rot=eye.expand(batch_size, 64, 3, 3).clone(),
        coc_text=TEXTS[:batch_size],
    )


def _tiny(seed: int = 0):
    return build_model(replace(TrainConfig(preset="tiny"), seed=seed))


def test_teacher_forced_logits_equal_token_by_token_decoding():
    model = _tiny().eval()
    batch = _batch()
    with torch.no_grad():
        forced = teacher_force(model, batch.images, batch.hist_xyz, batch.coc_text)
        ids, pixels, grid, positions, rope_deltas = model.prepare_inputs(batch.images, batch.hist_xyz)
        image_embeds, deepstack = model._encode_images(pixels, grid)
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache()
        logits = [model._prefill(ids, positions, image_embeds, deepstack, cache)]
        cont = forced.sequences[:, ids.shape[1]:]  # [B, N]
        for k in range(cont.shape[1] - 1):
            logits.append(model._decode_step(cont[:, k], cache, rope_deltas))
    stepwise = torch.stack(logits, 1)  # [B, N, vocab]
    valid = forced.labels != IGNORE_INDEX
    assert torch.allclose(forced.logits[valid], stepwise[valid].masked_fill(torch.isinf(forced.logits[valid]),
                                                                            float("-inf")), atol=1e-4)
    # Each row ends with <|cot_end|><|traj_future_start|>, then padding the loss ignores.
    special = model.special
    for row, text in zip(forced.labels, TEXTS):
        kept = row[row != IGNORE_INDEX].tolist()
        assert kept[-2:] == [special.cot_end, special.traj_future_start]
        assert model.tokenizer.decode(kept[:-2]) == text
    assert forced.cache.get_seq_length() == forced.sequences.shape[1]


def test_batched_vision_gives_the_tower_loss_and_gradients():
    model = _tiny().train()
    batch = _batch()
    vision = BatchedVisionEncoder(model.vlm.model.visual)
    losses, grads = [], []
    for encoder in (None, vision):
        model.zero_grad()
        out = training_loss(model, batch, torch.Generator().manual_seed(3), flow_samples=2, vision=encoder)
        out.total.backward()
        losses.append(out.total.item())
        grads.append(model.vlm.model.visual.blocks[0].attn.qkv.weight.grad.clone())
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_loss_decreases_on_a_fixed_mini_batch():
    model = _tiny().train()
    batch = _batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(8):
        generator = torch.Generator().manual_seed(step)  # fresh noise each step, as in training
        out = training_loss(model, batch, generator, flow_samples=2)
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
        losses.append((out.total.item(), out.coc.item(), out.flow.item()))
    first, last = losses[0], losses[-1]
    assert last[0] < 0.6 * first[0], losses
    assert last[1] < 0.75 * first[1], losses  # the CoC text is being learnt
    assert np.isfinite(losses).all()
    # The flow targets are the actions of the ground-truth future; both losses reach the VLM.
    out = training_loss(model, batch, torch.Generator().manual_seed(0))
    model.zero_grad()
    out.flow.backward()
    assert model.vlm.model.visual.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.action_out_proj.weight.grad.abs().sum() > 0


def test_same_generator_gives_the_same_loss():
    model = _tiny().train()
    batch = _batch()
    a = training_loss(model, batch, torch.Generator().manual_seed(5), flow_samples=3)
    b = training_loss(model, batch, torch.Generator().manual_seed(5), flow_samples=3)
    c = training_loss(model, batch, torch.Generator().manual_seed(6), flow_samples=3)
    assert a.total.item() == b.total.item() and a.flow.item() != c.flow.item()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> SceneDataset:
    """Two 2.2 s scenes (red light, keep lane) rendered like the sample bag."""
    config = SceneConfig(duration_s=2.2)
    seeds = [2, 6]  # scene_kind: red_light, keep_lane
    return SceneDataset(build_cache(seeds, config, tmp_path_factory.mktemp("cache"), workers=1))


def test_examples_are_what_the_node_sees_at_t0(scenes: SceneDataset):
    assert scene_kind(2) is ScenarioKind.RED_LIGHT and scene_kind(6) is ScenarioKind.KEEP_LANE
    assert len(scenes) == 2 * 7  # t0 = 1.6 … 2.2 s per scene
    example = scenes.example(0)
    assert example.images.shape == (4, 4, 180, 320, 3) and example.images.dtype == np.uint8
    assert example.t0_s == pytest.approx(1.6) and example.seed == 2
    assert example.cause is Cause.STOP_FOR_RED_LIGHT and example.explanation == "Stop at the red light ahead"
    np.testing.assert_allclose(example.hist_xyz[-1], 0.0, atol=1e-6)  # t0 is the origin
    np.testing.assert_allclose(example.hist_rot[-1], np.eye(3), atol=1e-6)
    assert example.fut_xyz[-1, 0] > 30.0  # driving on, 6.4 s ahead
    # Consecutive t0 share frames: the newest frame of t0 is the second newest of t0 + 0.1 s.
    later = scenes.example(1)
    np.testing.assert_array_equal(example.images[:, -1], later.images[:, -2])
    batch = scenes.batch([0, 13])
    assert batch.images.shape == (2, 4, 4, 3, 180, 320)
    assert batch.coc_text == ("Stop at the red light ahead", "Keep lane and follow the road")


def test_training_is_a_function_of_the_seed(scenes: SceneDataset):
    config = TrainConfig(preset="tiny", steps=2, batch_size=2, warmup_steps=1, flow_samples=2)
    weights = []
    for seed in (0, 0, 1):
        model = build_model(replace(config, seed=seed))
        history = train(model, scenes, replace(config, seed=seed))
        assert [row["step"] for row in history] == [1, 2]
        weights.append(model.action_out_proj.weight.detach().clone())
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])
    assert PRESETS["small"].io == PRESETS["tiny"].io  # the embedded model keeps the real I/O geometry


def test_scene_evaluation_scores_the_candidate_the_selection_picks(scenes: SceneDataset):
    engine = ModelEngine(_tiny().eval(), "random-tiny", max_new_tokens=8)
    scored = {mode: evaluate_scenes(engine, scenes, stride_s=0.5, seed=0, num_samples=3, selection=mode)
              for mode in (SelectionMode.FIRST, SelectionMode.MEDOID)}
    expected, medoids = {}, []
    for i in np.flatnonzero(np.isclose(scenes.t0_s, 2.0)):  # the only multiple of 0.5 s in 1.6 … 2.2 s
        example = scenes.example(int(i))
        obs = example.observation(engine.model.config.io.camera_names)
        xyz = np.asarray(engine.plan(obs, num_samples=3, seed=0).xyz)  # [3, 64, 3]
        for mode in scored:
            chosen, _ = select(xyz, mode, np.ones(3, dtype=bool))
            medoids += [chosen] if mode is SelectionMode.MEDOID else []
            errors = displacement_errors(xyz[chosen], example.fut_xyz)
            expected.setdefault(mode, []).append(errors["ade_6.4s"])
    assert len(medoids) == 2 and 0 not in medoids  # with this seed the medoid is never the first sample
    for mode, metrics in scored.items():
        assert metrics["cycles_scored"] == 2 and metrics["num_samples"] == 3
        assert metrics["selection"] == mode.value
        assert metrics["ade_6.4s"] == pytest.approx(np.mean(expected[mode]), rel=1e-6)
    assert scored[SelectionMode.FIRST]["ade_6.4s"] != scored[SelectionMode.MEDOID]["ade_6.4s"]
