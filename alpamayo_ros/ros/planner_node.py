"""The Alpamayo planner lifecycle node (foundation skeleton: lifecycle + status; planning lands with the node issue)."""

from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from alpamayo_ros.msg import PlannerStatus


class PlannerNode(LifecycleNode):
    """Publishes PlannerStatus on ~/output/status while active."""

    def __init__(self) -> None:
        super().__init__("alpamayo_planner")
        self.declare_parameter("autostart", True)
        self._status_pub = self.create_publisher(PlannerStatus, "~/output/status", 10)
        self._timer = None
        if self.get_parameter("autostart").value:
            self.trigger_configure()
            self.trigger_activate()

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._timer = self.create_timer(1.0, self._publish_status)
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.destroy_timer(self._timer)
        self._timer = None
        return super().on_deactivate(state)

    def _publish_status(self) -> None:
        msg = PlannerStatus(state=PlannerStatus.STATE_ACTIVE)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._status_pub.publish(msg)


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = PlannerNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
