"""Open-loop metrics: known trajectories give known ADE/FDE, reasoning texts map to causes, the driven future
from a bag matches the scenario's, and the offline bag evaluation accounts for every tick."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alpamayo_ros.model.config import PRESETS
from alpamayo_ros.model.tokenizer import build_tiny_tokenizer
from alpamayo_ros.planner.engine import ModelEngine
from alpamayo_ros.sim.bag import BagConfig, write_bag
from alpamayo_ros.sim.evaluate import EvalConfig, GroundTruth, evaluate_bag, write_plots
from alpamayo_ros.sim.metrics import (
    CycleScore,
    cause_from_label,
    cause_from_text,
    displacement_errors,
    summarize,
)
from alpamayo_ros.sim.scenarios import generate_scenario
from alpamayo_ros.sim.scene import EXPLANATIONS, Cause, ScenarioKind

NS = 1_000_000_000
T = 0.1 * np.arange(1, 65)  # waypoint times, s


def _straight(speed_mps: float) -> np.ndarray:
    return np.stack([speed_mps * T, np.zeros(64), np.zeros(64)], -1)  # [64, 3]


def test_constant_offset_gives_equal_ade_and_fde():
    errors = displacement_errors(_straight(10.0) + [0.0, 1.0, 5.0], _straight(10.0))  # z is ignored
    assert errors == pytest.approx({f"{k}_{h}s": 1.0 for k in ("ade", "fde") for h in ("1.0", "3.0", "6.4")})


def test_speed_error_grows_linearly_along_the_horizon():
    errors = displacement_errors(_straight(11.0), _straight(10.0))  # error 1 m/s · t
    assert errors["fde_1.0s"] == pytest.approx(1.0) and errors["ade_1.0s"] == pytest.approx(0.55)
    assert errors["fde_3.0s"] == pytest.approx(3.0) and errors["ade_3.0s"] == pytest.approx(1.55)
    assert errors["fde_6.4s"] == pytest.approx(6.4) and errors["ade_6.4s"] == pytest.approx(3.25)
    with pytest.raises(ValueError, match="differ in shape"):
        displacement_errors(_straight(1.0)[:10], _straight(1.0))


@pytest.mark.parametrize("cause", list(Cause))
def test_every_explanation_names_its_cause(cause: Cause):
    assert cause_from_text(EXPLANATIONS[cause]) is cause
    assert cause_from_text("  " + EXPLANATIONS[cause].upper() + ". ") is cause
    assert cause_from_label(cause.name) is cause


@pytest.mark.parametrize("text, cause", [
    ("The traffic light is red, so stop before the line", Cause.STOP_FOR_RED_LIGHT),
    ("Accelerate: the light turned green", Cause.PROCEED_ON_GREEN),
    ("Decelerate because the lead vehicle is braking", Cause.SLOW_FOR_LEAD),
    ("Keep following the lead car", Cause.FOLLOW_LEAD),
    ("Yield to pedestrians on the crosswalk", Cause.YIELD_TO_PEDESTRIAN),
    ("Slow down for the sharp bend", Cause.SLOW_FOR_CURVE),
    ("Keep lane", Cause.KEEP_LANE),
    ("Nudge left to pass the parked truck", None),
    ("", None),
])
def test_free_text_reasoning_maps_to_causes(text: str, cause: Cause | None):
    assert cause_from_text(text) is cause


def test_summary_means_and_cause_accuracy():
    cycles = [
        CycleScore(1.0, displacement_errors(_straight(10.0) + [0, 1, 0], _straight(10.0)),
                   EXPLANATIONS[Cause.KEEP_LANE], Cause.KEEP_LANE),
        CycleScore(1.5, displacement_errors(_straight(10.0) + [0, 3, 0], _straight(10.0)),
                   EXPLANATIONS[Cause.KEEP_LANE], Cause.STOP_FOR_RED_LIGHT),
        CycleScore(2.0, None, "Stop at the red light ahead", Cause.STOP_FOR_RED_LIGHT),
    ]
    summary = summarize(cycles)
    assert summary["cycles_scored"] == 2 and summary["ade_6.4s"] == pytest.approx(2.0)
    assert summary["cause_accuracy"] == pytest.approx(2 / 3)
    assert summary["cause_accuracy_by_cause"] == {"KEEP_LANE": {"cycles": 1, "accuracy": 1.0},
                                                  "STOP_FOR_RED_LIGHT": {"cycles": 2, "accuracy": 0.5}}
    no_labels = summarize([CycleScore(0.0, None, "Keep lane", None)])
    assert "cause_accuracy" not in no_labels and no_labels["cycles_scored"] == 0


def test_driven_future_from_odometry_is_in_the_ego_frame_at_t0():
    # Driving along +y (yaw 90°) at 10 m/s from (5, 5), odometry at 50 Hz for 10 s.
    stamps = np.arange(0, 10 * NS + 1, NS // 50)
    xyz = np.stack([np.full(len(stamps), 5.0), 5.0 + 10.0 * stamps / NS, np.zeros(len(stamps))], -1)
    quat = np.tile([0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)], (len(stamps), 1))
    truth = GroundTruth(stamps, xyz, quat, np.array([0, 2 * NS]), [Cause.KEEP_LANE, Cause.SLOW_FOR_CURVE])
    np.testing.assert_allclose(truth.future_xyz(1 * NS), _straight(10.0), atol=1e-9)
    assert truth.future_xyz(4 * NS) is None  # 4 + 6.4 s runs past the odometry
    assert truth.cause_at(NS) is Cause.KEEP_LANE and truth.cause_at(3 * NS) is Cause.SLOW_FOR_CURVE
    assert truth.cause_at(-1) is None


@pytest.fixture(scope="module")
def short_bag(tmp_path_factory):
    """2.5 s of a red-light scene as the sample bag writes it (180 x 320 JPEG, 50 Hz odometry)."""
    scenario = generate_scenario(0, ScenarioKind.RED_LIGHT, 2.5)
    path = tmp_path_factory.mktemp("bag") / "bag"
    write_bag(path, scenario, BagConfig(image_scale=1.0 / 6.0, jpeg_quality=75))
    return scenario, path


def test_bag_truth_agrees_with_the_scenario(short_bag):
    scenario, path = short_bag
    truth = GroundTruth.from_bag(path, EvalConfig().odometry_topic)
    start_ns = int(truth.odom_ns[0])
    for t0_s in (0.5, 1.6, 2.4):  # beyond the 2.5 s of odometry: the recorded future paths
        expected, _ = scenario.future_trajectory(t0_s)
        np.testing.assert_allclose(truth.future_xyz(start_ns + round(t0_s * NS)), expected, atol=1e-3)
        assert truth.cause_at(start_ns + round(t0_s * NS)) is scenario.cause(t0_s)


def test_bag_evaluation_accounts_for_every_tick(short_bag, tmp_path):
    _, path = short_bag
    config = PRESETS["tiny"]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        from alpamayo_ros.model.alpamayo import AlpamayoR1

        model = AlpamayoR1(config, build_tiny_tokenizer(config.tokens)).eval()
    engine = ModelEngine(model, "random-tiny", max_new_tokens=8)
    result = evaluate_bag(path, engine, config.io.camera_names, EvalConfig(rate_hz=4.0))
    summary = result["summary"]
    assert summary["ticks"] == 9  # 0.25 … 2.25 s: the last message is at 2.49 s
    assert summary["ticks"] == summary["cycles_planned"] + summary["cycles_skipped"]
    assert sum(result["skipped_by_reason"].values()) == summary["cycles_skipped"]
    # 0.25 s: no frame 0.3 s back yet; 0.5 … 1.25 s: no 1.5 s of history; then 4 cycles, all scored (a random
    # model's candidates fail validation: they still count as skipped, and are scored as published as-is).
    assert result["skipped_by_reason"]["frames_missing"] == 1
    assert result["skipped_by_reason"]["history_incomplete"] == 4
    assert len(result["cycles"]) == summary["cycles_scored"] == 4
    assert set(result["latency_ms"]) >= {"vision", "prefill", "decode", "expert"}
    assert all(c["true_cause"] == "STOP_FOR_RED_LIGHT" for c in result["cycles"])
    again = evaluate_bag(path, engine, config.io.camera_names, EvalConfig(rate_hz=4.0))
    assert [c["errors"] for c in again["cycles"]] == [c["errors"] for c in result["cycles"]]  # seeded
    assert [p.name for p in write_plots(result, tmp_path)] == ["errors.png", "timeline.png"]
