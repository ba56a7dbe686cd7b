"""Delta tokenizer for the egomotion history (DeltaTrajectoryTokenizer, predict_yaw false; MODEL.md §4.5).

Positions only: d_0 = p_0 (the absolute oldest point), d_k = p_k − p_{k−1}; each axis of each delta is
quantised uniformly into `num_bins` bins over [min, max], emitted x_0, y_0, z_0, x_1, … (3H values).
This module returns bins in [0, num_bins); the caller adds `hist_token_start_idx` to make vocabulary ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class HistoryTokenizerConfig:
    """Quantiser range and resolution.

    Defaults are upstream's code defaults, assumed to be the checkpoint's (unverified: MODEL.md §12 item 6;
    NVIDIA's TensorRT-Edge-LLM Alpamayo-1 runtime hard-codes the same values).
    """

    xyz_min: tuple[float, float, float] = (-4.0, -4.0, -10.0)  # m, lowest representable delta, per axis
    xyz_max: tuple[float, float, float] = (4.0, 4.0, 10.0)  # m, highest representable delta per axis
    num_bins: int = 1000  # bins per axis; bin b ↔ min + b·(max − min)/(num_bins − 1)

    def __post_init__(self) -> None:
        if len(self.xyz_min) != 3 or len(self.xyz_max) != 3:
            raise ValueError(
                f"HistoryTokenizerConfig.xyz_min/xyz_max need 3 values, "
                f"got {self.xyz_min!r} / {self.xyz_max!r}"
            )
        for axis, (lo, hi) in enumerate(zip(self.xyz_min, self.xyz_max)):
            if not lo < hi:
                raise ValueError(
                    f"HistoryTokenizerConfig.xyz_min[{axis}] must be < xyz_max[{axis}], got {lo!r} >= {hi!r}"
                )
        if self.num_bins < 2:
            raise ValueError(f"HistoryTokenizerConfig.num_bins must be >= 2, got {self.num_bins!r}")


class DeltaHistoryTokenizer:
    """Quantises history positions into delta bins and back. Stateless; all arithmetic in float32."""

    def __init__(self, config: HistoryTokenizerConfig) -> None:
        self.config = config

    @property
    def bin_width(self) -> tuple[float, float, float]:
        """Quantisation step per axis (m): (max − min)/(num_bins − 1); worst in-range error is half of it."""
        cfg = self.config
        return tuple((hi - lo) / (cfg.num_bins - 1) for lo, hi in zip(cfg.xyz_min, cfg.xyz_max))

    def encode(self, hist_xyz: Tensor) -> Tensor:
        """History positions [..., H, 3] (m, t0 frame, oldest first) -> bins [..., 3H] int64 in [0, num_bins).

        bin = clamp(round_half_even((d − min)/(max − min)·(num_bins − 1)), 0, num_bins − 1).
        """
        if hist_xyz.dim() < 2 or hist_xyz.shape[-1] != 3:
            raise ValueError(f"hist_xyz must be [..., H, 3], got {tuple(hist_xyz.shape)}")
        xyz = hist_xyz.float()
        deltas = torch.diff(xyz, dim=-2, prepend=torch.zeros_like(xyz[..., :1, :]))  # [..., H, 3]; d_0 = p_0
        lo, hi = self._range(xyz.device)  # [3] each
        scaled = (deltas - lo) / (hi - lo) * (self.config.num_bins - 1)  # [..., H, 3]
        bins = torch.round(scaled).clamp(0, self.config.num_bins - 1).long()  # torch.round is half-to-even
        return bins.flatten(-2)  # [..., 3H], x_0, y_0, z_0, x_1, …

    def decode(self, bins: Tensor) -> Tensor:
        """Bins [..., 3H] -> positions [..., H, 3] float32: de-quantised deltas, cumulatively summed.

        Each in-range delta comes back within half a bin, so position k is within (k+1) half-bins per axis.
        """
        if bins.dim() < 1 or bins.shape[-1] % 3:
            raise ValueError(f"bins must be [..., 3H], got {tuple(bins.shape)}")
        lo, hi = self._range(bins.device)  # [3] each
        steps = bins.unflatten(-1, (-1, 3)).float()  # [..., H, 3]
        deltas = steps / (self.config.num_bins - 1) * (hi - lo) + lo  # [..., H, 3]
        return torch.cumsum(deltas, dim=-2)

    def _range(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """(min [3], max [3]) float32 on device."""
        lo = torch.tensor(self.config.xyz_min, dtype=torch.float32, device=device)
        hi = torch.tensor(self.config.xyz_max, dtype=torch.float32, device=device)
        return lo, hi
