"""`make demo` end to end on a 2 s bag: the real planner node over DDS, the embedded model, every output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

pytest.importorskip("rclpy")

from rosbags.highlevel import AnyReader  # noqa: E402

from alpamayo_ros.planner.engine import EMBEDDED_TINY  # noqa: E402
from alpamayo_ros.sim import demo  # noqa: E402
from alpamayo_ros.sim.bag import BagConfig, write_bag  # noqa: E402
from alpamayo_ros.sim.scenarios import generate_scenario  # noqa: E402
from alpamayo_ros.sim.scene import ScenarioKind  # noqa: E402

SUMMARY_KEYS = {"ticks", "cycles_planned", "cycles_skipped", "skipped_by_reason", "trajectory_sets_received",
                "latency_ms", "model_id", "cycles_scored", "ade_1.0s", "fde_1.0s", "ade_3.0s", "fde_3.0s",
                "ade_6.4s", "fde_6.4s", "cause_accuracy", "bag", "pngs", "recorded", "wall_s"}


@pytest.fixture(scope="module")
def two_second_bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "bag"
    scenario = generate_scenario(0, ScenarioKind.RED_LIGHT, 2.0)
    write_bag(path, scenario, BagConfig(image_scale=1 / 6, jpeg_quality=75))
    return path


def test_demo_writes_consistent_outputs(two_second_bag: Path, tmp_path: Path):
    assert (EMBEDDED_TINY / "config.json").is_file(), "the embedded model is committed under assets/tiny"
    out = tmp_path / "demo"
    assert demo.main(["--bag", str(two_second_bag), "--out", str(out), "--planning-rate", "4"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary), SUMMARY_KEYS - set(summary)
    # Every tick of the node is a planned or a skipped cycle, and every skip has a reason.
    assert summary["ticks"] == summary["cycles_planned"] + summary["cycles_skipped"] >= 4
    assert sum(summary["skipped_by_reason"].values()) == summary["cycles_skipped"]
    assert summary["cycles_planned"] >= 1  # t0 = 1.5 s is the first with 1.5 s of history
    # One PNG per published trajectory set, each scored against the recorded future and the true cause.
    pngs = sorted(out.glob("cycle_*.png"))
    assert len(pngs) == summary["pngs"] == summary["trajectory_sets_received"] >= 1
    assert summary["cycles_scored"] == len(pngs)
    assert 0.0 <= summary["cause_accuracy"] <= 1.0 and summary["ade_6.4s"] >= summary["ade_1.0s"] >= 0.0
    assert {"vision", "prefill", "decode", "expert"} <= set(summary["latency_ms"])
    assert (out / "demo.mp4").stat().st_size > 0 and (out / "demo.gif").stat().st_size > 0
    # The node's outputs were recorded: a trajectory set per published plan.
    with AnyReader([out / "outputs"]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts[f"{demo.NODE}/output/trajectory_set"] == summary["trajectory_sets_received"]
    assert counts[f"{demo.NODE}/output/status"] >= summary["ticks"] - 1
