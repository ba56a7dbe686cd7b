"""Flow-matching sampler and training helpers (MODEL.md §6.3, §11.2 items 8 and 17)."""

import pytest
import torch

from alpamayo_ros.model.flow_matching import (
    FlowMatchingConfig,
    euler_sample,
    interpolate,
    sample_training_time,
    target_velocity,
    time_grid,
)

# float32 values of torch.linspace(0, 1, 11) listed in MODEL.md §6.3.
SPEC_GRID = [0.0, 0.10000000149, 0.20000000298, 0.30000001192, 0.40000000596, 0.5,
             0.60000002384, 0.69999998808, 0.80000001192, 0.89999997616, 1.0]


def _noise(seed: int = 0, n: int = 3, t: int = 64) -> torch.Tensor:
    return torch.randn(n, t, 2, generator=torch.Generator().manual_seed(seed))


def test_time_grid_matches_spec_values():
    grid = time_grid(10, "cpu")
    assert grid.dtype == torch.float32 and grid.shape == (11,)
    expected = torch.tensor(SPEC_GRID, dtype=torch.float64)
    torch.testing.assert_close(grid.double(), expected, rtol=0, atol=1e-11)


def test_velocity_fn_called_ten_times_with_grid_times():
    calls = []

    def velocity(x, t):
        calls.append((x.dtype, t.clone()))
        return torch.zeros_like(x)

    noise = _noise()
    euler_sample(velocity, noise, num_steps=10)
    assert len(calls) == 10
    grid = time_grid(10)
    for i, (x_dtype, t) in enumerate(calls):
        assert x_dtype == torch.float32
        assert t.dtype == torch.float32 and t.shape == (3, 1, 1)
        assert torch.equal(t, grid[i].expand(3, 1, 1))
    assert float(calls[-1][1][0, 0, 0]) == pytest.approx(0.9, abs=1e-7)


def test_steps_are_float32_grid_differences_not_constant():
    grid = time_grid(10)
    step_of = []
    for i in range(10):
        # Velocity 1 on step i only, from x0 = 0: the result is exactly that step's Δt.
        def velocity(x, t, i=i):
            return torch.ones_like(x) if torch.equal(t[0, 0, 0], grid[i]) else torch.zeros_like(x)

        x1 = euler_sample(velocity, torch.zeros(1, 4, 2), 10)
        step_of.append(x1[0, 0, 0])
    steps = torch.stack(step_of)
    assert torch.equal(steps, grid[1:] - grid[:-1])
    assert not torch.all(steps == torch.tensor(0.1, dtype=torch.float32))  # e.g. Δt_5 = 0.10000002384


def test_constant_velocity_moves_by_c():
    noise = _noise()
    c = torch.tensor([0.7, -1.3])
    x1 = euler_sample(lambda x, t: c.expand_as(x), noise, 10)
    torch.testing.assert_close(x1, noise + c, rtol=0, atol=1e-6)


def test_oracle_field_lands_on_data():
    noise, data = _noise(0), _noise(1)
    x1 = euler_sample(lambda x, t: (data - x) / (1 - t), noise, 10)
    torch.testing.assert_close(x1, data, rtol=0, atol=1e-5)
    assert not torch.allclose(noise, data, atol=1e-1)  # not trivially true


def test_deterministic_and_input_untouched():
    noise = _noise()
    before = noise.clone()

    def velocity(x, t):
        return torch.tanh(3 * x) * (1 + t)

    a, b = euler_sample(velocity, noise, 10), euler_sample(velocity, noise, 10)
    assert torch.equal(a, b)
    assert torch.equal(noise, before)
    assert not torch.equal(a, euler_sample(velocity, _noise(5), 10))


def test_bf16_velocity_is_promoted():
    x1 = euler_sample(lambda x, t: torch.full_like(x, 0.5, dtype=torch.bfloat16), torch.zeros(2, 4, 2), 10)
    assert x1.dtype == torch.float32
    torch.testing.assert_close(x1, torch.full((2, 4, 2), 0.5), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kwargs", [dict(int_method="rk4"), dict(num_steps=0)])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match="FlowMatchingConfig"):
        FlowMatchingConfig(**kwargs)


def test_config_defaults():
    cfg = FlowMatchingConfig()
    assert (cfg.num_steps, cfg.int_method) == (10, "euler")


def test_training_time_distribution_and_reproducibility():
    t = sample_training_time(40_000, torch.Generator().manual_seed(3))
    again = sample_training_time(40_000, torch.Generator().manual_seed(3))
    assert torch.equal(t, again)
    assert t.dtype == torch.float32 and t.shape == (40_000,)
    assert float(t.min()) >= 0.0 and float(t.max()) <= 0.999
    # u = 1 - t/0.999 ~ Beta(1.5, 1): mean 0.6, CDF(0.5) = 0.5^1.5.
    u = 1 - t / 0.999
    assert float(u.mean()) == pytest.approx(0.6, abs=0.01)
    assert float((u <= 0.5).float().mean()) == pytest.approx(0.5**1.5, abs=0.01)


def test_interpolation_endpoints_and_target():
    data, noise = _noise(1), _noise(2)
    t0, t1 = torch.zeros(3, 1, 1), torch.ones(3, 1, 1)
    assert torch.equal(interpolate(data, noise, t0), noise)
    assert torch.equal(interpolate(data, noise, t1), data)
    t = torch.full((3, 1, 1), 0.25)
    h = 0.5
    slope = (interpolate(data, noise, t + h) - interpolate(data, noise, t)) / h
    torch.testing.assert_close(slope, target_velocity(data, noise), rtol=0, atol=1e-5)
