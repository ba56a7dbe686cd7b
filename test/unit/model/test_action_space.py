"""Unicycle action space: stats, v0, integration vs closed form, inverse (MODEL.md §7, §8.3, §11.2)."""

import math

import pytest
import torch
from torch import nn

from alpamayo_ros.model.action_space import (
    ActionSpaceConfig,
    UnicycleAccelCurvatureActionSpace,
    cholesky_solve_with_retry,
)

T, H, DT = 64, 16, 0.1
BF16_STATS = {  # §8.3
    "accel_mean": 0.029052734375,
    "accel_std": 0.6796875,
    "curvature_mean": 0.0002689361572265625,
    "curvature_std": 0.026123046875,
}


@pytest.fixture(scope="module")
def space() -> UnicycleAccelCurvatureActionSpace:
    return UnicycleAccelCurvatureActionSpace(ActionSpaceConfig())


def yaw_rot(yaw: torch.Tensor) -> torch.Tensor:
    """R_z for yaw [...] -> [..., 3, 3]."""
    c, s, z, o = torch.cos(yaw), torch.sin(yaw), torch.zeros_like(yaw), torch.ones_like(yaw)
    rows = [torch.stack([c, -s, z], -1), torch.stack([s, c, z], -1), torch.stack([z, z, o], -1)]
    return torch.stack(rows, -2)


def straight_history(speed: float, yaw: float = 0.0, n: int = H, z: float = 0.0):
    """Constant-speed straight history ending at the origin: x_t = v (t − t0) along heading `yaw`."""
    t = torch.arange(n, dtype=torch.float32) * DT - (n - 1) * DT
    heading = torch.tensor([math.cos(yaw), math.sin(yaw), 0.0])
    xyz = speed * t[:, None] * heading + torch.tensor([0.0, 0.0, z])
    return xyz, yaw_rot(torch.full((n,), yaw))


def test_buffers_keys_and_bf16_values():
    parent = nn.Module()
    parent.action_space = UnicycleAccelCurvatureActionSpace(ActionSpaceConfig())
    state = parent.state_dict()
    assert set(state) == {f"action_space.{name}" for name in BF16_STATS}
    for name, value in BF16_STATS.items():
        buf = state[f"action_space.{name}"]
        assert buf.shape == () and buf.dtype == torch.bfloat16
        assert buf.item() == value
    assert list(parent.parameters()) == []


def test_float32_stats_option_keeps_config_digits():
    cfg = ActionSpaceConfig(stats_dtype="float32")
    space32 = UnicycleAccelCurvatureActionSpace(cfg)
    for name in BF16_STATS:
        buf = getattr(space32, name)
        assert buf.dtype == torch.float32
        assert buf.item() == torch.tensor(getattr(cfg, name), dtype=torch.float32).item()
        assert buf.item() != BF16_STATS[name]


def test_normalize_round_trip_and_zero_is_not_physical_zero(space):
    accel, curvature = space.denormalize(torch.zeros(T, 2))
    assert torch.all(accel == BF16_STATS["accel_mean"])
    assert torch.all(curvature == BF16_STATS["curvature_mean"])
    gen = torch.Generator().manual_seed(0)
    action = torch.randn(4, T, 2, generator=gen)
    torch.testing.assert_close(space.normalize(*space.denormalize(action)), action, rtol=0, atol=1e-5)
    physical_zero = space.normalize(torch.zeros(T), torch.zeros(T))
    expected = torch.tensor([  # ≈ (−0.0427, −0.0103)
        -BF16_STATS["accel_mean"] / BF16_STATS["accel_std"],
        -BF16_STATS["curvature_mean"] / BF16_STATS["curvature_std"],
    ])
    torch.testing.assert_close(physical_zero, expected.expand(T, 2))
    hist = straight_history(10.0)
    xyz_norm_zero, _ = space.action_to_traj(torch.zeros(T, 2), *hist)
    xyz_phys_zero, _ = space.action_to_traj(physical_zero, *hist)
    assert (xyz_norm_zero - xyz_phys_zero).abs().max() > 0.1  # mean accel ≈ 0.029 m/s² adds ≈ 0.6 m at 6.4 s


def test_no_clamping(space):
    accel, curvature = space.denormalize(torch.tensor([[100.0, 100.0]]))
    assert accel.item() > 9.8 and curvature.item() > 0.33


@pytest.mark.parametrize("speed", [0.0, 1.0, 12.5, 30.0])
@pytest.mark.parametrize("n_hist", [4, 16])
def test_initial_speed_of_straight_history(space, speed, n_hist):
    v0 = space.estimate_initial_speed(*straight_history(speed, yaw=2.9, n=n_hist))
    assert v0.shape == () and v0.dtype == torch.float32
    assert v0.item() == pytest.approx(speed, rel=2e-4, abs=1e-5)  # ridge 1e-4 biases v0 slightly low


def test_initial_speed_is_the_latest_speed_under_acceleration(space):
    # x_t = v t + a t²/2 for t ≤ 0: speed rises from v − 1.5 a to v at t0; linear speed has no 3rd difference.
    speed, accel = 8.0, 2.0
    t = torch.arange(H, dtype=torch.float32) * DT - (H - 1) * DT
    xyz = torch.stack([speed * t + accel * t**2 / 2, torch.zeros(H), torch.zeros(H)], dim=-1)
    v0 = space.estimate_initial_speed(xyz, torch.eye(3).expand(H, 3, 3))
    assert v0.item() == pytest.approx(speed, abs=5e-3)  # the speed one step earlier is 0.2 m/s lower


def test_initial_speed_batched_and_rejects_short_history(space):
    xyz, rot = zip(*(straight_history(v) for v in (3.0, 8.0)))
    v0 = space.estimate_initial_speed(torch.stack(xyz), torch.stack(rot))
    torch.testing.assert_close(v0, torch.tensor([3.0, 8.0]), rtol=2e-4, atol=0)
    with pytest.raises(ValueError, match="H >= 4"):
        space.estimate_initial_speed(*straight_history(5.0, n=3))


def test_zero_physical_action_drives_straight(space):
    hist = straight_history(10.0)
    v0 = space.estimate_initial_speed(*hist).item()
    xyz, rot = space.action_to_traj(space.normalize(torch.zeros(T), torch.zeros(T)), *hist)
    assert xyz.shape == (T, 3) and rot.shape == (T, 3, 3)
    k = torch.arange(1, T + 1, dtype=torch.float32)
    torch.testing.assert_close(xyz[:, 0], v0 * k * DT, rtol=1e-5, atol=1e-5)
    assert xyz[:, 1:].abs().max() < 1e-5
    torch.testing.assert_close(rot, torch.eye(3).expand(T, 3, 3), rtol=0, atol=1e-6)


def test_constant_curvature_follows_circle(space):
    kappa, hist = 0.05, straight_history(10.0)
    v0 = space.estimate_initial_speed(*hist).item()
    xyz, rot = space.action_to_traj(space.normalize(torch.zeros(T), torch.full((T,), kappa)), *hist)
    k = torch.arange(1, T + 1, dtype=torch.float32)
    theta = torch.atan2(rot[:, 1, 0], rot[:, 0, 0])
    expected_theta = kappa * v0 * k * DT  # reaches 3.2 rad: atan2 wraps past π
    wrapped_error = torch.atan2(torch.sin(theta - expected_theta), torch.cos(theta - expected_theta))
    torch.testing.assert_close(wrapped_error, torch.zeros(T), rtol=0, atol=1e-5)
    radius = 1 / kappa
    step = kappa * v0 * DT
    trapezoid_error = radius * step**2 / 6  # chords shortened by cos(Δθ/2) instead of sinc(Δθ/2)
    dist = torch.linalg.norm(xyz[:, :2] - torch.tensor([0.0, radius]), dim=-1)
    assert (dist - radius).abs().max() < 1.5 * trapezoid_error
    assert (dist - radius).abs().max() > 0.1 * trapezoid_error  # the bound is tight, not vacuous


def test_constant_acceleration_matches_kinematics(space):
    accel, hist = 1.5, straight_history(5.0)
    v0 = space.estimate_initial_speed(*hist).item()
    xyz, _ = space.action_to_traj(space.normalize(torch.full((T,), accel), torch.zeros(T)), *hist)
    t = torch.arange(1, T + 1, dtype=torch.float32) * DT
    # Speed is linear in time, so the trapezoid rule is exact here.
    torch.testing.assert_close(xyz[:, 0], v0 * t + accel * t**2 / 2, rtol=1e-5, atol=1e-4)


def test_rotations_orthonormal_and_z_copied(space):
    gen = torch.Generator().manual_seed(1)
    action = torch.randn(5, T, 2, generator=gen) * 3
    xyz_h, rot_h = straight_history(8.0, z=0.7)
    xyz, rot = space.action_to_traj(action, xyz_h.expand(5, H, 3), rot_h.expand(5, H, 3, 3))
    torch.testing.assert_close(rot @ rot.mT, torch.eye(3).expand(5, T, 3, 3), rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(5, T), rtol=0, atol=1e-6)
    assert torch.all(xyz[..., 2] == 0.7)


def test_history_broadcasts_over_samples(space):
    gen = torch.Generator().manual_seed(2)
    action = torch.randn(2, 3, T, 2, generator=gen)
    hists = [straight_history(v) for v in (4.0, 9.0)]
    xyz_h = torch.stack([h[0] for h in hists])[:, None]  # [B, 1, H, 3]
    rot_h = torch.stack([h[1] for h in hists])[:, None]  # [B, 1, H, 3, 3]
    xyz, rot = space.action_to_traj(action, xyz_h, rot_h)
    assert xyz.shape == (2, 3, T, 3) and rot.shape == (2, 3, T, 3, 3)
    single_xyz, _ = space.action_to_traj(action[1, 2], *hists[1])
    torch.testing.assert_close(xyz[1, 2], single_xyz)


def test_autocast_does_not_change_the_geometry(space):
    action = torch.randn(2, T, 2, generator=torch.Generator().manual_seed(4))
    hist = straight_history(7.0)
    xyz, rot = space.action_to_traj(action, *hist)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        xyz_ac, rot_ac = space.action_to_traj(action, *hist)
    assert xyz_ac.dtype == torch.float32
    assert torch.equal(xyz, xyz_ac) and torch.equal(rot, rot_ac)


def test_action_shape_is_checked(space):
    with pytest.raises(ValueError, match="64"):
        space.action_to_traj(torch.zeros(32, 2), *straight_history(5.0))


def _smooth_actions(space):
    k = torch.arange(T, dtype=torch.float32)
    wavy = space.normalize(0.8 * torch.sin(0.1 * k), 0.02 * torch.cos(0.05 * k))
    u_turn = space.normalize(torch.zeros(T), torch.full((T,), 0.1))  # 6.4 rad of yaw: needs unwrapping
    braking = space.normalize(torch.full((T,), -1.0), 0.01 * torch.sin(0.2 * k))
    return torch.stack([wavy, u_turn, braking])  # [3, T, 2]


def test_traj_to_action_round_trip(space):
    action = _smooth_actions(space)
    xyz_h, rot_h = straight_history(10.0)
    hist = (xyz_h.expand(3, H, 3), rot_h.expand(3, H, 3, 3))
    xyz, rot = space.action_to_traj(action, *hist)
    fitted = space.traj_to_action(xyz, rot, *hist)
    assert fitted.shape == (3, T, 2) and fitted.dtype == torch.float32
    xyz_again, _ = space.action_to_traj(fitted, *hist)
    assert (xyz_again - xyz).norm(dim=-1).max() < 0.05  # regularised, not exact: ≈ 6 mm measured
    accel, curvature = space.denormalize(fitted)
    accel_true, curvature_true = space.denormalize(action)
    assert (accel - accel_true).abs().max() < 0.02
    assert (curvature - curvature_true).abs().max() < 1e-3


def test_traj_to_action_of_parked_car_is_physical_zero(space):
    xyz_h, rot_h = straight_history(0.0)
    fitted = space.traj_to_action(torch.zeros(T, 3), torch.eye(3).expand(T, 3, 3), xyz_h, rot_h)
    accel, curvature = space.denormalize(fitted)
    assert accel.abs().max() < 1e-5 and curvature.abs().max() < 1e-5


def test_cholesky_retry_raises_ridge_until_it_succeeds():
    normal = torch.diag(torch.tensor([-5e-4, 1.0]))  # indefinite: ridge 1e-4 fails, 1e-3 works
    rhs = torch.tensor([1.0, 2.0])
    x = cholesky_solve_with_retry(normal, rhs, ridge=1e-4, max_retries=3)
    torch.testing.assert_close(x, rhs / torch.tensor([-5e-4 + 1e-3, 1.0 + 1e-3]))
    with pytest.raises(torch.linalg.LinAlgError):
        cholesky_solve_with_retry(normal, rhs, ridge=1e-4, max_retries=0)
    batch = torch.stack([torch.eye(2), normal])  # only the failing element gets a larger ridge
    x = cholesky_solve_with_retry(batch, rhs.expand(2, 2), ridge=1e-4, max_retries=3)
    torch.testing.assert_close(x[0], rhs / (1 + 1e-4))


def test_traj_to_action_raises_on_non_finite(space):
    xyz, rot = space.action_to_traj(torch.zeros(T, 2), *straight_history(5.0))
    xyz = xyz.clone()
    xyz[10, 0] = float("nan")
    with pytest.raises(torch.linalg.LinAlgError):
        space.traj_to_action(xyz, rot, *straight_history(5.0))


@pytest.mark.parametrize(
    "kwargs",
    [dict(accel_std=0.0), dict(dt=-0.1), dict(n_waypoints=2), dict(v_ridge=0.0), dict(stats_dtype="float16"),
     dict(curvature_bounds=(0.33, -0.33)), dict(a_lambda=-1.0)],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match="ActionSpaceConfig"):
        ActionSpaceConfig(**kwargs)
