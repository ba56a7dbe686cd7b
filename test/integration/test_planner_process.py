"""What planner.launch.py does, without `launch`: the installed executable with the launch file's params
file, overrides and remaps, fed by a bag written with the sim writer and replayed with /clock.

Checks: the process starts, plans from the bag (use_sim_time; output stamps are bag camera stamps), keeps
running, and exits with code 0 on SIGINT.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from alpamayo_ros.msg import PlannerStatus, TrajectorySet  # noqa: E402
from alpamayo_ros.ros.convert import stamp_to_ns  # noqa: E402
from alpamayo_ros.ros.replay import BagPlayer, ReplayConfig  # noqa: E402
from alpamayo_ros.sim.bag import BagConfig, write_bag  # noqa: E402
from alpamayo_ros.sim.scene import ScenarioKind  # noqa: E402
from alpamayo_ros.sim.scenarios import generate_scenario  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from tiny_checkpoint import write_tiny_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LAUNCH = (REPO / "launch" / "planner.launch.py").read_text()


def _launch_remaps(prefix: str = "/sensors/camera", odometry: str = "/localization/odometry") -> list[str]:
    """The remaps planner.launch.py generates for its default arguments (cameras read from the file)."""
    cameras = re.findall(r'"(camera_\w+)"', LAUNCH.split("CAMERAS = (")[1].split(")")[0])
    assert len(cameras) == 4
    remaps = [f"~/input/odometry:={odometry}"]
    for cam in cameras:
        remaps += [f"~/input/camera/{cam}/image/compressed:={prefix}/{cam}/image_raw/compressed",
                   f"~/input/camera/{cam}/camera_info:={prefix}/{cam}/camera_info"]
    return remaps


def _executable() -> str:
    """lib/alpamayo_ros/planner_node, as `ros2 run alpamayo_ros planner_node` finds it (pip or colcon)."""
    prefix = Path(sysconfig.get_paths()["data"])
    return str(prefix / "lib" / "alpamayo_ros" / "planner_node")


def test_installed_node_plans_from_a_replayed_bag_and_exits_cleanly(tmp_path, ros_context):
    checkpoint = write_tiny_checkpoint(tmp_path / "ckpt")
    scenario = generate_scenario(3, ScenarioKind.LEAD_BRAKING, duration_s=6.0)
    summary = write_bag(tmp_path / "bag", scenario, BagConfig(image_scale=0.1, odom_rate_hz=50.0))
    args = [sys.executable, _executable(), "--ros-args",
            "--params-file", str(REPO / "config" / "planner.yaml"),
            "-r", "__node:=alpamayo_planner",
            "-p", "use_sim_time:=true", "-p", f"model.path:={checkpoint}", "-p", "model.device:=cpu",
            "-p", "model.max_new_tokens:=8", "-p", "model.warmup:=false", "-p", "planning.rate_hz:=2.0",
            # One sample: the test is about the process, not sampling; it keeps the CPU load of the run low.
            "-p", "planning.num_samples:=1",
            "-p", "validator.max_lateral_jerk_mps3:=.inf", "-p", "validator.max_steering_rate_radps:=.inf",
            "-p", "validator.max_plan_age_s:=.inf", "-p", "planning.max_input_age_s:=5.0"]
    for remap in _launch_remaps():
        args += ["-r", remap]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # Output to a file, not a pipe: a pipe nobody drains blocks the node once ~64 KB of log lines fill it.
    log = tmp_path / "planner.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(args, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True)
    proc.log = log
    node = rclpy.create_node("bag_feeder", context=ros_context)
    sets: list[TrajectorySet] = []
    statuses: list[PlannerStatus] = []
    node.create_subscription(TrajectorySet, "/alpamayo_planner/output/trajectory_set", sets.append, 10)
    node.create_subscription(PlannerStatus, "/alpamayo_planner/output/status", statuses.append, 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        # Looping: on a loaded machine the first cycles may outlast one pass of the bag; /clock jumps back at
        # each start and the node drops its buffers, so every plan still comes from one pass.
        player = BagPlayer(node, summary.path, ReplayConfig(rate=0.5, loop=True))
        inputs = [t for t in player.topics.values() if t.startswith(("/sensors/", "/localization/"))]
        assert len(inputs) == 9, inputs
        assert player.wait_for_subscribers(inputs, timeout_s=90.0), _output(proc)
        player.play(blocking=False)
        deadline = time.monotonic() + 180.0
        while len(sets) < 2 and time.monotonic() < deadline and proc.poll() is None:
            executor.spin_once(timeout_sec=0.1)
        player.stop()
        assert proc.poll() is None, f"planner died: {_output(proc)}"
        assert len(sets) >= 2, (f"no plans from the bag; last status: {_status(statuses)}; "
                                f"planner said: {_stop(proc)}")
        camera_stamps = _bag_stamps(summary.path, "/sensors/camera/camera_front_wide_120fov/image_raw/compressed")
        assert all(stamp_to_ns(s.header.stamp) in camera_stamps for s in sets), "t0 must be a bag camera stamp"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, _output(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        executor.shutdown()
        node.destroy_node()


def _bag_stamps(path: Path, topic: str) -> set[int]:
    from rosbags.highlevel import AnyReader

    with AnyReader([path]) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return {stamp_to_ns(reader.deserialize(raw, c.msgtype).header.stamp)
                for c, _, raw in reader.messages(connections=connections)}


def _output(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        return "(still running)"
    return proc.log.read_text()[-3000:]


def _stop(proc: subprocess.Popen) -> str:
    """Interrupt the planner and return the end of what it printed."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
    return proc.log.read_text()[-3000:]


def _status(statuses: list[PlannerStatus]) -> str:
    if not statuses:
        return "none received"
    last = statuses[-1]
    skips = dict(zip(last.skip_reasons, last.skip_counts))
    return f"state={last.state} planned={last.cycles_planned} skipped={skips} message={last.message!r}"
