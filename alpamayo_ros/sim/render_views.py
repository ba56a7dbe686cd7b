"""CLI: render one PNG per camera of a synthetic scene (the images in docs/images).

    python -m alpamayo_ros.sim.render_views docs/images [--seed 1] [--scenario red_light] [--time 9.5]
        [--image-scale 0.25] [--supersample 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

from alpamayo_ros.sim.cameras import camera_rig
from alpamayo_ros.sim.render import RenderConfig, SceneRenderer
from alpamayo_ros.sim.scenarios import generate_scenario
from alpamayo_ros.sim.scene import ScenarioKind


def render_views(out_dir: Path, seed: int, kind: ScenarioKind, t_s: float, image_scale: float,
                 supersample: int) -> list[Path]:
    """Write `<camera>.png` for the four cameras at scenario time `t_s`; returns the paths."""
    scenario = generate_scenario(seed, kind, max(20.0, t_s + 1.0))
    cameras = camera_rig(image_scale)
    renderer = SceneRenderer(scenario, cameras, RenderConfig(supersample=supersample))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for camera, image in zip(cameras, renderer.render_many([c.name for c in cameras], t_s)):
        path = out_dir / f"{camera.name}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alpamayo_ros.sim.render_views",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    # Defaults: the ego waits at a red light while a car crosses in front of it.
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scenario", default=ScenarioKind.RED_LIGHT.value,
                        choices=[k.value for k in ScenarioKind])
    parser.add_argument("--time", type=float, default=9.5, help="scenario time, s")
    parser.add_argument("--image-scale", type=float, default=0.25, help="0.25 -> 270x480")
    parser.add_argument("--supersample", type=int, default=3, help="anti-aliasing factor, 1..4")
    args = parser.parse_args(argv)
    try:
        paths = render_views(args.out_dir, args.seed, ScenarioKind(args.scenario), args.time,
                             args.image_scale, args.supersample)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
