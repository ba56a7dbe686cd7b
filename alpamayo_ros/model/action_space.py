"""Unicycle (acceleration, curvature) action space: normalisation, v0 estimate, integration and its inverse.

An action is `[..., T, 2]` normalised (acceleration, curvature), one pair per `dt` step; integrating it
from the t0 pose gives the future trajectory (MODEL.md §7; upstream
`action_space/unicycle_accel_curvature.py`). Poses are in the t0 ego frame (x forward, y left, z up).
All geometry runs in float32 with autocast disabled, whatever the dtype of the inputs or of the
statistics buffers.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

_STATS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class ActionSpaceConfig:
    """Action-space constants; defaults are the checkpoint's `action_space_cfg` (MODEL.md §7.1)."""

    accel_mean: float = 0.02902694707164455  # m/s², acceleration normalisation mean; checkpoint
    accel_std: float = 0.6810426736454882  # m/s², acceleration normalisation std; checkpoint
    curvature_mean: float = 0.0002692167976330542  # 1/m, curvature normalisation mean; checkpoint
    curvature_std: float = 0.026148280660833106  # 1/m, curvature normalisation std; checkpoint
    accel_bounds: tuple[float, float] = (-9.8, 9.8)  # m/s²; checkpoint; informational, never clamped (§7.1)
    curvature_bounds: tuple[float, float] = (-0.33, 0.33)  # 1/m; checkpoint; informational, never clamped
    dt: float = 0.1  # s, spacing of history and future poses; checkpoint
    n_waypoints: int = 64  # T, future waypoints t0+dt … t0+T·dt; checkpoint
    theta_lambda: float = 1e-6  # yaw third-difference smoothing, divided by dt⁶ (§7.4); checkpoint
    theta_ridge: float = 1e-8  # yaw ridge; checkpoint
    v_lambda: float = 1e-6  # speed third-difference smoothing, divided by dt⁶ (§7.2, §7.4); checkpoint
    v_ridge: float = 1e-4  # speed ridge; checkpoint
    a_lambda: float = 1e-4  # acceleration second-difference smoothing, divided by dt⁴ (§7.4); checkpoint
    a_ridge: float = 1e-4  # acceleration ridge; checkpoint
    kappa_lambda: float = 1e-4  # curvature second-difference smoothing, divided by dt⁴ (§7.4); checkpoint
    kappa_ridge: float = 1e-4  # curvature ridge; checkpoint
    # dtype of the 4 statistics buffers: "bfloat16" = reference runtime values (§8.3), "float32" = the digits
    stats_dtype: str = "bfloat16"
    # ours: the a/κ solves retry with ridge ×10 this often, then raise (upstream's count is not in MODEL.md)
    max_cholesky_retries: int = 6

    def __post_init__(self) -> None:
        for name in ("accel_std", "curvature_std", "dt"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ActionSpaceConfig.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("accel_mean", "curvature_mean"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"ActionSpaceConfig.{name} must be finite, got {getattr(self, name)!r}")
        for name in ("accel_bounds", "curvature_bounds"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"ActionSpaceConfig.{name} must satisfy low < high, got {(lo, hi)!r}")
        if self.n_waypoints < 3:  # the second-difference smoothers need at least 3 unknowns
            raise ValueError(f"ActionSpaceConfig.n_waypoints must be >= 3, got {self.n_waypoints!r}")
        for name in ("theta_lambda", "v_lambda", "a_lambda", "kappa_lambda"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"ActionSpaceConfig.{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("theta_ridge", "v_ridge", "a_ridge", "kappa_ridge"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ActionSpaceConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.stats_dtype not in _STATS_DTYPES:
            raise ValueError(
                f"ActionSpaceConfig.stats_dtype must be one of {sorted(_STATS_DTYPES)}, "
                f"got {self.stats_dtype!r}"
            )
        if self.max_cholesky_retries < 0:
            raise ValueError(
                f"ActionSpaceConfig.max_cholesky_retries must be >= 0, got {self.max_cholesky_retries!r}"
            )


def _no_autocast(device: torch.device) -> AbstractContextManager:
    """Disable autocast for the action-space math (upstream runs it in float32, §7.2)."""
    return torch.autocast(device_type=device.type, enabled=False)


def _yaw(rot: Tensor) -> Tensor:
    """Yaw θ = atan2(R[1,0], R[0,0]) of rotations [..., 3, 3] -> [...]."""
    return torch.atan2(rot[..., 1, 0], rot[..., 0, 0])


def _unwrap(theta: Tensor) -> Tensor:
    """Unwrap angles [..., N] along the last axis: wrap each difference to (-π, π], then cumulate from θ_0."""
    step = torch.diff(theta, dim=-1)  # [..., N-1]
    step = torch.atan2(torch.sin(step), torch.cos(step))
    return torch.cat([theta[..., :1], theta[..., :1] + torch.cumsum(step, dim=-1)], dim=-1)


def _shifted_eye(rows: int, cols: int, offset: int, device: torch.device) -> Tensor:
    """[rows, cols] float32 with ones at (i, i + offset); needs rows + offset <= cols."""
    return torch.eye(cols, dtype=torch.float32, device=device)[offset : offset + rows]


def _difference_matrix(n: int, order: int, device: torch.device) -> Tensor:
    """Finite-difference operator [n-order, n]; rows (1, -2, 1) for order 2, (-1, 3, -3, 1) for order 3."""
    coeffs = [(-1) ** (order - j) * math.comb(order, j) for j in range(order + 1)]
    diff = torch.zeros(n - order, n, dtype=torch.float32, device=device)
    for j, c in enumerate(coeffs):
        diff += c * _shifted_eye(n - order, n, j, device)
    return diff


def _trapezoid_design(theta: Tensor) -> Tensor:
    """Design matrix [..., 2(N-1), N] of v_t u_t + v_{t+1} u_{t+1} = 2Δp_t/dt, rows alternating x, y (§7.2).

    `theta` is [..., N] headings; u_t = (cos θ_t, sin θ_t).
    """
    n = theta.shape[-1]
    band = _shifted_eye(n - 1, n, 0, theta.device) + _shifted_eye(n - 1, n, 1, theta.device)  # [N-1, N]
    rows_x = band * torch.cos(theta)[..., None, :]  # [..., N-1, N]
    rows_y = band * torch.sin(theta)[..., None, :]  # [..., N-1, N]
    return torch.stack([rows_x, rows_y], dim=-2).flatten(-3, -2)  # [..., 2(N-1), N]


def _trapezoid_target(xy: Tensor, dt: float) -> Tensor:
    """Right-hand side [..., 2(N-1)] = 2Δp_t/dt for positions xy [..., N, 2], rows alternating x and y."""
    return (2.0 / dt * torch.diff(xy, dim=-2)).flatten(-2, -1)


def _normal_equations(
    design: Tensor | None, target: Tensor, order: int, smooth: float, fixed_first: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Normal equations of min_x ‖design·x − target‖² + smooth·‖D_order [x₀; x]‖² (ridge added by the solver).

    Args:
        design: [..., M, n] float32, or None for the identity (M = n).
        target: [..., M] float32.
        order: finite-difference order of the smoothing operator D.
        smooth: smoothing weight (λ/dt^(2·order)).
        fixed_first: [...] known value x₀ prepended to x inside the smoothing term, or None for no prefix.

    Returns:
        (normal [..., n, n], rhs [..., n]).
    """
    if design is None:
        n, device = target.shape[-1], target.device
        normal = torch.eye(n, dtype=torch.float32, device=device).expand(*target.shape[:-1], n, n)
        rhs = target
    else:
        n, device = design.shape[-1], design.device
        normal = design.mT @ design  # [..., n, n]
        rhs = (design.mT @ target[..., None])[..., 0]  # [..., n]
    if fixed_first is None:
        diff = _difference_matrix(n, order, device)  # [n-order, n]
        return normal + smooth * (diff.mT @ diff), rhs
    diff = _difference_matrix(n + 1, order, device)  # [n+1-order, n+1]
    free, fixed = diff[:, 1:], diff[:, 0]  # [n+1-order, n], [n+1-order]
    rhs = rhs - smooth * fixed_first[..., None] * (free.mT @ fixed)  # move the known x₀ term to the right
    return normal + smooth * (free.mT @ free), rhs


def _solve(normal: Tensor, rhs: Tensor, ridge: float) -> Tensor:
    """Cholesky solve of (normal + ridge·I) x = rhs, batched, without a host sync -> x [..., n].

    Only for systems that are positive definite for finite inputs; non-finite inputs give a non-finite x.
    """
    eye = torch.eye(normal.shape[-1], dtype=torch.float32, device=normal.device)
    chol, _ = torch.linalg.cholesky_ex(normal + ridge * eye)
    return torch.cholesky_solve(rhs[..., None], chol)[..., 0]


def cholesky_solve_with_retry(normal: Tensor, rhs: Tensor, ridge: float, max_retries: int) -> Tensor:
    """Solve (normal + ridge·I) x = rhs by Cholesky, retrying failed batch elements with ridge ×10 (§7.4).

    Args:
        normal: [..., n, n] symmetric float32.
        rhs: [..., n].
        ridge: initial ridge added to the diagonal.
        max_retries: retries before giving up.

    Returns:
        x [..., n].

    Raises:
        torch.linalg.LinAlgError: an element still fails after `max_retries` retries (e.g. non-finite input).
    """
    eye = torch.eye(normal.shape[-1], dtype=torch.float32, device=normal.device)
    ridges = torch.full(normal.shape[:-2], ridge, dtype=normal.dtype, device=normal.device)  # [...]
    for attempt in range(max_retries + 1):
        chol, info = torch.linalg.cholesky_ex(normal + ridges[..., None, None] * eye)
        failed = info != 0  # [...]
        if not bool(failed.any()):
            return torch.cholesky_solve(rhs[..., None], chol)[..., 0]
        if attempt < max_retries:
            ridges = torch.where(failed, 10.0 * ridges, ridges)
    raise torch.linalg.LinAlgError(
        f"Cholesky failed for {int(failed.sum())} batch element(s) after {max_retries} retries "
        f"(last ridge {float(ridges.max()):.3g}); the trajectory is probably non-finite"
    )


class UnicycleAccelCurvatureActionSpace(nn.Module):
    """Maps normalised (acceleration, curvature) actions to t0-frame trajectories and back (MODEL.md §7).

    Holds only the 4 persistent 0-dim statistics buffers `accel_mean`, `accel_std`, `curvature_mean`,
    `curvature_std`, in `config.stats_dtype`; they are promoted to float32 for all arithmetic.
    """

    def __init__(self, config: ActionSpaceConfig) -> None:
        super().__init__()
        self.config = config
        dtype = _STATS_DTYPES[config.stats_dtype]
        for name in ("accel_mean", "accel_std", "curvature_mean", "curvature_std"):
            self.register_buffer(name, torch.tensor(getattr(config, name), dtype=dtype))

    def normalize(self, accel: Tensor, curvature: Tensor) -> Tensor:
        """Acceleration [..., T] (m/s²), curvature [..., T] (1/m) -> normalised action [..., T, 2] float32."""
        a_hat = (accel.float() - self.accel_mean.float()) / self.accel_std.float()
        k_hat = (curvature.float() - self.curvature_mean.float()) / self.curvature_std.float()
        return torch.stack([a_hat, k_hat], dim=-1)

    def denormalize(self, action: Tensor) -> tuple[Tensor, Tensor]:
        """Action [..., T, 2] -> (acceleration [..., T] m/s², curvature [..., T] 1/m), float32, never clamped.

        Note â = 0 maps to a = accel_mean, not to 0.
        """
        action = action.float()
        accel = action[..., 0] * self.accel_std.float() + self.accel_mean.float()
        curvature = action[..., 1] * self.curvature_std.float() + self.curvature_mean.float()
        return accel, curvature

    def estimate_initial_speed(self, hist_xyz: Tensor, hist_rot: Tensor) -> Tensor:
        """Speed at t0 from the history poses by smoothed trapezoid least squares (§7.2).

        Args:
            hist_xyz: [..., H, 3] positions (m), oldest first, H >= 4, spaced `dt`.
            hist_rot: [..., H, 3, 3] rotations.

        Returns:
            v0 [...] float32 (m/s), the last element of the smoothed speed profile.
        """
        _check_poses("hist", hist_xyz, hist_rot)
        n_hist = hist_xyz.shape[-2]
        if n_hist < 4:
            raise ValueError(f"estimate_initial_speed needs H >= 4 history poses, got H={n_hist}")
        cfg = self.config
        with _no_autocast(hist_xyz.device):
            theta = _unwrap(_yaw(hist_rot.float()))  # [..., H]
            design = _trapezoid_design(theta)  # [..., 2(H-1), H]
            target = _trapezoid_target(hist_xyz[..., :2].float(), cfg.dt)  # [..., 2(H-1)]
            normal, rhs = _normal_equations(design, target, order=3, smooth=cfg.v_lambda / cfg.dt**6)
            speed = _solve(normal, rhs, cfg.v_ridge)  # [..., H]
        return speed[..., -1]

    def action_to_traj(self, action: Tensor, hist_xyz: Tensor, hist_rot: Tensor) -> tuple[Tensor, Tensor]:
        """Integrate a normalised action from the t0 pose with the unicycle model (§7.3).

        Args:
            action: [..., T, 2] normalised (accel, curvature), T = n_waypoints.
            hist_xyz: [..., H, 3] history positions in the t0 frame (batch dims broadcast against action's).
            hist_rot: [..., H, 3, 3] history rotations.

        Returns:
            xyz [..., T, 3] float32 (m; z = last history z), rot [..., T, 3, 3] float32 = R_z(θ_k), k = 1…T.
        """
        self._check_action(action)
        dt = self.config.dt
        v0 = self.estimate_initial_speed(hist_xyz, hist_rot)  # [...]
        with _no_autocast(action.device):
            accel, curvature = self.denormalize(action)  # [..., T] each
            speed = v0[..., None] + dt * torch.cumsum(accel, dim=-1)  # [..., T]: v_1 … v_T
            speed = torch.cat([v0[..., None].expand_as(speed[..., :1]), speed], dim=-1)  # [..., T+1]: v_0…v_T
            dtheta = curvature * (speed[..., :-1] * dt + accel * (dt * dt / 2))  # [..., T]
            theta = torch.cumsum(dtheta, dim=-1)  # [..., T]: θ_1 … θ_T
            theta = torch.cat([torch.zeros_like(theta[..., :1]), theta], dim=-1)  # [..., T+1]: θ_0 = 0
            vx, vy = speed * torch.cos(theta), speed * torch.sin(theta)  # [..., T+1]
            x = torch.cumsum(dt / 2 * (vx[..., :-1] + vx[..., 1:]), dim=-1)  # [..., T]
            y = torch.cumsum(dt / 2 * (vy[..., :-1] + vy[..., 1:]), dim=-1)  # [..., T]
            z = hist_xyz[..., -1:, 2].float().expand_as(x)  # [..., T]
            xyz = torch.stack([x, y, z], dim=-1)  # [..., T, 3]
            rot = _rot_z(theta[..., 1:])  # [..., T, 3, 3]
        return xyz, rot

    @torch.no_grad()
    def traj_to_action(self, fut_xyz: Tensor, fut_rot: Tensor, hist_xyz: Tensor, hist_rot: Tensor) -> Tensor:
        """Fit the normalised action whose integration reproduces future poses (§7.4); for training targets.

        Regularised, so the round trip is close but not exact. Not differentiable (runs under no_grad).

        Args:
            fut_xyz: [..., T, 3] future positions in the t0 frame, T = n_waypoints.
            fut_rot: [..., T, 3, 3] future rotations.
            hist_xyz: [..., H, 3] history positions (same batch dims); the last one is the t0 position.
            hist_rot: [..., H, 3, 3] history rotations.

        Returns:
            action [..., T, 2] float32 normalised (accel, curvature).

        Raises:
            torch.linalg.LinAlgError: the a or κ solve fails even after the ridge retries.
        """
        _check_poses("fut", fut_xyz, fut_rot)
        self._check_action(fut_xyz[..., :2])
        cfg, dt = self.config, self.config.dt
        batch = fut_xyz.shape[:-2]
        v0 = self.estimate_initial_speed(hist_xyz, hist_rot).expand(batch)  # [...]
        with _no_autocast(fut_xyz.device):
            # Yaw: unwrap from θ_0 = 0, then smooth with θ_0 held fixed.
            yaw = _yaw(fut_rot.float())  # [..., T]
            yaw = _unwrap(torch.cat([torch.zeros_like(yaw[..., :1]), yaw], dim=-1))[..., 1:]  # [..., T]
            normal, rhs = _normal_equations(None, yaw, 3, cfg.theta_lambda / dt**6, torch.zeros_like(v0))
            theta = _solve(normal, rhs, cfg.theta_ridge)  # [..., T]
            theta = torch.cat([torch.zeros_like(theta[..., :1]), theta], dim=-1)  # [..., T+1]
            # Speed: the §7.2 trapezoid system over t0 … t0+T·dt with v_0 = v0 fixed, smoothed headings.
            origin = hist_xyz[..., -1:, :2].float().expand(*batch, 1, 2)  # [..., 1, 2]
            xy = torch.cat([origin, fut_xyz[..., :2].float()], dim=-2)  # [..., T+1, 2]
            design = _trapezoid_design(theta)  # [..., 2T, T+1]
            target = _trapezoid_target(xy, dt) - design[..., 0] * v0[..., None]  # [..., 2T]
            normal, rhs = _normal_equations(design[..., 1:], target, 3, cfg.v_lambda / dt**6, v0)
            speed = _solve(normal, rhs, cfg.v_ridge)  # [..., T]
            speed = torch.cat([v0[..., None], speed], dim=-1)  # [..., T+1]
            # Acceleration: smoothed Δv/dt.
            normal, rhs = _normal_equations(None, torch.diff(speed, dim=-1) / dt, 2, cfg.a_lambda / dt**4)
            accel = cholesky_solve_with_retry(normal, rhs, cfg.a_ridge, cfg.max_cholesky_retries)  # [..., T]
            # Curvature: κ_k s_k = Δθ_k, arc s_k from the forward model's own speed v_k = v0 + dt·Σ_{j<k} a_j.
            dv = dt * torch.cumsum(accel[..., :-1], dim=-1)  # [..., T-1]
            model_speed = v0[..., None] + torch.cat([torch.zeros_like(dv[..., :1]), dv], dim=-1)  # [..., T]
            arc = dt * model_speed + (dt * dt / 2) * accel  # [..., T]
            smooth = cfg.kappa_lambda / dt**4
            normal, rhs = _normal_equations(torch.diag_embed(arc), torch.diff(theta, dim=-1), 2, smooth)
            curvature = cholesky_solve_with_retry(normal, rhs, cfg.kappa_ridge, cfg.max_cholesky_retries)
        return self.normalize(accel, curvature)

    def _check_action(self, action: Tensor) -> None:
        """Raise ValueError unless action is [..., n_waypoints, 2]."""
        if action.dim() < 2 or action.shape[-2:] != (self.config.n_waypoints, 2):
            raise ValueError(
                f"expected an action or trajectory of shape [..., {self.config.n_waypoints}, 2], "
                f"got {tuple(action.shape)}"
            )


def _check_poses(name: str, xyz: Tensor, rot: Tensor) -> None:
    """Raise ValueError unless xyz is [..., N, 3] and rot is [..., N, 3, 3] with the same N."""
    xyz_ok = xyz.dim() >= 2 and xyz.shape[-1] == 3
    rot_ok = rot.dim() >= 3 and rot.shape[-2:] == (3, 3) and rot.shape[-3] == xyz.shape[-2]
    if not (xyz_ok and rot_ok):
        raise ValueError(
            f"{name}_xyz must be [..., N, 3] and {name}_rot [..., N, 3, 3]; "
            f"got {tuple(xyz.shape)} and {tuple(rot.shape)}"
        )


def _rot_z(theta: Tensor) -> Tensor:
    """Rotations about z [..., 3, 3] for yaw angles theta [...]."""
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero, one = torch.zeros_like(theta), torch.ones_like(theta)
    rows = [
        torch.stack([cos, -sin, zero], dim=-1),
        torch.stack([sin, cos, zero], dim=-1),
        torch.stack([zero, zero, one], dim=-1),
    ]
    return torch.stack(rows, dim=-2)
