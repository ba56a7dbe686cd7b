"""Replay a rosbag2 bag (MCAP or sqlite3) into ROS 2 with rosbags and rclpy, optionally recording outputs.

`ros2 bag` is not installable from PyPI; this covers what the planner needs: timed playback at a rate factor,
/clock from bag time, looping, a start offset, topic selection and remapping. Messages are published as the
serialized bytes stored in the bag, through a publisher of the message's rclpy class (`pkg/msg/Type` imported
with importlib). Topics whose class cannot be imported (tf2_msgs from PyPI wheels, for one) are skipped with
one warning that lists them, and counted in the stats.

    alpamayo-replay BAG [--rate 1.0] [--loop] [--start-offset 0] [--clock-rate 100] [--topics T ...]
        [--remap /a:=/b ...] [--record OUT_BAG --record-topics T ...] [--record-format mcap]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from builtin_interfaces.msg import Time
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import QosDurability
from rosgraph_msgs.msg import Clock

from alpamayo_ros.ros.bag_io import BagRecorder, msg_class

NS_PER_S = 1_000_000_000
CLOCK_TOPIC = "/clock"
LATCHED_TOPICS = ("/tf_static",)


@dataclass(frozen=True)
class ReplayConfig:
    """Playback options."""

    rate: float = 1.0  # playback speed factor (2.0 plays twice as fast)
    loop: bool = False  # start over at the end (bag time and /clock jump back)
    start_offset_s: float = 0.0  # skip this much bag time from the start (latched topics are still sent)
    clock_rate_hz: float = 100.0  # /clock rate from bag time; 0: none (the bag's own /clock replays instead)
    topics: tuple[str, ...] = ()  # bag topics to play; () = all
    remap: tuple[tuple[str, str], ...] = ()  # (bag topic, published topic) pairs
    qos_depth: int = 10  # history depth of every publisher (reliable; transient-local for latched topics)

    def __post_init__(self) -> None:
        if not self.rate > 0.0:
            raise ValueError(f"ReplayConfig.rate must be > 0, got {self.rate}")
        if self.start_offset_s < 0.0:
            raise ValueError(f"ReplayConfig.start_offset_s must be >= 0, got {self.start_offset_s}")
        if self.clock_rate_hz < 0.0:
            raise ValueError(f"ReplayConfig.clock_rate_hz must be >= 0, got {self.clock_rate_hz}")
        if self.qos_depth < 1:
            raise ValueError(f"ReplayConfig.qos_depth must be >= 1, got {self.qos_depth}")


@dataclass
class ReplayStats:
    """Counters of one player (updated while it plays)."""

    published: dict[str, int] = field(default_factory=dict)  # per published topic
    skipped_types: dict[str, str] = field(default_factory=dict)  # bag topic -> type without an rclpy class
    skipped_messages: int = 0  # messages not published because their type is unavailable
    loops_completed: int = 0


class BagPlayer:
    """Plays one bag through publishers on `node`. Publishing runs in the calling thread (`play()`) or a
    background thread (`play(blocking=False)`, then `wait()`); the node needs no executor for playing.
    """

    def __init__(self, node: Node, bag_path: str | Path, config: ReplayConfig = ReplayConfig()):
        self._node = node
        self._path = Path(bag_path)
        self.config = config
        self.stats = ReplayStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._bag_time_ns: int | None = None
        self._next_clock = 0.0  # monotonic time of the next /clock message, s
        remap = dict(config.remap)
        self._publishers: dict[str, tuple[str, object]] = {}  # bag topic -> (output topic, publisher)
        self._clock_publisher = None
        with AnyReader([self._path]) as reader:
            self.start_time_ns, self.end_time_ns = reader.start_time, reader.end_time
            missing = set(config.topics) - {c.topic for c in reader.connections}
            if missing:
                raise ValueError(f"topics not in {self._path}: {sorted(missing)}")
            for connection in reader.connections:
                topic = connection.topic
                if config.topics and topic not in config.topics:
                    continue
                if topic == CLOCK_TOPIC and config.clock_rate_hz > 0.0:
                    continue  # replaced by the generated clock
                cls = msg_class(connection.msgtype)
                if cls is None:
                    self.stats.skipped_types[topic] = connection.msgtype
                    continue
                if topic in self._publishers:
                    continue  # a second connection of the same topic shares the publisher
                out = remap.get(topic, topic)
                qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=config.qos_depth,
                                 reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL if self._latched(connection)
                                 else DurabilityPolicy.VOLATILE)
                self._publishers[topic] = (out, node.create_publisher(cls, out, qos))
                self.stats.published[out] = 0
        if self.stats.skipped_types:
            listing = ", ".join(f"{t} ({m})" for t, m in sorted(self.stats.skipped_types.items()))
            node.get_logger().warning(f"skipping {len(self.stats.skipped_types)} topic(s) whose message "
                                      f"types cannot be imported here: {listing}")
        if config.clock_rate_hz > 0.0:
            self._clock_publisher = node.create_publisher(Clock, CLOCK_TOPIC, 10)
            self.stats.published[CLOCK_TOPIC] = 0

    @staticmethod
    def _latched(connection: object) -> bool:
        profiles = getattr(connection.ext, "offered_qos_profiles", [])
        return connection.topic in LATCHED_TOPICS or any(
            p.durability == QosDurability.TRANSIENT_LOCAL for p in profiles)

    @property
    def topics(self) -> dict[str, str]:
        """Bag topic -> published topic, for every topic that will be played."""
        return {topic: out for topic, (out, _) in self._publishers.items()}

    def wait_for_subscribers(self, topics: list[str], timeout_s: float, count: int = 1) -> bool:
        """Wait until each published topic in `topics` has `count` matched subscriptions; False on timeout."""
        publishers = [pub for out, pub in self._publishers.values() if out in topics]
        if CLOCK_TOPIC in topics and self._clock_publisher is not None:
            publishers.append(self._clock_publisher)
        deadline = time.monotonic() + timeout_s
        while not all(pub.get_subscription_count() >= count for pub in publishers):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def bag_time_ns(self) -> int | None:
        """The bag time being played now (None before playback starts)."""
        return self._bag_time_ns

    def play(self, blocking: bool = True) -> None:
        """Play the bag (forever with `loop`, until `stop()`); non-blocking plays in a background thread."""
        if not blocking:
            self._thread = threading.Thread(target=self._run_catching, name="bag_player", daemon=True)
            self._thread.start()
            return
        self._run()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait for background playback to end; True if it ended. Re-raises a playback error."""
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                return False
        if self._error is not None:
            raise self._error
        return True

    def stop(self) -> None:
        """Ask playback to end at the next message or clock tick."""
        self._stop.set()

    def _run_catching(self) -> None:
        try:
            self._run()
        except BaseException as error:  # surfaced by wait()
            self._error = error

    def _sleep_until(self, wall_target: float, wall_start: float, bag_start_ns: int) -> bool:
        """Sleep until `wall_target` (monotonic s), publishing /clock on the way; False if stopped."""
        period = 1.0 / self.config.clock_rate_hz if self._clock_publisher is not None else None
        while True:
            if self._stop.is_set() or not self._node.context.ok():
                return False
            now = time.monotonic()
            if self._clock_publisher is not None and now >= self._next_clock:
                bag_now = bag_start_ns + int((now - wall_start) * self.config.rate * NS_PER_S)
                self._publish_clock(bag_now)
                self._next_clock = max(self._next_clock + period, now)
            if now >= wall_target:
                return True
            wake = wall_target if period is None else min(wall_target, self._next_clock)
            self._stop.wait(max(0.0, wake - now))

    def _publish_clock(self, stamp_ns: int) -> None:
        self._bag_time_ns = stamp_ns
        stamp = Time(sec=stamp_ns // NS_PER_S, nanosec=stamp_ns % NS_PER_S)
        self._clock_publisher.publish(Clock(clock=stamp))
        self.stats.published[CLOCK_TOPIC] += 1

    def _run(self) -> None:
        offset_ns = int(self.config.start_offset_s * NS_PER_S)
        first_ns = self.start_time_ns + offset_ns
        while not self._stop.is_set():
            with AnyReader([self._path]) as reader:
                wanted = [c for c in reader.connections if c.topic in self._publishers]
                skipped = [c for c in reader.connections if c.topic in self.stats.skipped_types]
                latched = [c for c in wanted if self._latched(c)]
                if offset_ns > 0 and latched:  # state that was published before the offset still holds
                    for connection, _, data in reader.messages(connections=latched, stop=first_ns):
                        self._publish(connection.topic, data)
                wall_start = time.monotonic()
                self._next_clock = wall_start
                playing = reader.messages(connections=wanted + skipped, start=first_ns)
                for connection, stamp_ns, data in playing:
                    if connection.topic in self.stats.skipped_types:
                        self.stats.skipped_messages += 1
                        continue
                    wall_target = wall_start + (stamp_ns - first_ns) / NS_PER_S / self.config.rate
                    if not self._sleep_until(wall_target, wall_start, first_ns):
                        return
                    self._bag_time_ns = stamp_ns
                    self._publish(connection.topic, data)
            self.stats.loops_completed += 1
            if not self.config.loop:
                return

    def _publish(self, topic: str, data: bytes) -> None:
        out, publisher = self._publishers[topic]
        publisher.publish(bytes(data))
        self.stats.published[out] += 1


def _spin(executor: SingleThreadedExecutor) -> None:
    try:
        executor.spin()
    except ExternalShutdownException:  # SIGTERM/SIGINT shut the context down; main() cleans up
        pass


def _parse_remap(text: str) -> tuple[str, str]:
    source, sep, target = text.partition(":=")
    if not sep or not source or not target:
        raise argparse.ArgumentTypeError(f"expected FROM:=TO, got {text!r}")
    return source, target


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alpamayo-replay", description="Replay a rosbag2 bag into ROS 2.")
    parser.add_argument("bag", type=Path, help="bag directory (MCAP or sqlite3)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor")
    parser.add_argument("--loop", action="store_true", help="start over at the end")
    parser.add_argument("--start-offset", type=float, default=0.0, help="skip this many seconds of the bag")
    parser.add_argument("--clock-rate", type=float, default=100.0, help="/clock rate in Hz; 0 disables")
    parser.add_argument("--topics", nargs="+", default=[], help="bag topics to play (default all)")
    parser.add_argument("--remap", type=_parse_remap, action="append", default=[],
                        help="/bag/topic:=/new/topic (repeatable)")
    parser.add_argument("--record", type=Path, help="also record --record-topics into this new bag")
    parser.add_argument("--record-topics", nargs="+", default=[], help="topics to record")
    parser.add_argument("--record-format", choices=["mcap", "sqlite3"], default="mcap")
    parser.add_argument("--record-wait", type=float, default=3.0,
                        help="seconds to wait for the recorded topics to appear before playing")
    parser.add_argument("--record-drain", type=float, default=1.0,
                        help="seconds to keep recording after playback ends")
    return parser


def main(args: list[str] | None = None) -> int:
    argv = sys.argv[1:] if args is None else list(args)
    # Only what follows --ros-args goes to rclpy: our --remap A:=B would otherwise read as a legacy ROS remap.
    split = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    options = build_parser().parse_args(argv[:split])
    if options.record is not None and not options.record_topics:
        print("error: --record needs --record-topics", file=sys.stderr)
        return 2
    try:
        config = ReplayConfig(rate=options.rate, loop=options.loop, start_offset_s=options.start_offset,
                              clock_rate_hz=options.clock_rate, topics=tuple(options.topics),
                              remap=tuple(options.remap))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rclpy.init(args=["alpamayo-replay", *argv[split:]])
    node = Node("alpamayo_replay")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=_spin, args=(executor,), daemon=True)
    spinner.start()
    recorder: BagRecorder | None = None
    status = 0
    try:
        player = BagPlayer(node, options.bag, config)
        if options.record is not None:
            recorder = BagRecorder(node, options.record, options.record_topics, options.record_format,
                                   clock_ns=player.bag_time_ns)
            deadline = time.monotonic() + options.record_wait
            while recorder.pending_topics and time.monotonic() < deadline:
                time.sleep(0.05)
            if recorder.pending_topics:
                node.get_logger().warning(f"no publisher yet for {recorder.pending_topics}; recording them "
                                          "once they appear")
            player.wait_for_subscribers(options.record_topics, timeout_s=options.record_wait)  # own topics
        node.get_logger().info(f"playing {options.bag}: {len(player.topics)} topics at rate {config.rate}")
        player.play()
        if recorder is not None:
            time.sleep(options.record_drain)
        print(f"published: {sum(player.stats.published.values())} messages, "
              f"skipped {player.stats.skipped_messages} of types "
              f"{sorted(set(player.stats.skipped_types.values()))}")
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (AnyReaderError, FileNotFoundError, ValueError) as error:  # bad bag path or --topics
        print(f"error: {error}", file=sys.stderr)
        status = 2
    finally:
        executor.shutdown()
        spinner.join()
        if recorder is not None:
            counts = recorder.close()
            print(f"recorded {options.record}: {counts}")
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
