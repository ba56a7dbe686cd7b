"""Camera rig geometry and the rasteriser: where points land, and what the rendered images contain."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from alpamayo_ros.sim.cameras import CAMERA_SPECS, CameraModel, CameraSpec, camera_rig, image_size
from alpamayo_ros.sim.render import RenderConfig, SceneRenderer
from alpamayo_ros.sim.scenarios import generate_scenario
from alpamayo_ros.sim.scene import EgoState, LightState, ScenarioKind

LEFT, WIDE, RIGHT, TELE = (spec.name for spec in CAMERA_SPECS)


def ego_at(x: float = 10.0, y: float = -3.0, yaw_deg: float = 30.0) -> EgoState:
    return EgoState(t_s=0.0, position_m=np.array([x, y, 0.0]), yaw_rad=np.deg2rad(yaw_deg), speed_mps=0.0,
                    accel_mps2=0.0, yaw_rate_rps=0.0)


def to_world(ego: EgoState, points_ego: np.ndarray) -> np.ndarray:
    """Ego-frame points [N, 3] (x forward, y left, z up) to the odometry frame."""
    return points_ego @ ego.rotation.T + ego.position_m


def visible_in(point_ego: list[float], ego: EgoState | None = None) -> dict[str, np.ndarray | None]:
    """Pixel of the point in each camera where it is visible, else None."""
    ego = ego or ego_at()
    world = to_world(ego, np.array([point_ego], dtype=np.float64))
    out = {}
    for camera in camera_rig(0.25):
        pixels, in_front = camera.project(world, ego)
        out[camera.name] = pixels[0] if camera.in_image(pixels, in_front)[0] else None
    return out


def test_rig_is_the_checkpoint_camera_set_in_model_order():
    assert [s.name for s in CAMERA_SPECS] == ["camera_cross_left_120fov", "camera_front_wide_120fov",
                                             "camera_cross_right_120fov", "camera_front_tele_30fov"]
    assert [s.index for s in CAMERA_SPECS] == [0, 1, 2, 6]
    assert [s.hfov_deg for s in CAMERA_SPECS] == [120.0, 120.0, 120.0, 30.0]


@pytest.mark.parametrize(("scale", "size"), [(1.0, (1080, 1920)), (0.25, (270, 480)), (1 / 6, (180, 320)),
                                             (0.1, (108, 192))])
def test_image_sizes(scale, size):
    assert image_size(scale) == size
    assert {(c.height_px, c.width_px) for c in camera_rig(scale)} == {size}


def test_intrinsics_follow_the_field_of_view():
    for camera in camera_rig(0.25):
        half = np.deg2rad(camera.spec.hfov_deg / 2)
        assert camera.K[0, 0] == pytest.approx(240.0 / np.tan(half))
        assert camera.K[0, 0] == camera.K[1, 1]
        assert (camera.K[0, 2], camera.K[1, 2]) == (240.0, 135.0)
        np.testing.assert_array_equal(camera.P[:, :3], camera.K)
        np.testing.assert_array_equal(camera.P[:, 3], 0.0)
        np.testing.assert_array_equal(camera.D, np.zeros(5))
    assert camera_rig(1.0)[1].K[0, 0] == pytest.approx(960.0 / np.tan(np.deg2rad(60.0)))  # 554.3 px


def test_point_on_the_road_ahead_is_near_the_centre_column_of_the_front_cameras():
    seen = visible_in([40.0, 0.0, 0.0])
    cameras = {c.name: c for c in camera_rig(0.25)}
    for name in (WIDE, TELE):
        assert seen[name] is not None, name
        assert abs(seen[name][0] - 240.0) < 0.02 * 480, (name, seen[name])
        camera = cameras[name]
        horizon_row = 135.0 - camera.focal_px * np.tan(np.deg2rad(camera.spec.pitch_deg))
        assert seen[name][1] > horizon_row  # on the ground, below the horizon
    assert seen[LEFT] is None and seen[RIGHT] is None  # 60 deg yaw, 120 deg fov: 0 deg is the edge


def test_point_to_the_left_is_seen_by_cross_left_only():
    seen = visible_in([4.0, 12.0, 1.0])  # 72 deg to the left
    assert seen[LEFT] is not None
    assert seen[RIGHT] is None and seen[TELE] is None and seen[WIDE] is None
    mirrored = visible_in([4.0, -12.0, 1.0])
    assert mirrored[RIGHT] is not None and mirrored[LEFT] is None
    assert mirrored[RIGHT][0] == pytest.approx(480.0 - seen[LEFT][0], abs=1.0)  # the rig is symmetric


def test_point_behind_projects_nowhere():
    assert all(pixel is None for pixel in visible_in([-20.0, 0.0, 1.0]).values())
    assert all(pixel is None for pixel in visible_in([-5.0, 3.0, 1.0]).values())


def test_optical_axis_hits_the_principal_point_and_left_is_image_left():
    ego = ego_at()
    for camera in camera_rig(0.25):
        spec = camera.spec
        rot = ego.rotation @ spec.rotation_base_optical()
        center = ego.position_m + ego.rotation @ np.asarray(spec.position_m)
        axis_point = center + 25.0 * rot[:, 2]
        left_point = axis_point + 2.0 * (ego.rotation @ np.array([-np.sin(np.deg2rad(spec.yaw_deg)),
                                                                 np.cos(np.deg2rad(spec.yaw_deg)), 0.0]))
        pixels, in_front = camera.project(np.stack([axis_point, left_point]), ego)
        assert in_front.all()
        np.testing.assert_allclose(pixels[0], [240.0, 135.0], atol=1e-6)
        assert pixels[1, 0] < pixels[0, 0]  # something to the left appears left of centre


def test_camera_spec_validation():
    with pytest.raises(ValueError, match="hfov_deg"):
        CameraSpec("x", 0, 180.0, (0.0, 0.0, 1.0), 0.0, 0.0)
    with pytest.raises(ValueError, match="image size"):
        CameraModel(CAMERA_SPECS[0], 4, 4)
    with pytest.raises(ValueError, match="image_scale"):
        image_size(0.0)


@functools.cache
def red_light_renderer(scale: float = 0.25, supersample: int = 1) -> SceneRenderer:
    scenario = generate_scenario(1, ScenarioKind.RED_LIGHT, 15.0)
    return SceneRenderer(scenario, camera_rig(scale), RenderConfig(supersample=supersample))


def test_render_shapes_dtypes_and_determinism():
    renderer = red_light_renderer()
    images = renderer.render_many([c.name for c in camera_rig(0.25)], 4.0)
    assert [im.shape for im in images] == [(270, 480, 3)] * 4
    assert all(im.dtype == np.uint8 for im in images)
    again = SceneRenderer(generate_scenario(1, ScenarioKind.RED_LIGHT, 15.0), camera_rig(0.25))
    np.testing.assert_array_equal(again.render(WIDE, 4.0), images[1])
    assert not np.array_equal(renderer.render(WIDE, 5.0), images[1])  # the ego moved


def test_front_image_has_sky_above_and_road_below():
    image = red_light_renderer().render(WIDE, 2.0).astype(int)
    top, bottom = image[:20].reshape(-1, 3).mean(axis=0), image[-30:, 200:280].reshape(-1, 3).mean(axis=0)
    assert top[2] > top[0] + 20  # blue sky
    assert abs(bottom[0] - bottom[2]) < 15 and 60 < bottom.mean() < 110  # grey asphalt


def test_red_lamp_is_visible_in_the_tele_camera():
    renderer = red_light_renderer()
    assert renderer.scenario.light_state(3.0) == LightState.RED
    image = renderer.render(TELE, 3.0).astype(int)
    red = (image[..., 0] > 200) & (image[..., 1] < 90) & (image[..., 2] < 90)
    assert red.sum() >= 2
    rows, cols = np.nonzero(red)
    assert rows.mean() < 135  # the lamp hangs above the horizon
    assert not ((image[..., 1] > 200) & (image[..., 0] < 90)).any()  # no green lamp lit


def test_full_size_and_supersampled_rendering():
    full = SceneRenderer(red_light_renderer().scenario, camera_rig(1.0))
    image = full.render(TELE, 3.0)
    assert image.shape == (1080, 1920, 3)
    smooth = red_light_renderer(0.1, 2).render(WIDE, 3.0)
    assert smooth.shape == (108, 192, 3)
    # Anti-aliasing makes more distinct colours than plain rasterisation.
    plain = red_light_renderer(0.1, 1).render(WIDE, 3.0)
    assert len(np.unique(smooth.reshape(-1, 3), axis=0)) > len(np.unique(plain.reshape(-1, 3), axis=0))


def test_render_config_validation():
    with pytest.raises(ValueError, match="near_m"):
        RenderConfig(near_m=0.0)
    with pytest.raises(ValueError, match="supersample"):
        RenderConfig(supersample=8)
