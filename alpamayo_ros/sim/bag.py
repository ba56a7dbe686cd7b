"""Write a scenario as a rosbag2 bag (MCAP or sqlite3) with rosbags: cameras, odometry, tf, clock, truth.

Every header is stamped in simulated time: `BagConfig.start_time_ns` plus the scenario time. The bag timestamp
of every message equals its header stamp; for header-less messages (/clock, the ground-truth strings) the bag
timestamp is the simulated time they describe. Messages are written in timestamp order.

Topics (see docs/DATA.md):
    /sensors/camera/<cam>/image_raw/compressed  sensor_msgs/msg/CompressedImage  JPEG (or .../image_raw, rgb8)
    /sensors/camera/<cam>/camera_info           sensor_msgs/msg/CameraInfo
    /localization/odometry                      nav_msgs/msg/Odometry    odom -> base_link, twist in base_link
    /tf, /tf_static                             tf2_msgs/msg/TFMessage   odom -> base_link, base_link -> cams
    /clock                                      rosgraph_msgs/msg/Clock
    /ground_truth/explanation, .../cause        std_msgs/msg/String      causal explanation, Cause name
    /ground_truth/future_path                   nav_msgs/msg/Path        64 poses at 0.1 s in base_link at t
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer

from alpamayo_ros.sim import messages
from alpamayo_ros.sim.cameras import camera_rig
from alpamayo_ros.sim.render import RenderConfig, SceneRenderer
from alpamayo_ros.sim.scene import TRAJECTORY_DT_S, Scenario

logger = logging.getLogger(__name__)

NS_PER_S = messages.NS_PER_S
CAMERA_NAMESPACE = "/sensors/camera"
ODOMETRY_TOPIC = "/localization/odometry"
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
CLOCK_TOPIC = "/clock"
EXPLANATION_TOPIC = "/ground_truth/explanation"
CAUSE_TOPIC = "/ground_truth/cause"
FUTURE_PATH_TOPIC = "/ground_truth/future_path"
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_FOREVER = QosTime(2147483647, 4294967295)  # rosbag2's "infinite" duration
LATCHED_QOS = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, _FOREVER,
                  _FOREVER, QosLiveliness.AUTOMATIC, _FOREVER, False)


def image_topic(camera_name: str, compressed: bool) -> str:
    return f"{CAMERA_NAMESPACE}/{camera_name}/image_raw" + ("/compressed" if compressed else "")


def camera_info_topic(camera_name: str) -> str:
    return f"{CAMERA_NAMESPACE}/{camera_name}/camera_info"


@dataclass(frozen=True)
class BagConfig:
    """What to write and how."""

    storage: str = "mcap"  # "mcap" or "sqlite3" (rosbag2 storage plugin)
    image_scale: float = 0.25  # fraction of the 1080 x 1920 camera resolution (0.25 -> 270 x 480)
    compressed: bool = True  # JPEG CompressedImage on .../compressed; False: rgb8 Image on .../image_raw
    jpeg_quality: int = 85  # OpenCV JPEG quality, 1..100
    camera_rate_hz: float = 10.0  # frame rate of every camera (the model samples frames at 10 Hz)
    odom_rate_hz: float = 50.0  # odometry and odom -> base_link tf rate
    clock_rate_hz: float = 100.0  # /clock rate
    ground_truth_rate_hz: float = 10.0  # rate of the three ground-truth topics
    start_time_ns: int = 1_700_000_000 * NS_PER_S  # simulated time of scenario t = 0 (2023-11-14T22:13:20Z)
    camera_offsets_ns: tuple[int, ...] = ()  # constant stamp offset per camera in rig order; () = all 0
    camera_jitter_ns: int = 0  # each frame's stamp moves by a uniform draw in [-jitter, +jitter] (seeded)
    render: RenderConfig = field(default_factory=RenderConfig)

    def __post_init__(self) -> None:
        if self.storage not in STORAGES:
            raise ValueError(f"BagConfig.storage must be one of {sorted(STORAGES)}, got {self.storage!r}")
        if not 10.0 <= self.camera_rate_hz <= 30.0:
            raise ValueError(f"BagConfig.camera_rate_hz must be in [10, 30], got {self.camera_rate_hz}")
        if not 10.0 <= self.odom_rate_hz <= 100.0:
            raise ValueError(f"BagConfig.odom_rate_hz must be in [10, 100], got {self.odom_rate_hz}")
        for name in ("clock_rate_hz", "ground_truth_rate_hz"):
            if not 0.0 < getattr(self, name) <= 1000.0:
                raise ValueError(f"BagConfig.{name} must be in (0, 1000], got {getattr(self, name)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"BagConfig.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.start_time_ns < 0:
            raise ValueError(f"BagConfig.start_time_ns must be >= 0, got {self.start_time_ns}")
        if self.camera_jitter_ns < 0:
            raise ValueError(f"BagConfig.camera_jitter_ns must be >= 0, got {self.camera_jitter_ns}")
        if self.camera_offsets_ns and len(self.camera_offsets_ns) != 4:
            raise ValueError(
                f"BagConfig.camera_offsets_ns needs 4 values (one per camera), got {self.camera_offsets_ns}")


@dataclass(frozen=True)
class BagSummary:
    """What write_bag wrote."""

    path: Path
    storage: str
    duration_s: float
    message_counts: dict[str, int]  # per topic
    size_bytes: int  # all files of the bag
    wall_s: float  # time taken to render and write


def _ticks(rate_hz: float, duration_s: float) -> np.ndarray:
    """[K] int64 offsets in ns of a fixed-rate stream over [0, duration_s)."""
    count = int(np.ceil(duration_s * rate_hz - 1e-9))
    return np.round(np.arange(count) * (NS_PER_S / rate_hz)).astype(np.int64)


def camera_stamps_ns(config: BagConfig, duration_s: float, seed: int) -> np.ndarray:
    """[4, K] frame times in ns since scenario start (offsets and jitter applied, clipped to the scenario)."""
    base = _ticks(config.camera_rate_hz, duration_s)  # [K]
    offsets = np.asarray(config.camera_offsets_ns or (0, 0, 0, 0), dtype=np.int64)[:, None]
    jitter = np.random.default_rng(seed).integers(-config.camera_jitter_ns, config.camera_jitter_ns + 1,
                                                  size=(4, len(base)))
    return np.clip(base[None, :] + offsets + jitter, 0, int(duration_s * NS_PER_S))


def write_bag(out_path: str | Path, scenario: Scenario, config: BagConfig = BagConfig()) -> BagSummary:
    """Render `scenario` through the four cameras and write everything to a new bag directory `out_path`.

    Raises:
        FileExistsError: `out_path` exists (rosbags never overwrites a bag).
    """
    path = Path(out_path)
    if path.exists():
        raise FileExistsError(f"bag path {path} already exists")
    wall_start = time.perf_counter()
    cameras = camera_rig(config.image_scale)
    renderer = SceneRenderer(scenario, cameras, config.render)
    start = config.start_time_ns
    duration = scenario.duration_s
    image_type = "sensor_msgs/msg/CompressedImage" if config.compressed else "sensor_msgs/msg/Image"
    topics = {
        TF_STATIC_TOPIC: "tf2_msgs/msg/TFMessage", CLOCK_TOPIC: "rosgraph_msgs/msg/Clock",
        ODOMETRY_TOPIC: "nav_msgs/msg/Odometry", TF_TOPIC: "tf2_msgs/msg/TFMessage",
        EXPLANATION_TOPIC: "std_msgs/msg/String", CAUSE_TOPIC: "std_msgs/msg/String",
        FUTURE_PATH_TOPIC: "nav_msgs/msg/Path",
    }
    for camera in cameras:
        topics[camera_info_topic(camera.name)] = "sensor_msgs/msg/CameraInfo"
        topics[image_topic(camera.name, config.compressed)] = image_type

    # Every message is an event (offset_ns, priority, kind, camera index); sorting yields them in time order.
    events: list[tuple[int, int, str, int]] = [(0, 0, "tf_static", -1)]
    events += [(int(t), 1, "clock", -1) for t in _ticks(config.clock_rate_hz, duration)]
    events += [(int(t), 2, "odom", -1) for t in _ticks(config.odom_rate_hz, duration)]
    events += [(int(t), 3, "truth", -1) for t in _ticks(config.ground_truth_rate_hz, duration)]
    stamps = camera_stamps_ns(config, duration, scenario.seed)  # [4, K]
    cameras_at: dict[int, list[str]] = {}  # offset -> cameras with a frame then (rendered together)
    for index, camera in enumerate(cameras):
        events += [(int(t), 4, "camera", index) for t in stamps[index]]
        for t in stamps[index]:
            cameras_at.setdefault(int(t), []).append(camera.name)
    events.sort()

    counts = {topic: 0 for topic in topics}
    pending: dict[tuple[int, str], np.ndarray] = {}  # rendered with an earlier camera at the same stamp
    with Writer(path, version=9, storage_plugin=STORAGES[config.storage]) as writer:
        connections = {
            topic: writer.add_connection(
                topic, msgtype, typestore=messages.TYPESTORE,
                offered_qos_profiles=[LATCHED_QOS] if topic == TF_STATIC_TOPIC else [])
            for topic, msgtype in topics.items()}

        def put(topic: str, stamp_ns: int, message: object) -> None:
            data = messages.TYPESTORE.serialize_cdr(message, topics[topic])
            writer.write(connections[topic], stamp_ns, data)
            counts[topic] += 1

        for offset, _, kind, camera_index in events:
            stamp_ns, t_s = start + offset, offset / NS_PER_S
            if kind == "tf_static":
                put(TF_STATIC_TOPIC, stamp_ns, messages.camera_static_tf(stamp_ns, cameras))
            elif kind == "clock":
                put(CLOCK_TOPIC, stamp_ns, messages.clock(stamp_ns))
            elif kind == "odom":
                ego = scenario.ego_state(t_s)
                put(ODOMETRY_TOPIC, stamp_ns, messages.odometry(stamp_ns, ego))
                put(TF_TOPIC, stamp_ns, messages.odom_tf(stamp_ns, ego))
            elif kind == "truth":
                put(EXPLANATION_TOPIC, stamp_ns, messages.string(scenario.explanation(t_s)))
                put(CAUSE_TOPIC, stamp_ns, messages.string(scenario.cause(t_s).name))
                xyz, yaw = scenario.future_trajectory(t_s)
                put(FUTURE_PATH_TOPIC, stamp_ns,
                    messages.ego_path(stamp_ns, xyz, yaw, int(round(TRAJECTORY_DT_S * NS_PER_S))))
            else:
                camera = cameras[camera_index]
                image = pending.pop((offset, camera.name), None)
                if image is None:
                    same_time = cameras_at[offset]
                    for name, rendered in zip(same_time, renderer.render_many(same_time, t_s)):
                        pending[(offset, name)] = rendered
                    image = pending.pop((offset, camera.name))
                put(camera_info_topic(camera.name), stamp_ns, messages.camera_info(stamp_ns, camera))
                if config.compressed:
                    message = messages.compressed_image(stamp_ns, camera, image, config.jpeg_quality)
                else:
                    message = messages.raw_image(stamp_ns, camera, image)
                put(image_topic(camera.name, config.compressed), stamp_ns, message)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    summary = BagSummary(path=path, storage=config.storage, duration_s=duration, message_counts=counts,
                         size_bytes=size, wall_s=time.perf_counter() - wall_start)
    logger.info("wrote %s: %d messages, %.1f MB in %.1f s", path, sum(counts.values()), size / 1e6,
                summary.wall_s)
    return summary
