"""action_in_proj: Fourier features, RMSNorm, checkpoint layout (MODEL.md §1.4, §6.1, §8.3, §11.2: 7, 16)."""

import math

import pytest
import torch

from alpamayo_ros.model.action_proj import (
    ActionInProjConfig,
    FourierEncoder,
    PerWaypointActionInProjV2,
    RMSNorm,
)

BF16_FREQS = [1, 1.671875, 2.78125, 4.65625, 7.75, 12.9375, 21.5, 36, 60, 100]  # §8.3
TINY = ActionInProjConfig(hidden_size=32, num_enc_layers=2, num_fourier_feats=4)


def test_freqs_bf16_table():
    enc = FourierEncoder(20, 100.0)
    assert enc.freqs.shape == (1, 10)
    assert enc.freqs.dtype == torch.bfloat16
    assert enc.freqs.float()[0].tolist() == BF16_FREQS


def test_freqs_float32_option_is_exact_logspace():
    enc = FourierEncoder(20, 100.0, freqs_dtype="float32")
    expected = [10 ** (2 * j / 9) for j in range(10)]
    expected = torch.tensor(expected, dtype=torch.float64)
    torch.testing.assert_close(enc.freqs[0].double(), expected, rtol=1e-6, atol=0)
    assert enc.freqs.float()[0].tolist() != BF16_FREQS


def test_fourier_norm_and_layout():
    enc = FourierEncoder(20, 100.0)
    s = torch.linspace(-3, 3, 101)
    phi = enc(s)
    assert phi.shape == (101, 20) and phi.dtype == torch.float32
    torch.testing.assert_close(phi.pow(2).sum(-1), torch.full((101,), 20.0), rtol=1e-5, atol=0)
    zero = enc(torch.zeros(()))
    torch.testing.assert_close(zero, torch.tensor([0.0] * 10 + [math.sqrt(2)] * 10))  # sines first
    f = torch.tensor(BF16_FREQS, dtype=torch.float64)
    ref = math.sqrt(2) * torch.cat([torch.sin(2 * math.pi * f * 0.013), torch.cos(2 * math.pi * f * 0.013)])
    torch.testing.assert_close(enc(torch.tensor(0.013)).double(), ref, rtol=0, atol=1e-5)


def test_fourier_rejects_odd_size():
    with pytest.raises(ValueError, match="num_feats"):
        FourierEncoder(7)


def test_rmsnorm_formula_and_dtype():
    norm = RMSNorm(8, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 9.0))
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * torch.arange(1.0, 9.0)
    torch.testing.assert_close(norm(x), expected)
    norm_bf16 = norm.to(torch.bfloat16)
    xb = x.to(torch.bfloat16)
    ref = (xb.float() * torch.rsqrt(xb.float().pow(2).mean(-1, keepdim=True) + 1e-5)).to(torch.bfloat16)
    assert torch.equal(norm_bf16(xb), ref * norm_bf16.weight)  # rounded to bf16 before the weight multiply


def test_checkpoint_keys_shapes_and_param_count():
    with torch.device("meta"):
        proj = PerWaypointActionInProjV2(ActionInProjConfig(), out_features=2048)
    shapes = {k: tuple(v.shape) for k, v in proj.state_dict().items()}
    assert shapes == {
        "sinus.0.freqs": (1, 10),
        "sinus.1.freqs": (1, 10),
        "timestep_fourier_encoder.freqs": (1, 10),
        "encoder.trunk.0.weight": (512, 60),
        "encoder.trunk.0.bias": (512,),
        "encoder.trunk.2.weight": (512,),
        "encoder.trunk.3.weight": (512, 512),
        "encoder.trunk.3.bias": (512,),
        "encoder.trunk.5.weight": (512,),
        "encoder.trunk.6.weight": (2048, 512),
        "encoder.trunk.6.bias": (2048,),
        "norm.weight": (2048,),
        "norm.bias": (2048,),
    }
    assert sum(p.numel() for p in proj.parameters()) == 1_349_632
    assert {name for name, _ in proj.named_buffers()} == {
        "sinus.0.freqs", "sinus.1.freqs", "timestep_fourier_encoder.freqs"
    }
    trunk = proj.encoder.trunk
    assert isinstance(trunk[1], torch.nn.SiLU) and isinstance(trunk[4], torch.nn.SiLU)
    assert isinstance(trunk[2], RMSNorm) and trunk[2].eps == 1e-5 and trunk[5].eps == 1e-5
    assert isinstance(proj.norm, torch.nn.LayerNorm) and proj.norm.eps == 1e-5


@pytest.mark.parametrize("layers", [1, 3])
def test_other_depths_keep_the_pattern(layers):
    config = ActionInProjConfig(hidden_size=8, num_enc_layers=layers, num_fourier_feats=4)
    proj = PerWaypointActionInProjV2(config, out_features=6)
    linear_idx = [i for i, m in enumerate(proj.encoder.trunk) if isinstance(m, torch.nn.Linear)]
    norm_idx = [i for i, m in enumerate(proj.encoder.trunk) if isinstance(m, RMSNorm)]
    assert linear_idx == [3 * i for i in range(layers + 1)]
    assert norm_idx == [3 * i + 2 for i in range(layers)]
    assert proj.encoder.trunk[0].in_features == 12 and proj.encoder.trunk[-1].out_features == 6


def test_features_layout():
    proj = PerWaypointActionInProjV2(TINY, out_features=48)
    x = torch.randn(2, 8, 2, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.1, 0.7]).view(2, 1, 1)
    feats = proj.features(x, t)
    assert feats.shape == (2, 8, 12) and feats.dtype == torch.float32
    torch.testing.assert_close(feats[..., 0:4], proj.sinus[0](x[..., 0]))
    torch.testing.assert_close(feats[..., 4:8], proj.sinus[1](x[..., 1]))
    for n in range(2):  # the same t feature on every waypoint
        torch.testing.assert_close(feats[n, :, 8:], proj.timestep_fourier_encoder(t[n, 0, 0]).expand(8, 4))


def test_forward_matches_manual_pipeline():
    proj = PerWaypointActionInProjV2(TINY, out_features=48)
    x = torch.randn(2, 8, 2, generator=torch.Generator().manual_seed(1))
    t = torch.full((2, 1, 1), 0.3)
    out = proj(x, t)
    assert out.shape == (2, 8, 48) and out.dtype == torch.float32
    h = proj.features(x, t)
    for layer in proj.encoder.trunk:
        h = layer(h)
    expected = torch.nn.functional.layer_norm(h, (48,), proj.norm.weight, proj.norm.bias, 1e-5)
    torch.testing.assert_close(out, expected)
    assert not torch.allclose(out, proj(x, torch.full((2, 1, 1), 0.9)))  # t reaches the output


def test_bf16_weights_without_autocast():
    proj = PerWaypointActionInProjV2(TINY, out_features=48).to(torch.bfloat16)
    out = proj(torch.zeros(1, 8, 2), torch.zeros(1, 1, 1))
    assert out.dtype == torch.bfloat16 and out.shape == (1, 8, 48)
    assert proj.sinus[0].freqs.float()[0].tolist() == [1.0, 100.0]


def test_shape_errors():
    proj = PerWaypointActionInProjV2(TINY, out_features=48)
    with pytest.raises(ValueError, match="t must be"):
        proj(torch.zeros(2, 8, 2), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="x must be"):
        proj(torch.zeros(2, 8, 3), torch.zeros(2, 1, 1))


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_fourier_feats=5), dict(num_enc_layers=0), dict(freqs_dtype="float16"), dict(max_freq=0.0)],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match="ActionInProjConfig"):
        ActionInProjConfig(**kwargs)
