"""DeltaHistoryTokenizer: bin rule, clamping, order and the round trip (MODEL.md §4.5, §11.2 item 2)."""

import pytest
import torch

from alpamayo_ros.model.history import DeltaHistoryTokenizer, HistoryTokenizerConfig

H = 16


@pytest.fixture
def tokenizer() -> DeltaHistoryTokenizer:
    return DeltaHistoryTokenizer(HistoryTokenizerConfig())


def test_all_zero_history_is_bin_500(tokenizer):
    bins = tokenizer.encode(torch.zeros(2, H, 3))
    assert bins.shape == (2, 3 * H)
    assert bins.dtype == torch.int64
    assert torch.all(bins == 500)  # 0.5·999 = 499.5 rounds half-to-even to 500


def test_first_delta_is_absolute_and_order_is_xyz_interleaved(tokenizer):
    xyz = torch.zeros(H, 3)
    xyz[0] = torch.tensor([-1.0, 2.0, 5.0])  # oldest point: its delta is the absolute position
    xyz[1] = xyz[0] + torch.tensor([0.4, -0.8, 0.0])
    xyz[2:] = xyz[1]
    bins = tokenizer.encode(xyz)

    def expected(d: float, lo: float, hi: float) -> int:
        return round((d - lo) / (hi - lo) * 999)

    assert bins[:6].tolist() == [
        expected(-1.0, -4, 4), expected(2.0, -4, 4), expected(5.0, -10, 10),
        expected(0.4, -4, 4), expected(-0.8, -4, 4), 500,
    ]
    assert bins[6:].tolist() == [500] * (3 * H - 6)


def test_ties_round_half_to_even():
    # Range [-2, 2] with 5 bins makes scaled = d + 2 exact in float32, so .5 ties are real ties.
    tokenizer = DeltaHistoryTokenizer(HistoryTokenizerConfig((-2.0, -2.0, -2.0), (2.0, 2.0, 2.0), num_bins=5))
    bins = tokenizer.encode(torch.tensor([[0.5, 1.5, -0.5]]))  # scaled 2.5, 3.5, 1.5
    assert bins.tolist() == [2, 4, 2]


def test_out_of_range_deltas_clamp(tokenizer):
    xyz = torch.zeros(3, 3)
    xyz[0] = torch.tensor([-20.0, 20.0, -50.0])  # every axis below/above its range
    xyz[1] = torch.tensor([20.0, -20.0, 50.0])
    bins = tokenizer.encode(xyz)
    assert bins[:6].tolist() == [0, 999, 0, 999, 0, 999]
    assert int(bins.min()) >= 0 and int(bins.max()) <= 999


def test_saturated_first_x_bin_at_driving_speed(tokenizer):
    # 10 m/s straight: p_0 = (-15, 0, 0), far below -4 m, so x_0 saturates at bin 0 (§4.5).
    t = torch.arange(H, dtype=torch.float32) * 0.1 - 1.5
    xyz = torch.stack([10.0 * t, torch.zeros(H), torch.zeros(H)], dim=-1)
    bins = tokenizer.encode(xyz)
    assert int(bins[0]) == 0
    assert bins[3::3].tolist() == [round(5.0 / 8.0 * 999)] * (H - 1)  # each 1 m step


def test_round_trip_within_half_bin_per_delta(tokenizer):
    gen = torch.Generator().manual_seed(0)
    half = torch.tensor(tokenizer.bin_width) / 2  # [3]
    # In-range deltas (strictly inside [min, max]) on every axis, batched.
    deltas = (torch.rand(8, H, 3, generator=gen) * 2 - 1) * torch.tensor([3.9, 3.9, 9.9])
    xyz = torch.cumsum(deltas, dim=-2)
    decoded = tokenizer.decode(tokenizer.encode(xyz))
    assert decoded.shape == xyz.shape
    decoded_deltas = torch.diff(decoded, dim=-2, prepend=torch.zeros_like(decoded[..., :1, :]))
    assert torch.all((decoded_deltas - deltas).abs() <= half * (1 + 1e-4))
    bound = half * torch.arange(1, H + 1, dtype=torch.float32)[:, None]  # [H, 3]: k+1 half-bins at position k
    assert torch.all((decoded - xyz).abs() <= bound * (1 + 1e-4))
    assert (decoded - xyz).abs().max() > 0  # quantisation is really lossy: the test can tell


def test_decode_of_centre_bins_is_zero(tokenizer):
    decoded = tokenizer.decode(torch.full((3 * H,), 500))
    assert decoded.shape == (H, 3)
    # bin 500 is half a bin above 0 on every axis; positions drift by k+1 of those.
    expected = torch.tensor(tokenizer.bin_width) / 2 * torch.arange(1, H + 1, dtype=torch.float32)[:, None]
    torch.testing.assert_close(decoded, expected, rtol=1e-4, atol=1e-5)


def test_bin_width(tokenizer):
    assert tokenizer.bin_width == pytest.approx((8 / 999, 8 / 999, 20 / 999))


@pytest.mark.parametrize(
    "kwargs",
    [dict(num_bins=1), dict(xyz_min=(4.0, -4.0, -10.0)), dict(xyz_max=(4.0, 4.0))],
)
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError, match="HistoryTokenizerConfig"):
        HistoryTokenizerConfig(**kwargs)


def test_shape_errors(tokenizer):
    with pytest.raises(ValueError):
        tokenizer.encode(torch.zeros(H, 2))
    with pytest.raises(ValueError):
        tokenizer.decode(torch.zeros(47, dtype=torch.int64))
