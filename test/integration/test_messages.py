"""The generated message types: import, serialization round trip, type hash, cross-process pub/sub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

rclpy = pytest.importorskip("rclpy")
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402

from alpamayo_ros.msg import PlannerStatus, TrajectorySet  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from publish_trajectory_set import known_trajectory_set  # noqa: E402


def test_trajectory_set_round_trips_through_serialization():
    msg = known_trajectory_set(num_paths=3, num_poses=64)
    data = serialize_message(msg)
    back = deserialize_message(data, TrajectorySet)
    assert back == msg
    assert len(back.trajectories) == 3 and len(back.trajectories[2].poses) == 64
    assert back.trajectories[2].poses[63].pose.position.y == pytest.approx(0.02 * 64)
    assert list(back.scores) == pytest.approx([0.0, 0.25, 0.5])
    assert list(back.flags) == [0, 0, TrajectorySet.FLAG_NON_FINITE]
    assert back.reasoning[1] == "candidate 1: keep lane"


def test_planner_status_round_trips_through_serialization():
    msg = PlannerStatus(state=PlannerStatus.STATE_ACTIVE, cycles_planned=7, cycles_skipped=2)
    msg.skip_reasons, msg.skip_counts = ["busy", "cameras_out_of_sync"], [1, 1]
    msg.stage_names, msg.stage_latency_ms = ["vision", "expert"], [1.5, 2.5]
    back = deserialize_message(serialize_message(msg), PlannerStatus)
    assert back == msg and back.state == 2 and list(back.skip_counts) == [1, 1]


@pytest.mark.parametrize("name", ["TrajectorySet", "PlannerStatus"])
def test_type_hash_matches_rosbags(name):
    """Bags written with rosbags must carry the same RIHS01 hash that rosidl generated for the node."""
    from ament_index_python.packages import get_package_share_directory
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    share = Path(get_package_share_directory("alpamayo_ros"))
    generated = json.loads((share / "msg" / f"{name}.json").read_text())["type_hashes"][0]
    store = get_typestore(Stores.ROS2_JAZZY)
    store.register(get_types_from_msg((REPO / "msg" / f"{name}.msg").read_text(), f"alpamayo_ros/msg/{name}"))
    assert generated["type_name"] == f"alpamayo_ros/msg/{name}"
    assert generated["hash_string"] == store.hash_rihs01(f"alpamayo_ros/msg/{name}")


def test_trajectory_set_crosses_processes(ros_context):
    """A publisher in another process reaches a subscriber here over real DDS, content intact."""
    talker = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "helpers" / "publish_trajectory_set.py")],
        env=os.environ.copy(),
    )
    node = rclpy.create_node("trajectory_set_listener", context=ros_context)
    received: list[TrajectorySet] = []
    node.create_subscription(TrajectorySet, "/test/trajectory_set", received.append, 10)
    executor = rclpy.executors.SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + 30.0
        while len(received) < 3 and time.monotonic() < deadline and talker.poll() is None:
            executor.spin_once(timeout_sec=0.1)
    finally:
        talker.terminate()
        talker.wait(timeout=10)
        executor.shutdown()
        node.destroy_node()
    assert len(received) >= 3, "no TrajectorySet arrived from the other process"
    assert received[-1] == known_trajectory_set()
    assert talker.returncode in (0, -15)
