"""rosbags helpers shared by the replay tool and tests: message classes, type definitions, and a raw recorder.

- `msg_class('pkg/msg/Type')` imports the rclpy message class (None where the package is not installed, e.g.
  tf2_msgs from PyPI wheels).
- `typestore_for(msgtypes)` is the ROS 2 Jazzy typestore plus any missing definitions read from .msg files:
  this package's msg/ directory or `$AMENT_PREFIX_PATH/share/<pkg>/msg/`, dependencies included.
- `BagRecorder` subscribes with raw=True to the requested topics once they appear in the ROS graph and writes
  the serialized bytes as they are (rclpy and rosbags both use CDR).
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Nodetype
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
PACKAGE = "alpamayo_ros"


def msg_class(msgtype: str) -> type | None:
    """The rclpy class of 'pkg/msg/Type', or None if it cannot be imported here."""
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        return None


def _msg_file(msgtype: str) -> Path | None:
    package, _, name = msgtype.split("/")
    candidates = []
    if package == PACKAGE:
        candidates.append(Path(__file__).resolve().parents[2] / "msg" / f"{name}.msg")  # source checkout
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / package / "msg" / f"{name}.msg")
    return next((path for path in candidates if path.is_file()), None)


def _referenced_types(fields: list) -> set[str]:
    """Message type names used by a rosbags field list (nested sequences and arrays included)."""
    names = set()
    for _, (kind, detail) in fields:
        while kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            (kind, detail), _ = detail
        if kind == Nodetype.NAME:
            names.add(detail)
    return names


def typestore_for(msgtypes: Iterable[str]) -> Typestore:
    """A Jazzy typestore that also knows `msgtypes` and everything they reference.

    Raises:
        LookupError: a definition is neither in the Jazzy store nor in a .msg file that can be found.
    """
    store = get_typestore(Stores.ROS2_JAZZY)
    todo = [t for t in msgtypes if t not in store.fielddefs]
    while todo:
        msgtype = todo.pop()
        if msgtype in store.fielddefs:
            continue
        path = _msg_file(msgtype)
        if path is None:
            raise LookupError(f"no definition for {msgtype}: not in the Jazzy typestore, this package's msg/ "
                              f"or $AMENT_PREFIX_PATH/share/<pkg>/msg/")
        types = get_types_from_msg(path.read_text(), msgtype)
        referenced = {n for _, fields in types.values() for n in _referenced_types(fields)}
        missing = {n for n in referenced if n not in store.fielddefs}
        if missing - set(types):
            todo += [msgtype, *sorted(missing - set(types))]  # register dependencies first, then retry
            continue
        store.register(types)
    return store


def matching_qos(node: Node, topic: str, depth: int = 100) -> QoSProfile:
    """A subscription QoS compatible with every current publisher of `topic` (as `ros2 bag record` does)."""
    infos = node.get_publishers_info_by_topic(topic)
    best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for i in infos)
    latched = bool(infos) and all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=depth,
        reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )


class BagRecorder:
    """Records topics of a running ROS graph into a new bag, subscribing as each topic appears.

    Args:
        node: the node that owns the subscriptions (it must be spun by an executor).
        out_path: bag directory to create.
        topics: topic names to record.
        storage: "mcap" or "sqlite3".
        clock_ns: bag timestamp source (e.g. a player's bag time); default the node clock.
    """

    def __init__(self, node: Node, out_path: str | Path, topics: Iterable[str], storage: str = "mcap",
                 clock_ns: Callable[[], int | None] | None = None):
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
        self._node = node
        self._wanted = list(dict.fromkeys(topics))
        self._clock_ns = clock_ns
        self._lock = threading.Lock()  # guards the writer
        self._discover_lock = threading.Lock()
        self._writer = Writer(Path(out_path), version=9, storage_plugin=STORAGES[storage])
        self._writer.open()
        self._connections: dict[str, object] = {}
        self._subscriptions = []
        self.counts: dict[str, int] = {topic: 0 for topic in self._wanted}
        self.unsupported: dict[str, str] = {}  # topic -> type that cannot be imported or defined here
        self._timer = node.create_timer(0.1, self.discover)
        self.discover()

    @property
    def pending_topics(self) -> list[str]:
        """Requested topics not subscribed yet (no publisher seen)."""
        return [t for t in self._wanted if t not in self._connections and t not in self.unsupported]

    def discover(self) -> None:
        """Subscribe to requested topics that now have publishers (called by a 0.1 s timer)."""
        with self._discover_lock:  # the timer thread and the constructor's caller may both get here
            self._discover()

    def _discover(self) -> None:
        pending = set(self.pending_topics)
        for topic, types in self._node.get_topic_names_and_types():
            if topic not in pending:
                continue
            msgtype = types[0]
            cls = msg_class(msgtype)
            try:
                store = typestore_for([msgtype])
            except LookupError as error:
                cls, reason = None, str(error)
            else:
                reason = f"cannot import the rclpy class of {msgtype}"
            if cls is None:
                self.unsupported[topic] = msgtype
                self._node.get_logger().warning(f"not recording {topic}: {reason}")
                continue
            with self._lock:
                self._connections[topic] = self._writer.add_connection(topic, msgtype, typestore=store)
            self._subscriptions.append(self._node.create_subscription(
                cls, topic, partial(self._on_message, topic), matching_qos(self._node, topic), raw=True))
            self._node.get_logger().info(f"recording {topic} ({msgtype})")

    def _on_message(self, topic: str, data: bytes) -> None:
        stamp_ns = self._clock_ns() if self._clock_ns is not None else None
        if stamp_ns is None:
            stamp_ns = self._node.get_clock().now().nanoseconds
        with self._lock:
            if self._writer is not None:
                self._writer.write(self._connections[topic], stamp_ns, data)
                self.counts[topic] += 1

    def close(self) -> dict[str, int]:
        """Stop recording and finish the bag; returns the message count per topic."""
        self._node.destroy_timer(self._timer)
        for subscription in self._subscriptions:
            self._node.destroy_subscription(subscription)
        self._subscriptions.clear()
        with self._lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        return dict(self.counts)
