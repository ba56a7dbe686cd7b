"""Watching a planner from outside over DDS: its outputs, /diagnostics, parameter and lifecycle services."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from alpamayo_ros.msg import PlannerStatus, TrajectorySet

NS = 1_000_000_000


def wait_until(predicate: Callable[[], Any], timeout_s: float, period_s: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy (returned) or `timeout_s` passes (last value)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(period_s)


def spin_in_background(context, *groups: Sequence[Node]) -> Callable[[], None]:
    """Spin each group of nodes on its own SingleThreadedExecutor thread, as the node's `main` does (rclpy's
    MultiThreadedExecutor busy-spins under bag replay and starves the node); returns the function that shuts
    the executors down and then destroys the nodes, the order the ROS notes require."""
    executors = [SingleThreadedExecutor(context=context) for _ in groups]
    for executor, nodes in zip(executors, groups):
        for node in nodes:
            executor.add_node(node)
    threads = [threading.Thread(target=e.spin, daemon=True) for e in executors]
    for thread in threads:
        thread.start()

    def stop() -> None:
        for executor, thread in zip(executors, threads):
            executor.shutdown()
            thread.join(timeout=10)
        for nodes in groups:
            for node in nodes:
                node.destroy_node()
    return stop


def publish_until(publish: Callable[[], None], predicate: Callable[[], Any], timeout_s: float,
                  period_s: float = 0.5) -> Any:
    """Publish, then poll `predicate` for `period_s`; again until it is truthy (returned) or `timeout_s` passes.
    For best-effort topics, where a loaded subscriber may drop any one message."""
    deadline = time.monotonic() + timeout_s
    while True:
        publish()
        value = wait_until(predicate, min(period_s, max(0.0, deadline - time.monotonic())))
        if value or time.monotonic() > deadline:
            return value


def stamp_ns(stamp) -> int:
    return stamp.sec * NS + stamp.nanosec


class Probe:
    """Collects a planner's trajectory sets, status and diagnostics (callbacks run on the caller's executor).

    `keep` bounds what is kept of each stream (the newest messages; a soak test must not grow itself);
    None keeps everything.
    """

    def __init__(self, context, ns: str, node_name: str = "fault_probe", keep: int | None = None) -> None:
        self.node = rclpy.create_node(node_name, context=context)
        self._lock = threading.Lock()
        self.sets: list[TrajectorySet] | collections.deque = [] if keep is None else collections.deque(
            maxlen=keep)
        self.status: list[PlannerStatus] | collections.deque = [] if keep is None else collections.deque(
            maxlen=keep)
        self.diagnostics: dict[str, DiagnosticStatus] = {}  # newest status per name suffix (": inputs", ...)
        self.diagnostics_history: list[DiagnosticStatus] = []
        self.sets_received = 0
        self._keep_diagnostics = keep is None
        self.ns = ns
        self.node.create_subscription(TrajectorySet, f"{ns}/output/trajectory_set", self._on_set, 50)
        self.node.create_subscription(PlannerStatus, f"{ns}/output/status", self._on_status, 100)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)

    def _on_set(self, msg: TrajectorySet) -> None:
        with self._lock:
            self.sets.append(msg)
            self.sets_received += 1

    def _on_status(self, msg: PlannerStatus) -> None:
        with self._lock:
            self.status.append(msg)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        with self._lock:
            for status in msg.status:
                if status.name.startswith(self.ns + ":"):
                    self.diagnostics[status.name.rsplit(":", 1)[1].strip()] = status
                    if self._keep_diagnostics:
                        self.diagnostics_history.append(status)

    def plan_stamps(self) -> list[int]:
        with self._lock:
            return [stamp_ns(m.header.stamp) for m in self.sets]

    def wait_plan_after(self, t_ns: int, timeout_s: float = 40.0, since: int = 0,
                        before_ns: int | None = None) -> TrajectorySet | None:
        """The first trajectory set stamped (t0) at or after `t_ns` (and before `before_ns`, if given) among
        those received after the first `since` (the count of sets before a time jump), waiting for it."""
        def find():
            with self._lock:
                return next((m for m in list(self.sets)[since:] if t_ns <= stamp_ns(m.header.stamp)
                             and (before_ns is None or stamp_ns(m.header.stamp) < before_ns)), None)
        return wait_until(find, timeout_s)

    def diagnostic(self, kind: str) -> DiagnosticStatus | None:
        """Newest status of kind 'inputs', 'planning' or 'model'."""
        with self._lock:
            return self.diagnostics.get(kind)

    def mark(self) -> int:
        """A position in the diagnostics history, for wait_diagnostic(since=...)."""
        with self._lock:
            return len(self.diagnostics_history)

    def wait_diagnostic(self, kind: str, predicate: Callable[[DiagnosticStatus], bool],
                        timeout_s: float = 20.0, since: int | None = None) -> DiagnosticStatus | None:
        """The first status of `kind` received after `since` (default: now) that satisfies `predicate`."""
        start = self.mark() if since is None else since

        def find():
            with self._lock:
                fresh = self.diagnostics_history[start:]
            return next((s for s in fresh if s.name.endswith(": " + kind) and predicate(s)), None)
        return wait_until(find, timeout_s)


def values(status: DiagnosticStatus) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def _call(context, srv_type, name: str, request, timeout_s: float = 20.0):
    node = rclpy.create_node("fault_service_client", context=context)
    executor = SingleThreadedExecutor(context=context)
    try:
        client = node.create_client(srv_type, name)
        if not client.wait_for_service(timeout_sec=timeout_s):
            raise TimeoutError(f"service {name} not available")
        future = client.call_async(request)
        executor.add_node(node)
        executor.spin_until_future_complete(future, timeout_sec=timeout_s)
        if future.result() is None:
            raise TimeoutError(f"no reply from {name}")
        return future.result()
    finally:
        executor.shutdown()
        node.destroy_node()


def set_parameters(context, node_name: str, params: list[Parameter]) -> list:
    """SetParameters results, as `ros2 param set` would get them."""
    request = SetParameters.Request(parameters=[p.to_parameter_msg() for p in params])
    return _call(context, SetParameters, f"{node_name}/set_parameters", request).results


def change_state(context, node_name: str, transition_id: int) -> bool:
    """Request a lifecycle transition (e.g. Transition.TRANSITION_CONFIGURE) as `ros2 lifecycle set` would."""
    request = ChangeState.Request(transition=Transition(id=transition_id))
    return _call(context, ChangeState, f"{node_name}/change_state", request, timeout_s=60.0).success


def get_state(context, node_name: str) -> str:
    return _call(context, GetState, f"{node_name}/get_state", GetState.Request()).current_state.label
