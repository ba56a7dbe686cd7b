"""`make demo`: replay a bag through the real planner node and show, per planning cycle, what it saw and did.

    python -m alpamayo_ros.sim.demo [--bag out/sample_bag] [--out out/demo] [--model CHECKPOINT_DIR]
        [--rate 0.5] [--planning-rate 2.0] [--seed 0]

Real rclpy pub/sub on localhost: a `BagPlayer` publishes the bag's cameras and odometry on the planner's input
topics plus /clock from bag time; the `PlannerNode` runs with use_sim_time and its default model (the
embedded small model in alpamayo_ros/assets/tiny, or `--model`); a `BagRecorder` records the node's outputs.
Afterwards every published TrajectorySet is scored against the bag (metrics.py) and drawn. Writes to --out:

    cycle_NNN.png        the four camera views at t0, a bird's-eye view (every candidate, the selected one,
                         the driven future) and the reasoning
    demo.mp4, demo.gif   those frames at the planning rate
    outputs/             the node's outputs as a bag (trajectory sets, paths, reasoning, status, diagnostics)
    summary.json         ticks, planned and skipped cycles (by reason, from PlannerStatus), latency per stage,
                         ADE/FDE at 1/3/6.4 s, fraction of cycles whose reasoning names the true cause
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import rclpy
from PIL import Image as PilImage
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile

from rosbags.highlevel import AnyReader

from alpamayo_ros.msg import PlannerStatus, TrajectorySet
from alpamayo_ros.planner.images import decode_compressed
from alpamayo_ros.planner.sync import DEFAULT_CAMERA_NAMES
from alpamayo_ros.planner.types import NS_PER_S
from alpamayo_ros.ros.bag_io import BagRecorder
from alpamayo_ros.ros.planner_node import PlannerNode
from alpamayo_ros.ros.replay import BagPlayer, ReplayConfig
from alpamayo_ros.sim.bag import ODOMETRY_TOPIC, camera_info_topic, image_topic
from alpamayo_ros.sim.evaluate import GroundTruth, score_cycle
from alpamayo_ros.sim.metrics import CycleScore, summarize
from alpamayo_ros.sim.plots import bird_eye_view, compose_cycle

NODE = "/alpamayo_planner"
OUTPUT_TOPICS = (f"{NODE}/output/trajectory_set", f"{NODE}/output/path", f"{NODE}/output/reasoning",
                 f"{NODE}/output/status", "/diagnostics")


@dataclass
class Cycle:
    """One published plan as the demo received it."""

    t0_ns: int
    candidates: np.ndarray  # [S, T, 3] poses in base_link at t0
    selected: int
    reasoning: str
    inference_ms: float


class Collector(Node):
    """Keeps every TrajectorySet and PlannerStatus the planner publishes."""

    def __init__(self, context: rclpy.context.Context) -> None:
        super().__init__("demo_collector", context=context)
        self.cycles: list[Cycle] = []
        self.status: list[PlannerStatus] = []
        self._lock = threading.Lock()
        depth = QoSProfile(depth=100)
        self.create_subscription(TrajectorySet, f"{NODE}/output/trajectory_set", self._on_set, depth)
        self.create_subscription(PlannerStatus, f"{NODE}/output/status", self._on_status, depth)

    def _on_set(self, msg: TrajectorySet) -> None:
        candidates = np.array([[[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in path.poses]
                               for path in msg.trajectories])  # [S, T, 3]
        t0_ns = msg.header.stamp.sec * NS_PER_S + msg.header.stamp.nanosec
        reasoning = msg.reasoning[msg.selected_index] if msg.selected_index >= 0 else ""
        with self._lock:
            self.cycles.append(Cycle(t0_ns, candidates, msg.selected_index, reasoning, msg.inference_ms))

    def _on_status(self, msg: PlannerStatus) -> None:
        with self._lock:
            self.status.append(msg)


def _planner(context: rclpy.context.Context, model: Path | None, planning_rate_hz: float,
             seed: int) -> PlannerNode:
    overrides = [
        Parameter("use_sim_time", value=True),
        Parameter("planning.rate_hz", value=planning_rate_hz),
        Parameter("planning.seed", value=seed),
    ]
    if model is not None:
        overrides += [Parameter("model.backend", value="checkpoint"),
                      Parameter("model.path", value=str(model))]
    return PlannerNode(context=context, parameter_overrides=overrides)


def run_node(bag: Path, out: Path, model: Path | None, rate: float, planning_rate_hz: float,
             seed: int) -> tuple[list[Cycle], list[PlannerStatus], dict[str, int]]:
    """Play `bag` into a planner node (use_sim_time) and collect its outputs; records them to out/outputs.

    Returns:
        the received cycles, the status messages, and the recorded message count per topic.
    """
    context = rclpy.context.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    nodes: list[Node] = []
    try:
        planner = _planner(context, model, planning_rate_hz, seed)
        collector, player_node = Collector(context), Node("demo_player", context=context)
        nodes = [planner, collector, player_node]
        remap = ((ODOMETRY_TOPIC, f"{NODE}/input/odometry"),)
        for camera in DEFAULT_CAMERA_NAMES:
            remap += ((image_topic(camera, True), f"{NODE}/input/camera/{camera}/image/compressed"),
                      (camera_info_topic(camera), f"{NODE}/input/camera/{camera}/camera_info"))
        player = BagPlayer(player_node, bag, ReplayConfig(rate=rate, topics=tuple(s for s, _ in remap),
                                                          remap=remap))
        recorder = BagRecorder(player_node, out / "outputs", OUTPUT_TOPICS, clock_ns=player.bag_time_ns)
        for node in nodes:
            executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        inputs = [target for _, target in remap] + ["/clock"]
        if not player.wait_for_subscribers(inputs, timeout_s=30.0):
            raise RuntimeError(f"the planner did not subscribe to {inputs} within 30 s")
        deadline = time.monotonic() + 10.0
        while recorder.pending_topics and time.monotonic() < deadline:
            time.sleep(0.05)
        player.play()
        time.sleep(1.5)  # the last cycle finishes and its outputs arrive
        counts = recorder.close()
        return list(collector.cycles), list(collector.status), counts
    finally:
        executor.shutdown()
        for node in nodes:
            node.destroy_node()
        rclpy.shutdown(context=context)


def _stage_means(status: list[PlannerStatus]) -> dict[str, float]:
    """Mean latency per stage over the status messages that report a new planned cycle."""
    samples: dict[str, list[float]] = {}
    planned = 0
    for msg in status:
        if msg.cycles_planned > planned:
            planned = msg.cycles_planned
            for name, ms in zip(msg.stage_names, msg.stage_latency_ms):
                samples.setdefault(name, []).append(float(ms))
    return {name: float(np.mean(values)) for name, values in samples.items()}


def summarize_run(cycles: list[Cycle], status: list[PlannerStatus],
                  scores: list[CycleScore]) -> dict[str, object]:
    """The demo's summary: tick accounting from the newest PlannerStatus plus the open-loop metrics."""
    last = max(status, key=lambda s: s.cycles_planned + s.cycles_skipped) if status else PlannerStatus()
    return {
        "ticks": int(last.cycles_planned + last.cycles_skipped),
        "cycles_planned": int(last.cycles_planned),
        "cycles_skipped": int(last.cycles_skipped),
        "skipped_by_reason": {r: int(n) for r, n in zip(last.skip_reasons, last.skip_counts)},
        "trajectory_sets_received": len(cycles),
        "latency_ms": _stage_means(status),
        "model_id": last.model_id,
        **summarize(scores),
    }


def frames_at(bag: Path, cameras: tuple[str, ...], stamps_ns: list[int]) -> dict[int, list[np.ndarray]]:
    """The JPEG frames of `cameras` whose header stamp is one of `stamps_ns` -> stamp -> [H, W, 3] RGB per
    camera, in camera order (stamps where a camera has no frame are left out)."""
    wanted, topics = set(stamps_ns), {image_topic(c, True): i for i, c in enumerate(cameras)}
    found: dict[int, dict[int, np.ndarray]] = {}
    with AnyReader([bag]) as reader:
        connections = [c for c in reader.connections if c.topic in topics]
        for connection, _, data in reader.messages(connections=connections):
            msg = reader.deserialize(data, connection.msgtype)
            stamp = msg.header.stamp.sec * NS_PER_S + msg.header.stamp.nanosec
            if stamp in wanted:
                image = decode_compressed(msg.format, msg.data.tobytes())
                found.setdefault(stamp, {})[topics[connection.topic]] = image
    return {t: [views[i] for i in sorted(views)] for t, views in found.items() if len(views) == len(cameras)}


def write_media(out: Path, bag: Path, cycles: list[Cycle], scores: list[CycleScore],
                truth: GroundTruth) -> list[Path]:
    """cycle_NNN.png per cycle, plus demo.mp4 and demo.gif of them; returns the PNG paths."""
    views = frames_at(bag, DEFAULT_CAMERA_NAMES, [c.t0_ns for c in cycles])
    paths, frames = [], []
    for i, (cycle, score) in enumerate(zip(cycles, scores)):
        future = truth.future_xyz(cycle.t0_ns, cycle.candidates.shape[1])
        bev = bird_eye_view(cycle.candidates, cycle.selected, future)
        image = compose_cycle(views.get(cycle.t0_ns, []), bev, score, cycle.inference_ms)
        path = out / f"cycle_{i:03d}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(path)
        frames.append(image)
    if frames:
        height, width = frames[0].shape[:2]
        writer = cv2.VideoWriter(str(out / "demo.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 2.0, (width, height))
        for image in frames:
            writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        writer.release()
        small = [PilImage.fromarray(f).resize((width // 2, height // 2), PilImage.LANCZOS) for f in frames]
        small[0].save(out / "demo.gif", save_all=True, append_images=small[1:], duration=500, loop=0)
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alpamayo_ros.sim.demo",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--bag", type=Path, default=Path("out/sample_bag"), help="bag to replay")
    parser.add_argument("--out", type=Path, default=Path("out/demo"), help="output directory (replaced)")
    parser.add_argument("--model", type=Path, help="checkpoint directory; default the embedded small model")
    # Half speed: the node runs on bag time (/clock), so a busy 2-core CPU still plans every 0.5 s of bag time.
    parser.add_argument("--rate", type=float, default=0.5, help="playback speed factor")
    parser.add_argument("--planning-rate", type=float, default=2.0, help="planning.rate_hz, Hz of bag time")
    parser.add_argument("--seed", type=int, default=0, help="planning.seed (-1: fresh randomness per cycle)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (args.bag / "metadata.yaml").is_file():
        print(f"error: no bag at {args.bag} (make setup writes out/sample_bag)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    cycles, status, counts = run_node(args.bag, args.out, args.model, args.rate, args.planning_rate,
                                      args.seed)
    truth = GroundTruth.from_bag(args.bag, ODOMETRY_TOPIC)
    start_ns = int(truth.odom_ns[0])
    scores = [score_cycle(c.t0_ns, c.candidates[max(c.selected, 0)], c.reasoning, truth, start_ns)
              for c in cycles]
    pngs = write_media(args.out, args.bag, cycles, scores, truth)
    summary = summarize_run(cycles, status, scores)
    summary.update({"bag": str(args.bag), "pngs": len(pngs), "recorded": counts,
                    "wall_s": round(time.perf_counter() - start, 1)})
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
