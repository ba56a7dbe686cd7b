"""Open-loop evaluation of the planner's model on any bag with the standard topics, or on cached scenes.

    alpamayo-eval BAG [--model CHECKPOINT_DIR] [--out out/eval] [--rate 2] [--num-samples 1] [--seed 0]
        [--selection first] [--device auto] [--dtype auto] [--max-new-tokens 64] [--max-cycles N]
        [--camera-topic /sensors/camera/{camera}/image_raw] [--odometry-topic /localization/odometry]

The bag is read offline with rosbags and fed, in bag-time order, into the planner's own `PlanningCore` (the
synchronisation, history and validation the node runs), ticking at `--rate` Hz of bag time; every tick plans,
none is skipped for being busy. The candidate the core selects is scored against the driven future: the
odometry poses at t0 + 0.1 … 6.4 s in the ego frame at t0. Cause accuracy needs `/ground_truth/cause` (or
`/ground_truth/explanation`) and is left out without it. Writes `<out>/metrics.json`, `errors.png` (error
per waypoint time) and `timeline.png` (ADE per cycle, green where the reasoning names the true cause).
Without `--model` the embedded small model runs; with it, any checkpoint directory (`save_pretrained` or
the released Alpamayo-R1-10B layout).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from rosbags.highlevel import AnyReader

from alpamayo_ros.planner.cycle import InferenceEngine, PlannerConfig, PlanningCore
from alpamayo_ros.planner.engine import ModelEngine, load_engine
from alpamayo_ros.planner.images import decode_compressed, decode_raw
from alpamayo_ros.planner.rotations import quat_normalize, quat_to_matrix
from alpamayo_ros.planner.selection import SelectionMode, select
from alpamayo_ros.planner.types import NS_PER_S, EgoSample, Frame, Plan, Skip
from alpamayo_ros.planner.validator import NoValidPolicy
from alpamayo_ros.sim.dataset import SceneDataset
from alpamayo_ros.sim.plots import bar_timeline, line_chart
from alpamayo_ros.sim.metrics import (
    HORIZONS_S,
    WAYPOINT_DT_S,
    CycleScore,
    cause_from_label,
    cause_from_text,
    displacement_errors,
    summarize,
)
from alpamayo_ros.sim.scene import Cause

logger = logging.getLogger(__name__)

CAUSE_TOPIC = "/ground_truth/cause"
EXPLANATION_TOPIC = "/ground_truth/explanation"
FUTURE_PATH_TOPIC = "/ground_truth/future_path"
NUM_WAYPOINTS = 64  # t0 + 0.1 … 6.4 s


def _stamp_ns(stamp: object) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


@dataclass
class GroundTruth:
    """What a bag says happened: the odometry track and, where recorded, the causes and the future paths."""

    odom_ns: np.ndarray  # [N] int64 stamps, increasing
    odom_xyz: np.ndarray  # [N, 3] float64 positions in the odometry frame, m
    odom_quat: np.ndarray  # [N, 4] float64 orientations (x, y, z, w)
    cause_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [M] stamps of cause labels
    causes: list[Cause | None] = field(default_factory=list)  # [M]
    future_paths: dict[int, np.ndarray] = field(default_factory=dict)  # stamp -> [T, 3] recorded future

    @classmethod
    def from_bag(cls, bag: str | Path, odometry_topic: str) -> GroundTruth:
        """Read the odometry, the cause labels (the cause topic, else the explanation topic) and the future
        paths of a bag.

        Raises:
            ValueError: the bag has no odometry on `odometry_topic`.
        """
        odom: list[tuple[int, np.ndarray, np.ndarray]] = []
        labels: dict[str, list[tuple[int, Cause | None]]] = {CAUSE_TOPIC: [], EXPLANATION_TOPIC: []}
        paths: dict[int, np.ndarray] = {}
        with AnyReader([Path(bag)]) as reader:
            topics = (odometry_topic, FUTURE_PATH_TOPIC, *labels)
            connections = [c for c in reader.connections if c.topic in topics]
            for connection, stamp_ns, data in reader.messages(connections=connections):
                msg = reader.deserialize(data, connection.msgtype)
                if connection.topic == odometry_topic:
                    p, q = msg.pose.pose.position, msg.pose.pose.orientation
                    odom.append((_stamp_ns(msg.header.stamp), np.array([p.x, p.y, p.z]),
                                 np.array([q.x, q.y, q.z, q.w])))
                elif connection.topic == FUTURE_PATH_TOPIC:
                    points = [(s.pose.position.x, s.pose.position.y, s.pose.position.z) for s in msg.poses]
                    paths[_stamp_ns(msg.header.stamp)] = np.array(points, np.float64).reshape(-1, 3)
                elif connection.topic == CAUSE_TOPIC:
                    labels[CAUSE_TOPIC].append((stamp_ns, cause_from_label(msg.data)))
                else:
                    labels[EXPLANATION_TOPIC].append((stamp_ns, cause_from_text(msg.data)))
        if not odom:
            raise ValueError(f"{bag} has no odometry on {odometry_topic}")
        odom.sort(key=lambda item: item[0])
        timeline = labels[CAUSE_TOPIC] or labels[EXPLANATION_TOPIC]
        return cls(np.array([o[0] for o in odom], np.int64), np.stack([o[1] for o in odom]),
                   np.stack([o[2] for o in odom]), np.array([t for t, _ in timeline], np.int64),
                   [c for _, c in timeline], paths)

    @property
    def has_causes(self) -> bool:
        return len(self.causes) > 0

    def odometry_future(self, t0_ns: int, num_points: int = NUM_WAYPOINTS) -> np.ndarray | None:
        """Driven positions at t0 + 0.1 … t0 + num_points·0.1 s in the ego frame at t0, from the odometry
        (positions interpolated linearly, the t0 orientation from the nearest sample) -> [T, 3], or None when
        the odometry does not cover that span.
        """
        step_ns = round(WAYPOINT_DT_S * NS_PER_S)
        times = t0_ns + step_ns * np.arange(0, num_points + 1)  # [T+1], t0 first
        if times[0] < self.odom_ns[0] or times[-1] > self.odom_ns[-1]:
            return None
        base = self.odom_ns.astype(np.float64)
        xyz = np.stack([np.interp(times.astype(np.float64), base, self.odom_xyz[:, a]) for a in range(3)], -1)
        nearest = int(np.argmin(np.abs(self.odom_ns - t0_ns)))
        rot = quat_to_matrix(quat_normalize(self.odom_quat[nearest]))  # [3, 3] ego -> odom
        return (xyz[1:] - xyz[0]) @ rot  # R^T (p - p0) for every row

    def future_xyz(self, t0_ns: int, num_points: int = NUM_WAYPOINTS) -> np.ndarray | None:
        """The driven future at t0 -> [T, 3] in the ego frame at t0: from the odometry where it covers the
        horizon, else the recorded /ground_truth/future_path stamped within 1 ms of t0, else None."""
        future = self.odometry_future(t0_ns, num_points)
        if future is not None or not self.future_paths:
            return future
        stamps = np.fromiter(self.future_paths, np.int64)
        nearest = int(stamps[np.argmin(np.abs(stamps - t0_ns))])
        path = self.future_paths[nearest]
        return path[:num_points] if abs(nearest - t0_ns) <= 1_000_000 and len(path) >= num_points else None

    def cause_at(self, t0_ns: int) -> Cause | None:
        """The last cause label stamped at or before t0 (None before the first or without labels)."""
        index = int(np.searchsorted(self.cause_ns, t0_ns, side="right")) - 1
        return self.causes[index] if index >= 0 else None


def score_cycle(t0_ns: int, selected_xyz: np.ndarray, reasoning: str, truth: GroundTruth,
                start_ns: int = 0) -> CycleScore:
    """Score one planned cycle: its selected trajectory [T, 3] against the driven future, its reasoning
    against the cause at t0. `t0_s` of the result is relative to `start_ns`."""
    future = truth.future_xyz(t0_ns, len(selected_xyz))
    errors = None if future is None else displacement_errors(selected_xyz, future)
    return CycleScore(t0_s=(t0_ns - start_ns) / NS_PER_S, errors=errors, reasoning=reasoning,
                      true_cause=truth.cause_at(t0_ns) if truth.has_causes else None)


@dataclass(frozen=True)
class EvalConfig:
    """How a bag is replayed through the planning core."""

    rate_hz: float = 2.0  # planning ticks per second of bag time (the node's planning.rate_hz default)
    num_samples: int = PlannerConfig.num_samples  # candidates per cycle (planning.num_samples)
    seed: int | None = 0  # sampling seed of every cycle; None = fresh randomness
    selection: SelectionMode = PlannerConfig.selection_mode  # planning.selection
    camera_topic: str = "/sensors/camera/{camera}/image_raw"  # "/compressed" is appended when the bag has it
    odometry_topic: str = "/localization/odometry"
    max_cycles: int | None = None  # stop after this many planned cycles


def _camera_topics(reader: AnyReader, cameras: tuple[str, ...], template: str) -> dict[str, str]:
    """Bag topic -> camera name, preferring the compressed topic of each camera."""
    topics = {c.topic for c in reader.connections}
    found: dict[str, str] = {}
    for camera in cameras:
        base = template.format(camera=camera)
        topic = next((t for t in (f"{base}/compressed", base) if t in topics), None)
        if topic is None:
            raise ValueError(f"no image topic for {camera}: the bag has neither {base}/compressed nor {base}")
        found[topic] = camera
    return found


def _frame(msg: object) -> Frame:
    if hasattr(msg, "format"):  # sensor_msgs/CompressedImage
        return Frame(_stamp_ns(msg.header.stamp), decode_compressed(msg.format, msg.data.tobytes()))
    data = msg.data.tobytes()
    rgb = decode_raw(msg.encoding, msg.height, msg.width, msg.step, data, bool(msg.is_bigendian))
    return Frame(_stamp_ns(msg.header.stamp), rgb)


def _sample(msg: object) -> EgoSample:
    p, q, v = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist.linear
    return EgoSample(_stamp_ns(msg.header.stamp), np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]),
                     np.array([v.x, v.y, v.z]))


def evaluate_bag(bag: str | Path, engine: InferenceEngine, cameras: tuple[str, ...],
                 config: EvalConfig = EvalConfig()) -> dict[str, object]:
    """Replay `bag` through a PlanningCore + `engine` and score every planned cycle.

    Flagged candidates are still scored (the evaluation policy publish_as_is); such cycles also count as
    skipped under their reason, as the node counts them.

    Returns:
        {"summary": metrics.summarize(...) + ticks/planned/skipped counts, "skipped_by_reason": {...},
         "latency_ms": {stage: mean}, "cycles": [per-cycle rows]}.
    """
    truth = GroundTruth.from_bag(bag, config.odometry_topic)
    core = PlanningCore(PlannerConfig(num_samples=config.num_samples, seed=config.seed,
                                      selection_mode=config.selection,
                                      no_valid_policy=NoValidPolicy.PUBLISH_AS_IS))
    period_ns = round(NS_PER_S / config.rate_hz)
    rows: list[dict[str, object]] = []
    scores: list[CycleScore] = []
    skipped: dict[str, int] = {}
    latency: dict[str, list[float]] = {}
    ticks = planned = 0
    with AnyReader([Path(bag)]) as reader:
        camera_of = _camera_topics(reader, cameras, config.camera_topic)
        start_ns = reader.start_time
        next_tick = start_ns + period_ns
        wanted = [c for c in reader.connections if c.topic in camera_of or c.topic == config.odometry_topic]

        def tick(now_ns: int) -> None:
            nonlocal ticks, planned
            ticks += 1
            obs = core.build_observation(now_ns)
            outcome = obs if isinstance(obs, Skip) else core.run(obs, engine)
            skip = outcome if isinstance(outcome, Skip) else outcome.skip
            if skip is not None:
                skipped[skip.reason.value] = skipped.get(skip.reason.value, 0) + 1
            if isinstance(outcome, Plan):
                _record(outcome, truth, start_ns, rows, scores, latency)
                planned += skip is None

        def done() -> bool:
            return config.max_cycles is not None and len(rows) >= config.max_cycles

        # Every tick sees the messages stamped (bag time) at or before it, as the node sees them arrive.
        for connection, stamp_ns, data in reader.messages(connections=wanted):
            while stamp_ns > next_tick and not done():
                tick(next_tick)
                next_tick += period_ns
            if done():
                break
            msg = reader.deserialize(data, connection.msgtype)
            if connection.topic == config.odometry_topic:
                core.add_odometry(_sample(msg))
            else:
                core.add_frame(camera_of[connection.topic], _frame(msg))
        while next_tick <= reader.end_time and not done():
            tick(next_tick)
            next_tick += period_ns
    summary = {"ticks": ticks, "cycles_planned": planned, "cycles_skipped": sum(skipped.values()),
               **summarize(scores)}
    return {"summary": summary, "skipped_by_reason": skipped,
            "latency_ms": {stage: float(np.mean(v)) for stage, v in latency.items()}, "cycles": rows}


def _record(plan: Plan, truth: GroundTruth, start_ns: int, rows: list, scores: list, latency: dict) -> None:
    """Score a plan and append its row, score and stage timings."""
    result, index = plan.result, plan.selected_index
    score = score_cycle(plan.observation.t0_ns, np.asarray(result.xyz[index]), result.reasoning[index], truth,
                        start_ns)
    scores.append(score)
    for stage, ms in result.timings_ms.items():
        latency.setdefault(stage, []).append(float(ms))
    rows.append({"t0_s": score.t0_s, "source": plan.source.value, "selected_index": index,
                 "reasoning": score.reasoning, "true_cause": _name(score.true_cause),
                 "named_cause": _name(score.named_cause), "errors": score.errors,
                 "error_per_waypoint": _waypoint_errors(np.asarray(result.xyz[index]), truth,
                                                        plan.observation.t0_ns)})


def _name(cause: Cause | None) -> str | None:
    return None if cause is None else cause.name  # Cause.KEEP_LANE is 0: never test a Cause for truth


def _waypoint_errors(xyz: np.ndarray, truth: GroundTruth, t0_ns: int) -> list[float] | None:
    future = truth.future_xyz(t0_ns, len(xyz))
    return None if future is None else np.linalg.norm(xyz[:, :2] - future[:, :2], axis=-1).round(4).tolist()


def evaluate_scenes(engine: ModelEngine, dataset: SceneDataset, *, stride_s: float = 0.5,
                    seed: int | None = 0, num_samples: int = PlannerConfig.num_samples,
                    selection: SelectionMode = PlannerConfig.selection_mode) -> dict[str, object]:
    """Score the engine on cached scenes at every t0 that is a multiple of `stride_s`: `num_samples`
    candidates per cycle, the one `selection` picks (the node's defaults) and its reasoning are scored. All
    candidates take part in the selection (no validator runs here).

    Returns:
        metrics.summarize(...) plus "scenes" (seed list) and "latency_ms" (median per stage).
    """
    scores: list[CycleScore] = []
    latency: dict[str, list[float]] = {}
    step = round(stride_s / WAYPOINT_DT_S)
    for i in np.flatnonzero(np.round(dataset.t0_s / WAYPOINT_DT_S).astype(np.int64) % step == 0):
        example = dataset.example(int(i))
        obs = example.observation(engine.model.config.io.camera_names)
        result = engine.plan(obs, num_samples=num_samples, seed=seed)
        for stage, ms in result.timings_ms.items():
            latency.setdefault(stage, []).append(float(ms))
        xyz = np.asarray(result.xyz)  # [S, T, 3]
        chosen, _ = select(xyz, selection, np.ones(len(xyz), dtype=bool), WAYPOINT_DT_S)
        errors = displacement_errors(xyz[chosen], example.fut_xyz)
        scores.append(CycleScore(example.t0_s, errors, result.reasoning[chosen], example.cause))
    return {**summarize(scores), "scenes": dataset.seeds, "num_samples": num_samples,
            "selection": selection.value,
            "latency_ms": {stage: float(np.median(v)) for stage, v in latency.items()}}


def write_plots(result: dict[str, object], out: Path) -> list[Path]:
    """errors.png (mean error per waypoint time, ADE/FDE at the horizons in the title) and timeline.png
    (ADE at 6.4 s per cycle, green/red where the reasoning names / misses the true cause)."""
    cycles = [c for c in result["cycles"] if c["error_per_waypoint"] is not None]
    paths = []
    if cycles:
        errors = np.array([c["error_per_waypoint"] for c in cycles])  # [C, T]
        times = WAYPOINT_DT_S * np.arange(1, errors.shape[1] + 1)
        summary = result["summary"]
        title = "  ".join(f"{h:g}s ADE {summary[f'ade_{h:.1f}s']:.2f} FDE {summary[f'fde_{h:.1f}s']:.2f}"
                          for h in HORIZONS_S)
        chart = line_chart({"mean": (times, errors.mean(0)), "median": (times, np.median(errors, 0)),
                            "90th percentile": (times, np.percentile(errors, 90, axis=0))},
                           title, "time after t0 (s)", "xy error (m)")
        paths.append(out / "errors.png")
        cv2.imwrite(str(paths[-1]), cv2.cvtColor(chart, cv2.COLOR_RGB2BGR))
    rows = result["cycles"]
    ade = np.array([np.nan if c["errors"] is None else c["errors"]["ade_6.4s"] for c in rows])
    good = np.array([None if c["true_cause"] is None else c["true_cause"] == c["named_cause"] for c in rows],
                    dtype=object)
    timeline = bar_timeline(np.array([c["t0_s"] for c in rows]), ade, good,
                            "ADE(6.4 s) per cycle, m (green: reasoning names the true cause)")
    paths.append(out / "timeline.png")
    cv2.imwrite(str(paths[-1]), cv2.cvtColor(timeline, cv2.COLOR_RGB2BGR))
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alpamayo-eval", description=__doc__.split("\n")[0])
    defaults = EvalConfig()
    parser.add_argument("bag", type=Path, help="bag directory (MCAP or sqlite3)")
    parser.add_argument("--model", type=Path, help="checkpoint directory; default the embedded small model")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer directory; default <model>/tokenizer")
    parser.add_argument("--out", type=Path, default=Path("out/eval"), help="directory for metrics and plots")
    parser.add_argument("--rate", type=float, default=defaults.rate_hz, help="planning ticks per bag second")
    parser.add_argument("--num-samples", type=int, default=defaults.num_samples)
    parser.add_argument("--seed", type=int, default=0, help="sampling seed per cycle; -1: fresh randomness")
    parser.add_argument("--selection", default=defaults.selection.value,
                        choices=[m.value for m in SelectionMode])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--max-new-tokens", type=int, default=64, help="CoC token cap per cycle")
    parser.add_argument("--max-cycles", type=int, help="stop after this many planned cycles")
    parser.add_argument("--camera-topic", default=defaults.camera_topic, help="with {camera} for the name")
    parser.add_argument("--odometry-topic", default=defaults.odometry_topic)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = EvalConfig(rate_hz=args.rate, num_samples=args.num_samples,
                        seed=None if args.seed < 0 else args.seed,
                        selection=SelectionMode(args.selection), camera_topic=args.camera_topic,
                        odometry_topic=args.odometry_topic, max_cycles=args.max_cycles)
    try:
        engine = load_engine(backend="tiny" if args.model is None else "checkpoint",
                             path="" if args.model is None else str(args.model),
                             tokenizer_path="" if args.tokenizer is None else str(args.tokenizer),
                             device=args.device, dtype=args.dtype, max_new_tokens=args.max_new_tokens,
                             num_cameras=4, warmup=False)
        result = evaluate_bag(args.bag, engine, engine.model.config.io.camera_names, config)
    except (OSError, ValueError, RuntimeError) as error:  # CheckpointError is a RuntimeError
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    result["bag"], result["model_id"] = str(args.bag), engine.model_id
    (args.out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    plots = write_plots(result, args.out)
    print(json.dumps({"summary": result["summary"], "skipped_by_reason": result["skipped_by_reason"],
                      "latency_ms": result["latency_ms"], "outputs": [str(args.out / "metrics.json"),
                                                                      *map(str, plots)]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
