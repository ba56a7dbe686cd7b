"""Bag writer round trips through rosbags' reader: topics, counts, stamps, and message contents."""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosDurability

from alpamayo_ros.sim import bag as simbag
from alpamayo_ros.sim.bag import BagConfig, camera_info_topic, image_topic, write_bag
from alpamayo_ros.sim.cameras import CAMERA_SPECS, camera_rig
from alpamayo_ros.sim.make_bag import main as make_bag_main
from alpamayo_ros.sim.render import SceneRenderer
from alpamayo_ros.sim.scenarios import generate_scenario
from alpamayo_ros.sim.scene import ScenarioKind

NS = 1_000_000_000
DURATION_S = 2.0
SCALE = 0.1
CAMERAS = [spec.name for spec in CAMERA_SPECS]


@functools.cache
def scenario():
    return generate_scenario(3, ScenarioKind.LEAD_BRAKING, DURATION_S)


@pytest.fixture(scope="module")
def bags(tmp_path_factory) -> dict[str, tuple[Path, BagConfig]]:
    """Three small bags: JPEG in MCAP, JPEG in sqlite3, raw rgb8 with camera offsets and jitter in MCAP."""
    root = tmp_path_factory.mktemp("bags")
    configs = {
        "mcap": BagConfig(storage="mcap", image_scale=SCALE, odom_rate_hz=50.0),
        "sqlite3": BagConfig(storage="sqlite3", image_scale=SCALE, odom_rate_hz=20.0, camera_rate_hz=20.0),
        "raw": BagConfig(image_scale=SCALE, compressed=False, camera_jitter_ns=2_000_000,
                         camera_offsets_ns=(0, 5_000_000, 10_000_000, 15_000_000)),
    }
    out = {}
    for name, config in configs.items():
        write_bag(root / name, scenario(), config)
        out[name] = (root / name, config)
    return out


def read_all(path: Path) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(bag timestamp, deserialized message)] in bag order."""
    messages: dict[str, list[tuple[int, object]]] = {}
    with AnyReader([path]) as reader:
        for connection, stamp_ns, data in reader.messages():
            message = reader.deserialize(data, connection.msgtype)
            messages.setdefault(connection.topic, []).append((stamp_ns, message))
    return messages


def header_ns(message: object) -> int:
    return message.header.stamp.sec * NS + message.header.stamp.nanosec


@pytest.mark.parametrize("name", ["mcap", "sqlite3"])
def test_topics_counts_and_types(bags, name):
    path, config = bags[name]
    assert (path / f"{path.name}.{'mcap' if name == 'mcap' else 'db3'}").is_file()
    with AnyReader([path]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        counts = {c.topic: c.msgcount for c in reader.connections}
        tf_static = next(c for c in reader.connections if c.topic == "/tf_static")
        assert tf_static.ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL
    frames = int(DURATION_S * config.camera_rate_hz)
    for camera in CAMERAS:
        assert types[image_topic(camera, True)] == "sensor_msgs/msg/CompressedImage"
        assert counts[image_topic(camera, True)] == frames
        assert counts[camera_info_topic(camera)] == frames
    assert types[simbag.ODOMETRY_TOPIC] == "nav_msgs/msg/Odometry"
    assert counts[simbag.ODOMETRY_TOPIC] == counts["/tf"] == int(DURATION_S * config.odom_rate_hz)
    assert counts["/clock"] == int(DURATION_S * config.clock_rate_hz)
    assert counts["/tf_static"] == 1
    for topic in (simbag.EXPLANATION_TOPIC, simbag.CAUSE_TOPIC, simbag.FUTURE_PATH_TOPIC):
        assert counts[topic] == 20
    assert types[simbag.FUTURE_PATH_TOPIC] == "nav_msgs/msg/Path"
    assert len(types) == 7 + 2 * len(CAMERAS)


@pytest.mark.parametrize("name", ["mcap", "sqlite3", "raw"])
def test_bag_time_equals_header_stamps_in_sim_time(bags, name):
    path, config = bags[name]
    messages = read_all(path)
    start = config.start_time_ns
    stamps = []
    for topic, items in messages.items():
        for stamp_ns, message in items:
            assert start <= stamp_ns < start + int(DURATION_S * NS), topic
            if hasattr(message, "header"):
                assert header_ns(message) == stamp_ns, topic
            stamps.append(stamp_ns)
    with AnyReader([path]) as reader:
        in_bag_order = [t for _, t, _ in reader.messages()]
    assert in_bag_order == sorted(in_bag_order)
    clock = [m.clock.sec * NS + m.clock.nanosec for _, m in messages["/clock"]]
    assert clock == [t for t, _ in messages["/clock"]] and clock[0] == start


@pytest.mark.parametrize("name", ["mcap", "sqlite3"])
def test_odometry_rate_and_content(bags, name):
    path, config = bags[name]
    odometry = read_all(path)[simbag.ODOMETRY_TOPIC]
    gaps = np.diff([t for t, _ in odometry])
    assert np.all(gaps == int(NS / config.odom_rate_hz))
    for stamp_ns, message in odometry[::10]:
        ego = scenario().ego_state((stamp_ns - config.start_time_ns) / NS)
        assert (message.header.frame_id, message.child_frame_id) == ("odom", "base_link")
        position = message.pose.pose.position
        np.testing.assert_allclose([position.x, position.y, position.z], ego.position_m, atol=1e-9)
        q = message.pose.pose.orientation
        assert 2.0 * np.arctan2(q.z, q.w) == pytest.approx(ego.yaw_rad, abs=1e-9)
        assert (q.x, q.y) == (0.0, 0.0)
        assert message.twist.twist.linear.x == pytest.approx(ego.speed_mps)
        assert message.twist.twist.angular.z == pytest.approx(ego.yaw_rate_rps)
        assert np.all(np.diag(message.pose.covariance.reshape(6, 6)) > 0.0)
        assert np.all(np.diag(message.twist.covariance.reshape(6, 6)) > 0.0)


def test_jpeg_images_decode_close_to_the_render(bags):
    path, config = bags["mcap"]
    messages = read_all(path)
    renderer = SceneRenderer(scenario(), camera_rig(SCALE))
    for camera in CAMERAS:
        stamp_ns, message = messages[image_topic(camera, True)][7]
        assert message.format == "rgb8; jpeg compressed bgr8"
        assert message.header.frame_id == f"{camera}_optical_frame"
        decoded = cv2.cvtColor(cv2.imdecode(message.data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        expected = renderer.render(camera, (stamp_ns - config.start_time_ns) / NS)
        assert decoded.shape == expected.shape == (108, 192, 3)
        assert np.abs(decoded.astype(int) - expected.astype(int)).mean() < 6.0


def test_raw_images_are_exact_and_camera_stamps_are_offset(bags):
    path, config = bags["raw"]
    messages = read_all(path)
    renderer = SceneRenderer(scenario(), camera_rig(SCALE))
    period = NS // 10
    for index, camera in enumerate(CAMERAS):
        frames = messages[image_topic(camera, False)]
        offsets = np.array([t - config.start_time_ns for t, _ in frames]) - period * np.arange(len(frames))
        nominal = config.camera_offsets_ns[index]
        in_range = np.arange(len(frames)) > 0  # the first frame may be clipped at 0
        assert np.all(np.abs(offsets[in_range] - nominal) <= config.camera_jitter_ns)
        stamp_ns, message = frames[5]
        assert (message.encoding, message.step, message.height, message.width) == ("rgb8", 3 * 192, 108, 192)
        image = message.data.reshape(108, 192, 3)
        np.testing.assert_array_equal(image, renderer.render(camera, (stamp_ns - config.start_time_ns) / NS))
        info_stamp, info = messages[camera_info_topic(camera)][5]
        assert info_stamp == stamp_ns and info.distortion_model == "plumb_bob"
        np.testing.assert_allclose(info.k.reshape(3, 3), camera_rig(SCALE)[index].K)
    jittered = [t for t, _ in messages[image_topic(CAMERAS[0], False)]]
    assert len(set(np.diff(jittered))) > 1  # jitter really moves the stamps


def test_static_transforms_put_the_optical_axis_forward(bags):
    (_, message), = read_all(bags["mcap"][0])["/tf_static"]
    frames = {t.child_frame_id: t for t in message.transforms}
    assert set(frames) == {f"{c}_optical_frame" for c in CAMERAS}
    wide = frames["camera_front_wide_120fov_optical_frame"]
    assert wide.header.frame_id == "base_link"
    q = wide.transform.rotation
    x, y, z, w = q.x, q.y, q.z, q.w
    optical_z_in_base = np.array([2 * (x * z + w * y), 2 * (y * z - w * x), 1 - 2 * (x * x + y * y)])
    pitch = np.deg2rad(CAMERA_SPECS[1].pitch_deg)
    np.testing.assert_allclose(optical_z_in_base, [np.cos(pitch), 0.0, -np.sin(pitch)], atol=1e-9)
    assert wide.transform.translation.x == pytest.approx(CAMERA_SPECS[1].position_m[0])


def test_ground_truth_topics_match_the_scenario(bags):
    path, config = bags["mcap"]
    messages = read_all(path)
    sc = scenario()
    for (stamp_ns, text), (_, cause), (_, future) in zip(messages[simbag.EXPLANATION_TOPIC],
                                                         messages[simbag.CAUSE_TOPIC],
                                                         messages[simbag.FUTURE_PATH_TOPIC]):
        t_s = (stamp_ns - config.start_time_ns) / NS
        assert text.data == sc.explanation(t_s)
        assert cause.data == sc.cause(t_s).name
        assert header_ns(future) == stamp_ns and future.header.frame_id == "base_link"
        assert len(future.poses) == 64
        xyz, _ = sc.future_trajectory(t_s)
        last = future.poses[-1]
        assert header_ns(last) == stamp_ns + 64 * NS // 10
        np.testing.assert_allclose([last.pose.position.x, last.pose.position.y], xyz[-1, :2], atol=1e-5)


def test_existing_path_is_never_overwritten(tmp_path):
    (tmp_path / "bag").mkdir()
    with pytest.raises(FileExistsError):
        write_bag(tmp_path / "bag", scenario(), BagConfig(image_scale=SCALE))


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"storage": "rosbag1"}, "storage"), ({"camera_rate_hz": 5.0}, "camera_rate_hz"),
    ({"odom_rate_hz": 200.0}, "odom_rate_hz"), ({"jpeg_quality": 0}, "jpeg_quality"),
    ({"camera_offsets_ns": (1, 2)}, "camera_offsets_ns"), ({"camera_jitter_ns": -1}, "camera_jitter_ns"),
])
def test_bag_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        BagConfig(**kwargs)


def test_make_bag_cli(tmp_path, capsys):
    out = tmp_path / "cli_bag"
    args = [str(out), "--seed", "2", "--scenario", "pedestrian", "--duration", "1", "--image-scale", "0.1",
            "--format", "sqlite3", "--camera-rate", "20", "--odom-rate", "100", "--raw"]
    assert make_bag_main(args) == 0
    printed = capsys.readouterr().out
    assert "scenario: pedestrian, seed 2" in printed and "Keep lane and follow the road" in printed
    with AnyReader([out]) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts[image_topic(CAMERAS[1], False)] == 20
    assert counts[simbag.ODOMETRY_TOPIC] == 100
    assert make_bag_main(args) == 2  # exists
    assert make_bag_main(args + ["--overwrite"]) == 0
