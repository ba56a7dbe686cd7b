"""A fake vehicle whose sensor faults are switched on and off by a test, and a /clock the test controls.

ScriptedVehicle publishes 4 cameras (raw rgb8 or JPEG) at 10 Hz and odometry at 50 Hz, driving along +x,
stamped with its own clock (ROS time: follows /clock when the vehicle uses sim time). Stamps are snapped to
each stream's period grid, as hardware-triggered sensors stamp them. The attributes under "fault switches"
are read on every publish, so a test flips them while the vehicle runs; `publish_image` / `publish_odometry`
send one-off messages (malformed ones) on the same topics.
"""

from __future__ import annotations

import collections
import threading
import time

import numpy as np
from builtin_interfaces.msg import Time
from nav_msgs.msg import Odometry
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image

from alpamayo_ros.planner.images import encode_compressed
from alpamayo_ros.planner.sync import DEFAULT_CAMERA_NAMES
from alpamayo_ros.ros.convert import ns_to_stamp, rgb_to_image

NS = 1_000_000_000
REFERENCE = DEFAULT_CAMERA_NAMES[1]
ODOMETRY = "odometry"


class ScriptedVehicle(Node):
    def __init__(self, context, prefix: str, odom_topic: str, *, size_hw: tuple[int, int] = (64, 112),
                 compressed: bool = False, use_sim_time: bool = False, speed_mps: float = 5.0,
                 camera_hz: float = 10.0, odom_hz: float = 50.0, muted: set[str] | None = None) -> None:
        super().__init__("scripted_vehicle", context=context,
                         parameter_overrides=[Parameter("use_sim_time", value=use_sim_time)])
        self.speed_mps = speed_mps
        self.size_hw = size_hw
        self.compressed = compressed
        # Fault switches.
        self.muted: set[str] = set(muted or ())  # cameras (or ODOMETRY) that publish nothing
        self.every_other: set[str] = set()  # cameras that publish only every second frame (half rate)
        self.stamp_offset_ns: dict[str, int] = {}  # camera -> stamp shift (an unsynchronised camera clock)
        self.delay_frames: dict[str, int] = {}  # camera -> frames each message is held back (late delivery)
        self.size_override: dict[str, tuple[int, int]] = {}  # camera -> (H, W) of its frames
        self.odom_offset = np.zeros(3)  # added to every odometry position (a relocalisation)
        self.odom_frames = ("odom", "base_link")
        self.unknown_covariance = False  # covariance element 0 = -1 ("no estimate")
        self.swap_odometry = False  # publish odometry pairs in reverse stamp order
        # What was published (stamps per camera, in publish order).
        self.lock = threading.Lock()
        self.camera_stamps: dict[str, list[int]] = {c: [] for c in DEFAULT_CAMERA_NAMES}
        self._rng = np.random.default_rng(0)
        self._images = {cam: self._rng.integers(0, 255, (*size_hw, 3), dtype=np.uint8)
                        for cam in DEFAULT_CAMERA_NAMES}
        self._held: dict[str, collections.deque] = {c: collections.deque() for c in DEFAULT_CAMERA_NAMES}
        self._swap_held: Odometry | None = None
        msg_type = CompressedImage if compressed else Image
        suffix = "/image/compressed" if compressed else "/image"
        self._cam_pubs = {
            cam: self.create_publisher(msg_type, f"{prefix}/{cam}{suffix}", qos_profile_sensor_data)
            for cam in DEFAULT_CAMERA_NAMES}
        self._odom_pub = self.create_publisher(Odometry, odom_topic, QoSProfile(depth=50))
        self._camera_period_ns = round(NS / camera_hz)
        self._odom_period_ns = round(NS / odom_hz)
        self._last_camera_ns: int | None = None
        self._last_odom_ns: int | None = None
        self._origin_ns = self.get_clock().now().nanoseconds  # where x = 0 (keeps positions small)
        self.create_timer(1.0 / camera_hz, self._publish_cameras)
        self.create_timer(1.0 / odom_hz, self._publish_odometry)

    def now_ns(self, period_ns: int | None = None) -> int:
        now_ns = self.get_clock().now().nanoseconds
        period_ns = period_ns or self._camera_period_ns
        return round(now_ns / period_ns) * period_ns

    def frame(self, camera: str, stamp_ns: int,
              size_hw: tuple[int, int] | None = None) -> Image | CompressedImage:
        """A well-formed frame of `camera` (optionally at another size)."""
        image = self._images[camera]
        if size_hw is not None and size_hw != image.shape[:2]:
            image = self._rng.integers(0, 255, (*size_hw, 3), dtype=np.uint8)
        if self.compressed:
            msg = CompressedImage(format="jpeg", data=encode_compressed(image, "jpeg"))
            msg.header.stamp, msg.header.frame_id = ns_to_stamp(stamp_ns), camera
            return msg
        return rgb_to_image(image, ns_to_stamp(stamp_ns), camera)

    def odometry(self, stamp_ns: int) -> Odometry:
        """A well-formed odometry message at `stamp_ns` (position from the constant speed)."""
        msg = Odometry()
        msg.header.stamp = ns_to_stamp(stamp_ns)
        msg.header.frame_id, msg.child_frame_id = self.odom_frames
        x = self.speed_mps * (stamp_ns - self._origin_ns) / NS
        p = msg.pose.pose.position
        p.x, p.y, p.z = (np.array([x, 0.0, 0.0]) + self.odom_offset).tolist()
        msg.pose.pose.orientation.w = 1.0
        msg.twist.twist.linear.x = self.speed_mps
        if self.unknown_covariance:
            msg.pose.covariance[0] = msg.twist.covariance[0] = -1.0
        return msg

    def publish_image(self, camera: str, msg: Image | CompressedImage) -> None:
        self._cam_pubs[camera].publish(msg)

    def publish_odometry(self, msg: Odometry) -> None:
        self._odom_pub.publish(msg)

    def _publish_cameras(self) -> None:
        now_ns = self.now_ns(self._camera_period_ns)
        last = self._last_camera_ns
        if last is not None and now_ns <= last:
            if now_ns > last - NS:
                return  # the timer fired twice within one period
            for held in self._held.values():  # time went backwards (sim reset): start a new time line
                held.clear()
            last = None
        self._last_camera_ns = now_ns
        # A triggered camera never skips a frame because its driver ran late: publish every grid slot since
        # the last one (at most 5), so a loaded test machine does not look like a camera dropping frames.
        first = now_ns if last is None else max(last + self._camera_period_ns, now_ns - 4 * self._camera_period_ns)
        for slot_ns in range(first, now_ns + 1, self._camera_period_ns):
            self._publish_camera_slot(slot_ns)

    def _publish_camera_slot(self, now_ns: int) -> None:
        index = now_ns // self._camera_period_ns
        for cam in DEFAULT_CAMERA_NAMES:
            if cam in self.muted or (cam in self.every_other and index % 2):
                continue
            stamp_ns = now_ns + self.stamp_offset_ns.get(cam, 0)
            held = self._held[cam]
            held.append((stamp_ns, self.frame(cam, stamp_ns, self.size_override.get(cam))))
            while len(held) > self.delay_frames.get(cam, 0):
                stamp, msg = held.popleft()
                self._cam_pubs[cam].publish(msg)
                with self.lock:
                    self.camera_stamps[cam].append(stamp)

    def _publish_odometry(self) -> None:
        now_ns = self.now_ns(self._odom_period_ns)
        last = self._last_odom_ns
        if last is not None and last - NS < now_ns <= last:
            return  # the timer fired twice within one period (a jump back of over 1 s starts anew)
        self._last_odom_ns = now_ns
        if ODOMETRY in self.muted:
            return
        msg = self.odometry(now_ns)
        if self.swap_odometry:
            if self._swap_held is None:
                self._swap_held = msg
                return
            msg, self._swap_held = self._swap_held, None
            self._odom_pub.publish(self.odometry(now_ns))  # the newer one first
        self._odom_pub.publish(msg)


class SimClock:
    """Publishes /clock at `hz` from a thread: sim time advances with wall time until paused or moved."""

    def __init__(self, node: Node, start_ns: int, hz: float = 100.0) -> None:
        self._pub = node.create_publisher(Clock, "/clock", 10)
        self._lock = threading.Lock()
        self._base_ns, self._base_wall = start_ns, time.monotonic()
        self._paused = False
        self._period_s = 1.0 / hz
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now_ns(self) -> int:
        with self._lock:
            return self._now_ns()

    def pause(self) -> None:
        with self._lock:
            self._base_ns, self._paused = self._now_ns(), True

    def resume(self) -> None:
        with self._lock:
            self._base_wall, self._paused = time.monotonic(), False

    def jump(self, delta_s: float) -> None:
        with self._lock:
            self._base_ns, self._base_wall = self._now_ns() + round(delta_s * NS), time.monotonic()

    def _now_ns(self) -> int:
        if self._paused:
            return self._base_ns
        return self._base_ns + round((time.monotonic() - self._base_wall) * NS)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            with self._lock:
                paused, now_ns = self._paused, self._now_ns()
            if not paused:
                self._pub.publish(Clock(clock=Time(sec=now_ns // NS, nanosec=now_ns % NS)))
