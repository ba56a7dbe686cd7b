"""Publishes a known TrajectorySet at 20 Hz on /test/trajectory_set until killed (cross-process test peer)."""

import math
import sys

import rclpy
from rclpy.executors import ExternalShutdownException

from alpamayo_ros.msg import TrajectorySet
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Path


def known_trajectory_set(num_paths: int = 3, num_poses: int = 64) -> TrajectorySet:
    msg = TrajectorySet()
    msg.header.frame_id = "base_link"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1700000000, 123456789
    msg.observation_time = msg.header.stamp
    for i in range(num_paths):
        path = Path()
        path.header = msg.header
        for k in range(num_poses):
            pose = PoseStamped()
            pose.header.frame_id = "base_link"
            pose.pose.position.x = 0.5 * (k + 1)
            pose.pose.position.y = 0.01 * i * (k + 1)
            pose.pose.orientation.z = math.sin(0.001 * i * k)
            pose.pose.orientation.w = math.cos(0.001 * i * k)
            path.poses.append(pose)
        msg.trajectories.append(path)
    msg.scores = [0.25 * i for i in range(num_paths)]
    msg.flags = [0] * (num_paths - 1) + [TrajectorySet.FLAG_NON_FINITE]
    msg.reasoning = [f"candidate {i}: keep lane" for i in range(num_paths)]
    msg.selected_index = 1
    msg.model_id = "test-model"
    msg.inference_ms = 12.5
    return msg


def main() -> int:
    rclpy.init()
    node = rclpy.create_node("trajectory_set_talker")
    pub = node.create_publisher(TrajectorySet, "/test/trajectory_set", 10)
    msg = known_trajectory_set()
    node.create_timer(0.05, lambda: pub.publish(msg))
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
