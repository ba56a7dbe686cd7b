"""Flow matching for the action expert: the Euler sampler and the training helpers (MODEL.md §6.3).

Convention (upstream `diffusion/flow_matching.py`): time runs from t = 0 (pure noise) to t = 1 (data),
x_t = t·x_data + (1 − t)·noise, and the network predicts the velocity dx/dt = x_data − noise. Sampling
integrates dx/dt = v(x, t) with explicit Euler on the float32 grid `linspace(0, 1, K + 1)`. Nothing here draws
hidden noise: the sampler takes the noise, and the time sampler takes a `torch.Generator`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

_INT_METHODS = ("euler",)
_TRAIN_T_ALPHA = 1.5  # u ~ Beta(α, 1) for the training time; upstream FlowMatching training default
_TRAIN_T_SCALE = 0.999  # t = scale·(1 − u) keeps t < 1; upstream

VelocityFn = Callable[[Tensor, Tensor], Tensor]
"""v = f(x [N, T, 2] float32, t [N, 1, 1] float32) -> velocity [N, T, 2] (any float dtype; promoted)."""


@dataclass(frozen=True)
class FlowMatchingConfig:
    """Sampler settings; defaults are the checkpoint's `diffusion_cfg` (MODEL.md §6.3)."""

    num_steps: int = 10  # K, Euler steps = network evaluations; checkpoint
    int_method: str = "euler"  # integrator; only "euler" exists upstream

    def __post_init__(self) -> None:
        if self.num_steps < 1:
            raise ValueError(f"FlowMatchingConfig.num_steps must be >= 1, got {self.num_steps!r}")
        if self.int_method not in _INT_METHODS:
            raise ValueError(
                f"FlowMatchingConfig.int_method must be one of {_INT_METHODS}, got {self.int_method!r}"
            )


def time_grid(num_steps: int, device: torch.device | str | None = None) -> Tensor:
    """Euler time grid t_0 = 0 … t_K = 1 -> [K+1] float32, exactly `torch.linspace(0, 1, K + 1)` as upstream.

    Its differences are not all float32(1/K) (§6.3); the sampler steps by those differences.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps!r}")
    return torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float32, device=device)


def euler_sample(velocity_fn: VelocityFn, noise: Tensor, num_steps: int) -> Tensor:
    """Integrate from the noise at t = 0 to the sample at t = 1 with explicit Euler.

    For i = 0…K−1: x ← x + Δt_i · v(x, t_i), Δt_i = t_{i+1} − t_i in float32; v is promoted to float32.

    Args:
        velocity_fn: called exactly K times, with x [N, T, 2] float32 and t [N, 1, 1] float32 = t_0 … t_{K−1}.
        noise: [N, T, 2] x at t = 0 (cast to float32; not modified).
        num_steps: K.

    Returns:
        x1 [N, T, 2] float32, the normalised action.
    """
    grid = time_grid(num_steps, noise.device)  # [K+1]
    steps = grid[1:] - grid[:-1]  # [K]
    x = noise.float()  # [N, T, 2]
    t_shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    for i in range(num_steps):
        t = grid[i].expand(t_shape)  # [N, 1, 1]
        x = x + steps[i] * velocity_fn(x, t).float()
    return x


def sample_training_time(
    n: int, generator: torch.Generator | None, device: torch.device | str | None = None
) -> Tensor:
    """Training times t = 0.999·(1 − u), u ~ Beta(1.5, 1), skewed toward t = 0 (noise) -> [n] float32.

    Beta(α, 1) has CDF u^α, so u = U^(1/α) with U ~ Uniform(0, 1): one uniform draw from `generator`,
    exact and reproducible (torch.distributions cannot take a generator).

    Args:
        n: number of times.
        generator: the random source; must live on `device`.
        device: output device.
    """
    uniform = torch.rand(n, generator=generator, dtype=torch.float32, device=device)  # [n]
    u = uniform.pow(1.0 / _TRAIN_T_ALPHA)
    return _TRAIN_T_SCALE * (1.0 - u)


def interpolate(x_data: Tensor, noise: Tensor, t: Tensor) -> Tensor:
    """Point on the straight path, x_t = t·x_data + (1 − t)·noise.

    Args:
        x_data: [N, T, 2] clean normalised actions.
        noise: [N, T, 2].
        t: [N, 1, 1] (or anything broadcasting against x_data).

    Returns:
        x_t [N, T, 2].
    """
    return t * x_data + (1.0 - t) * noise


def target_velocity(x_data: Tensor, noise: Tensor) -> Tensor:
    """Regression target of the velocity network, d x_t / dt = x_data − noise -> [N, T, 2]."""
    return x_data - noise
