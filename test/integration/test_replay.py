"""Replaying synthetic bags into real rclpy (localhost DDS): timing, /clock, remapping, looping, recording."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from nav_msgs.msg import Odometry  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from rosbags.highlevel import AnyReader  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402

from alpamayo_ros.msg import TrajectorySet  # noqa: E402
from alpamayo_ros.ros.bag_io import BagRecorder, msg_class, typestore_for  # noqa: E402
from alpamayo_ros.ros.replay import BagPlayer, ReplayConfig  # noqa: E402
from alpamayo_ros.sim.bag import ODOMETRY_TOPIC, BagConfig, write_bag  # noqa: E402
from alpamayo_ros.sim.scenarios import generate_scenario  # noqa: E402
from alpamayo_ros.sim.scene import ScenarioKind  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
from probe import spin_in_background  # noqa: E402

pytestmark = pytest.mark.ros

NS = 1_000_000_000
REPO = Path(__file__).resolve().parents[2]
DURATION_S = 3.0
ODOM_HZ = 20.0
ODOM_OUT = "/replay_test/odometry"
PLAN_TOPIC = "/alpamayo/output/trajectory_set"
TF_AVAILABLE = msg_class("tf2_msgs/msg/TFMessage") is not None


@pytest.fixture(scope="module")
def sim_bags(tmp_path_factory) -> dict[str, Path]:
    """A 3 s synthetic bag (108 x 192 JPEG, 20 Hz odometry, 50 Hz /clock) in both storage formats."""
    root = tmp_path_factory.mktemp("replay")
    scenario = generate_scenario(0, ScenarioKind.KEEP_LANE, DURATION_S)
    bags = {}
    for storage in ("mcap", "sqlite3"):
        bags[storage] = root / storage
        write_bag(bags[storage], scenario, BagConfig(storage=storage, image_scale=0.1, odom_rate_hz=ODOM_HZ,
                                                     clock_rate_hz=50.0))
    return bags


def bag_stamps(path: Path, topic: str) -> list[int]:
    with AnyReader([path]) as reader:
        return [t for c, t, _ in reader.messages() if c.topic == topic]


class Listener(Node):
    """Records (receive time, stamp ns) of odometry and /clock messages."""

    def __init__(self, context, odom_topic: str = ODOM_OUT):
        super().__init__("replay_listener", context=context)
        self.odometry: list[tuple[float, int]] = []
        self.clock: list[int] = []
        reliable = QoSProfile(depth=500)
        self.create_subscription(Odometry, odom_topic, self._on_odometry, reliable)
        self.create_subscription(Clock, "/clock", self._on_clock, reliable)

    def _on_odometry(self, msg: Odometry) -> None:
        self.odometry.append((time.monotonic(), msg.header.stamp.sec * NS + msg.header.stamp.nanosec))

    def _on_clock(self, msg: Clock) -> None:
        self.clock.append(msg.clock.sec * NS + msg.clock.nanosec)


def wait_for(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_rate_two_halves_the_gaps_with_clock_remap_and_skipped_types(ros_context, sim_bags):
    bag = sim_bags["mcap"]
    player_node = Node("bag_player", context=ros_context)
    listener = Listener(ros_context)
    stop_spinning = spin_in_background(ros_context, (listener,))
    try:
        player = BagPlayer(player_node, bag, ReplayConfig(rate=2.0, remap=((ODOMETRY_TOPIC, ODOM_OUT),)))
        assert player.topics[ODOMETRY_TOPIC] == ODOM_OUT
        assert player.wait_for_subscribers([ODOM_OUT, "/clock"], timeout_s=5.0)
        player.play(blocking=False)
        assert player.wait(timeout_s=15.0)
        expected = bag_stamps(bag, ODOMETRY_TOPIC)
        assert wait_for(lambda: len(listener.odometry) >= len(expected), 3.0)
        assert listener.count_publishers(ODOMETRY_TOPIC) == 0  # only the remapped name is published
    finally:
        stop_spinning()
        player_node.destroy_node()

    received = np.array([s for _, s in listener.odometry])
    np.testing.assert_array_equal(received, expected)
    assert player.stats.published[ODOM_OUT] == len(expected) == int(DURATION_S * ODOM_HZ)
    # Relative timing: at rate 2 the receive gaps are half the stamp gaps (loose: loaded CI machines).
    wall = np.array([w for w, _ in listener.odometry])
    stamp_span_s = (received[-1] - received[0]) / NS
    assert 0.7 * stamp_span_s / 2 < wall[-1] - wall[0] < 1.3 * stamp_span_s / 2
    assert 0.7 * 0.025 < np.median(np.diff(wall)) < 1.3 * 0.025
    # /clock comes from bag time, is monotonic and stays inside the bag.
    clock = np.array(listener.clock)
    assert len(clock) > 0.5 * 50.0 * stamp_span_s / 2
    assert np.all(np.diff(clock) >= 0)
    assert clock[0] >= player.start_time_ns and clock[-1] <= player.end_time_ns
    # Topics whose types rclpy cannot import are counted, not silently dropped.
    if not TF_AVAILABLE:
        assert player.stats.skipped_types == {"/tf": "tf2_msgs/msg/TFMessage",
                                              "/tf_static": "tf2_msgs/msg/TFMessage"}
        assert player.stats.skipped_messages == int(DURATION_S * ODOM_HZ) + 1


def test_loop_with_start_offset_from_sqlite3(ros_context, sim_bags):
    bag = sim_bags["sqlite3"]
    player_node = Node("bag_player", context=ros_context)
    listener = Listener(ros_context, odom_topic=ODOMETRY_TOPIC)
    stop_spinning = spin_in_background(ros_context, (listener,))
    try:
        config = ReplayConfig(rate=4.0, loop=True, start_offset_s=1.0, topics=(ODOMETRY_TOPIC,))
        player = BagPlayer(player_node, bag, config)
        assert set(player.topics) == {ODOMETRY_TOPIC}
        assert player.wait_for_subscribers([ODOMETRY_TOPIC, "/clock"], timeout_s=5.0)
        player.play(blocking=False)
        assert wait_for(lambda: player.stats.loops_completed >= 2, 15.0)
        player.stop()
        assert player.wait(timeout_s=5.0)
    finally:
        stop_spinning()
        player_node.destroy_node()

    first_kept = player.start_time_ns + NS  # the 1 s offset
    stamps = np.array([s for _, s in listener.odometry])
    assert np.all(stamps >= first_kept)
    per_loop = sum(1 for t in bag_stamps(bag, ODOMETRY_TOPIC) if t >= first_kept)
    assert per_loop == int((DURATION_S - 1.0) * ODOM_HZ)
    assert len(stamps) >= 2 * per_loop
    assert np.sum(np.diff(stamps) < 0) >= 1  # time jumps back when the second loop starts
    np.testing.assert_array_equal(stamps[:per_loop], stamps[per_loop:2 * per_loop])
    assert np.sum(np.diff(listener.clock) < 0) >= 1


def test_record_planner_outputs_and_standard_types(ros_context, sim_bags, tmp_path):
    """A fake planner answers each replayed odometry with a TrajectorySet; both are recorded and read back."""
    bag = sim_bags["mcap"]
    player_node = Node("bag_player", context=ros_context)
    planner = Node("fake_planner", context=ros_context)
    plan_pub = planner.create_publisher(TrajectorySet, PLAN_TOPIC, 10)
    sent: list[int] = []

    def on_odometry(msg: Odometry) -> None:
        plan = TrajectorySet()
        plan.header = msg.header
        plan.observation_time = msg.header.stamp
        plan.scores = [0.5, 0.25]
        plan.reasoning = ["Keep lane and follow the road", "Slow down"]
        plan.selected_index = 0
        plan.model_id = "fake"
        plan_pub.publish(plan)
        sent.append(msg.header.stamp.sec * NS + msg.header.stamp.nanosec)

    planner.create_subscription(Odometry, ODOM_OUT, on_odometry, QoSProfile(depth=100))
    player = BagPlayer(player_node, bag, ReplayConfig(rate=4.0, topics=(ODOMETRY_TOPIC,),
                                                      remap=((ODOMETRY_TOPIC, ODOM_OUT),)))
    recorder = BagRecorder(player_node, tmp_path / "recorded", [PLAN_TOPIC, ODOM_OUT],
                           clock_ns=player.bag_time_ns)
    stop_spinning = spin_in_background(ros_context, (planner, player_node))
    try:
        assert wait_for(lambda: not recorder.pending_topics, 5.0), recorder.pending_topics
        assert player.wait_for_subscribers([ODOM_OUT], timeout_s=5.0, count=2)  # the planner and the recorder
        assert wait_for(lambda: plan_pub.get_subscription_count() >= 1, 5.0)
        player.play()
        total = int(DURATION_S * ODOM_HZ)
        assert wait_for(lambda: recorder.counts[PLAN_TOPIC] >= total, 5.0), recorder.counts
    finally:
        counts = recorder.close()
        stop_spinning()
    assert counts == {PLAN_TOPIC: total, ODOM_OUT: total}
    assert len(sent) == total

    store = typestore_for(["alpamayo_ros/msg/TrajectorySet"])
    with AnyReader([tmp_path / "recorded"], default_typestore=store) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        assert types == {PLAN_TOPIC: "alpamayo_ros/msg/TrajectorySet", ODOM_OUT: "nav_msgs/msg/Odometry"}
        plans, odometry = [], []
        for connection, stamp_ns, data in reader.messages():
            message = reader.deserialize(data, connection.msgtype)
            assert player.start_time_ns <= stamp_ns <= player.end_time_ns  # recorded in bag time
            (plans if connection.topic == PLAN_TOPIC else odometry).append(message)
    assert [p.header.stamp.sec * NS + p.header.stamp.nanosec for p in plans] == sent
    assert list(plans[0].reasoning) == ["Keep lane and follow the road", "Slow down"]
    np.testing.assert_allclose(plans[0].scores, [0.5, 0.25])
    assert plans[0].model_id == "fake" and plans[0].selected_index == 0
    odometry_stamps = [o.header.stamp.sec * NS + o.header.stamp.nanosec for o in odometry]
    assert odometry_stamps == bag_stamps(bag, ODOMETRY_TOPIC)


def test_replay_cli_plays_remaps_and_records(sim_bags, tmp_path):
    out = tmp_path / "cli_recorded"
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=python_path)
    result = subprocess.run(
        [sys.executable, "-m", "alpamayo_ros.ros.replay", str(sim_bags["sqlite3"]), "--rate", "5",
         "--remap", f"{ODOMETRY_TOPIC}:=/cli/odometry", "--record", str(out),
         "--record-topics", "/cli/odometry", "--record-drain", "0.3"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "recorded" in result.stdout
    if not TF_AVAILABLE:
        assert "skipping 2 topic(s)" in result.stderr and "tf2_msgs/msg/TFMessage" in result.stderr
    with AnyReader([out]) as reader:
        (connection,) = reader.connections
        assert (connection.topic, connection.msgtype) == ("/cli/odometry", "nav_msgs/msg/Odometry")
        messages = [reader.deserialize(d, c.msgtype) for c, _, d in reader.messages()]
    assert len(messages) == int(DURATION_S * ODOM_HZ)
    assert messages[0].child_frame_id == "base_link"
