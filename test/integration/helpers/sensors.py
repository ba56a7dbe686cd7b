"""A fake vehicle for integration tests: 4 cameras + odometry with consistent stamps, driving straight."""

from __future__ import annotations

import numpy as np
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from alpamayo_ros.planner.images import encode_compressed
from alpamayo_ros.planner.sync import DEFAULT_CAMERA_NAMES
from alpamayo_ros.ros.convert import ns_to_stamp, rgb_to_image

NS = 1_000_000_000
REFERENCE = DEFAULT_CAMERA_NAMES[1]


class FakeVehicle(Node):
    """Publishes camera frames at `camera_hz` and odometry at `odom_hz`, stamped with this node's clock.

    The ego drives along +x at `speed_mps`. `camera_delay_ns` shifts one camera's stamps (a late camera).
    Stamps are snapped to each stream's period grid, as hardware-triggered sensors stamp them, so timer
    jitter on a loaded test machine does not look like a camera out of sync. Every published camera stamp is
    recorded in `camera_stamps[name]`.
    """

    def __init__(self, context, prefix: str, *, camera_hz: float = 10.0, odom_hz: float = 50.0,
                 speed_mps: float = 5.0, size_hw: tuple[int, int] = (64, 112), compressed: bool = False,
                 camera_delay_ns: dict[str, int] | None = None, odom_topic: str | None = None) -> None:
        super().__init__("fake_vehicle", context=context)
        self.speed_mps = speed_mps
        self._start_ns = self.get_clock().now().nanoseconds
        self.camera_stamps: dict[str, list[int]] = {c: [] for c in DEFAULT_CAMERA_NAMES}
        self._delay = camera_delay_ns or {}
        self._compressed = compressed
        self._images = {}
        self._cam_pubs = {}
        for i, cam in enumerate(DEFAULT_CAMERA_NAMES):
            rng = np.random.default_rng(i)
            self._images[cam] = rng.integers(0, 255, (*size_hw, 3), dtype=np.uint8)
            topic = f"{prefix}/{cam}/image" + ("/compressed" if compressed else "")
            self._cam_pubs[cam] = self.create_publisher(
                CompressedImage if compressed else Image, topic, qos_profile_sensor_data)
        self._camera_period_ns = round(NS / camera_hz)
        self._odom_period_ns = round(NS / odom_hz)
        self._odom_pub = self.create_publisher(Odometry, odom_topic or f"{prefix}/odometry", QoSProfile(depth=50))
        self.create_timer(1.0 / camera_hz, self._publish_cameras)
        self.create_timer(1.0 / odom_hz, self._publish_odometry)

    def _snapped_now(self, period_ns: int) -> int:
        now_ns = self.get_clock().now().nanoseconds - self._start_ns
        return self._start_ns + round(now_ns / period_ns) * period_ns

    def _publish_cameras(self) -> None:
        now_ns = self._snapped_now(self._camera_period_ns)
        if self.camera_stamps[REFERENCE] and now_ns <= self.camera_stamps[REFERENCE][-1]:
            return  # the timer fired twice within one period
        for cam, pub in self._cam_pubs.items():
            stamp_ns = now_ns - self._delay.get(cam, 0)
            if self._compressed:
                msg = CompressedImage(format="jpeg", data=encode_compressed(self._images[cam], "jpeg"))
                msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), cam
            else:
                msg = rgb_to_image(self._images[cam], ns_to_stamp(stamp_ns), cam)
            pub.publish(msg)
            self.camera_stamps[cam].append(stamp_ns)

    def _publish_odometry(self) -> None:
        now_ns = self._snapped_now(self._odom_period_ns)
        msg = Odometry()
        msg.header.stamp, msg.header.frame_id, msg.child_frame_id = ns_to_stamp(now_ns), "odom", "base_link"
        msg.pose.pose.position.x = self.speed_mps * (now_ns - self._start_ns) / NS
        msg.pose.pose.orientation.w = 1.0
        msg.twist.twist.linear.x = self.speed_mps
        self._odom_pub.publish(msg)
