"""CLI: generate a synthetic scenario and write it as a rosbag2 bag.

    python -m alpamayo_ros.sim.make_bag OUT [--seed 0] [--scenario red_light|...|random] [--duration 15]
        [--image-scale 0.1667] [--format mcap|sqlite3] [--camera-rate 10] [--odom-rate 50] [--raw]
        [--jpeg-quality 75] [--camera-offsets-ms A,B,C,D] [--camera-jitter-ms J] [--overwrite]

With no options it writes the sample bag (`write_sample_bag`): seed 0, red light, 15 s, 180 x 320 JPEG.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from alpamayo_ros.sim.bag import BagConfig, BagSummary, write_bag
from alpamayo_ros.sim.scenarios import generate_scenario
from alpamayo_ros.sim.scene import EXPLANATIONS, Scenario, ScenarioKind

SAMPLE_SEED = 0
SAMPLE_KIND = ScenarioKind.RED_LIGHT  # stop, wait, go: three causes within 15 s
SAMPLE_DURATION_S = 15.0
SAMPLE_BAG_CONFIG = BagConfig(image_scale=1.0 / 6.0, jpeg_quality=75)  # 180 x 320 JPEG, about 7 MB


def write_sample_bag(out_path: str | Path) -> BagSummary:
    """The small sample bag used by demos and setup (deterministic; a few seconds to write)."""
    scenario = generate_scenario(SAMPLE_SEED, SAMPLE_KIND, SAMPLE_DURATION_S)
    return write_bag(out_path, scenario, SAMPLE_BAG_CONFIG)


def _parse_ms_list(text: str) -> tuple[int, ...]:
    return tuple(int(round(float(v) * 1e6)) for v in text.split(","))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m alpamayo_ros.sim.make_bag",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="bag directory to create")
    parser.add_argument("--seed", type=int, default=SAMPLE_SEED)
    parser.add_argument("--scenario", default=SAMPLE_KIND.value,
                        choices=[k.value for k in ScenarioKind] + ["random"],
                        help="'random': drawn from the seed")
    parser.add_argument("--duration", type=float, default=SAMPLE_DURATION_S, help="seconds")
    parser.add_argument("--image-scale", type=float, default=SAMPLE_BAG_CONFIG.image_scale,
                        help="fraction of 1080x1920 (0.25 -> 270x480, 0.1667 -> 180x320, 0.1 -> 108x192)")
    parser.add_argument("--format", choices=["mcap", "sqlite3"], default="mcap")
    parser.add_argument("--camera-rate", type=float, default=10.0, help="Hz, 10..30")
    parser.add_argument("--odom-rate", type=float, default=50.0, help="Hz, 10..100")
    parser.add_argument("--raw", action="store_true",
                        help="rgb8 sensor_msgs/Image instead of JPEG CompressedImage")
    parser.add_argument("--jpeg-quality", type=int, default=SAMPLE_BAG_CONFIG.jpeg_quality)
    parser.add_argument("--camera-offsets-ms", type=_parse_ms_list, default=(),
                        help="constant stamp offset per camera (rig order), e.g. 0,5,10,15")
    parser.add_argument("--camera-jitter-ms", type=float, default=0.0,
                        help="uniform per-frame stamp jitter, +-ms")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it is an existing bag")
    return parser


def describe(scenario: Scenario, summary: BagSummary) -> str:
    """A human-readable summary of what was written."""
    lines = [f"wrote {summary.path} ({summary.storage}, {summary.size_bytes / 1e6:.1f} MB) "
             f"in {summary.wall_s:.1f} s",
             f"scenario: {scenario.kind.value}, seed {scenario.seed}, {summary.duration_s:.1f} s, "
             f"cruise {scenario.cruise_speed_mps:.1f} m/s",
             "causes:"]
    lines += [f"  {start:5.1f} .. {end:5.1f} s  {EXPLANATIONS[cause]}"
              for start, end, cause in scenario.cause_segments()]
    lines.append("topics:")
    lines += [f"  {count:6d}  {topic}" for topic, count in summary.message_counts.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out.exists():
        if not (args.overwrite and (args.out / "metadata.yaml").is_file()):
            print(f"error: {args.out} exists (use --overwrite to replace an existing bag)", file=sys.stderr)
            return 2
        shutil.rmtree(args.out)
    try:
        config = BagConfig(
            storage=args.format, image_scale=args.image_scale, compressed=not args.raw,
            jpeg_quality=args.jpeg_quality, camera_rate_hz=args.camera_rate, odom_rate_hz=args.odom_rate,
            camera_offsets_ns=args.camera_offsets_ms,
            camera_jitter_ns=int(round(args.camera_jitter_ms * 1e6)))
        kind = None if args.scenario == "random" else args.scenario
        scenario = generate_scenario(args.seed, kind, args.duration)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = write_bag(args.out, scenario, config)
    print(describe(scenario, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
