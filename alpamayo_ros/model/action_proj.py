"""Action-token embedding `action_in_proj` (PerWaypointActionInProjV2, MODEL.md §6.1).

Each of the T waypoints of the noisy normalised action becomes one expert token: Fourier features of its
acceleration, its curvature and the flow time t, then an MLP trunk and a LayerNorm. Module and buffer names
mirror upstream `models/action_in_proj.py` so the checkpoint keys load unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

_FREQS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class ActionInProjConfig:
    """`action_in_proj` sizes; defaults are the checkpoint's (MODEL.md §1.4, §6.1)."""

    hidden_size: int = 512  # trunk width; checkpoint (code default 1024)
    num_enc_layers: int = 2  # Linear→SiLU→RMSNorm blocks before the output Linear; checkpoint (code: 4)
    num_fourier_feats: int = 20  # per-scalar Fourier feature size (half sines, half cosines); checkpoint
    max_freq: float = 100.0  # highest Fourier frequency (cycles per unit input); checkpoint
    norm_eps: float = 1e-5  # eps of the trunk RMSNorms and the output LayerNorm; upstream
    # dtype of the Fourier frequency buffers: "bfloat16" = the reference's runtime values (§8.3),
    # "float32" = the exact logspace
    freqs_dtype: str = "bfloat16"

    def __post_init__(self) -> None:
        if self.hidden_size < 1:
            raise ValueError(f"ActionInProjConfig.hidden_size must be >= 1, got {self.hidden_size!r}")
        if self.num_enc_layers < 1:
            raise ValueError(f"ActionInProjConfig.num_enc_layers must be >= 1, got {self.num_enc_layers!r}")
        if self.num_fourier_feats < 2 or self.num_fourier_feats % 2:
            raise ValueError(
                f"ActionInProjConfig.num_fourier_feats must be even and >= 2, got {self.num_fourier_feats!r}"
            )
        if not self.max_freq > 0:
            raise ValueError(f"ActionInProjConfig.max_freq must be > 0, got {self.max_freq!r}")
        if not self.norm_eps > 0:
            raise ValueError(f"ActionInProjConfig.norm_eps must be > 0, got {self.norm_eps!r}")
        if self.freqs_dtype not in _FREQS_DTYPES:
            raise ValueError(
                f"ActionInProjConfig.freqs_dtype must be one of {sorted(_FREQS_DTYPES)}, "
                f"got {self.freqs_dtype!r}"
            )


class FourierEncoder(nn.Module):
    """φ(s) = √2·[sin(2π f_j s)]_j ‖ [cos(2π f_j s)]_j, f = logspace(0, log10(max_freq), num_feats/2).

    The frequencies are the persistent buffer `freqs` [1, num_feats/2], built as a float32 logspace and
    rounded to `freqs_dtype` ("bfloat16" gives the reference table [1, 1.671875, …, 60, 100] of §8.3).
    ‖φ(s)‖² = num_feats for every s.
    """

    def __init__(self, num_feats: int = 20, max_freq: float = 100.0, freqs_dtype: str = "bfloat16") -> None:
        super().__init__()
        if num_feats < 2 or num_feats % 2:
            raise ValueError(f"FourierEncoder num_feats must be even and >= 2, got {num_feats!r}")
        if not max_freq > 0:
            raise ValueError(f"FourierEncoder max_freq must be > 0, got {max_freq!r}")
        if freqs_dtype not in _FREQS_DTYPES:
            raise ValueError(
                f"FourierEncoder freqs_dtype must be one of {sorted(_FREQS_DTYPES)}, got {freqs_dtype!r}"
            )
        freqs = torch.logspace(0.0, math.log10(max_freq), num_feats // 2, dtype=torch.float32)  # [F/2]
        self.register_buffer("freqs", freqs.to(_FREQS_DTYPES[freqs_dtype])[None, :])  # [1, F/2]

    def forward(self, s: Tensor) -> Tensor:
        """Scalars s [...] -> features [..., num_feats] float32, sines first.

        Evaluated as upstream: float32 argument ((s·f)·2)·π, sin/cos in float32, then ×√2.
        """
        arg = ((s.float()[..., None] * self.freqs.float()[0]) * 2.0) * math.pi  # [..., F/2]
        return torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1) * math.sqrt(2.0)  # [..., F]


class RMSNorm(nn.Module):
    """Upstream's custom RMSNorm (last axis): y = (x_fp32 · rsqrt(mean(x²) + eps)).to(x.dtype) · weight."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """x [..., D] -> [..., D] in the promoted dtype of x and weight."""
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.to(x.dtype) * self.weight


class _Encoder(nn.Module):
    """Holds `trunk` so the keys read `encoder.trunk.<i>.*` as upstream."""

    def __init__(self, in_features: int, config: ActionInProjConfig, out_features: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        hidden = config.hidden_size
        for _ in range(config.num_enc_layers):  # block i: 3i Linear, 3i+1 SiLU, 3i+2 RMSNorm
            layers += [nn.Linear(width, hidden), nn.SiLU(), RMSNorm(hidden, config.norm_eps)]
            width = hidden
        layers.append(nn.Linear(width, out_features))  # index 3·num_enc_layers
        self.trunk = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """[..., in] -> [..., out]."""
        return self.trunk(x)


class PerWaypointActionInProjV2(nn.Module):
    """Noisy normalised action + flow time -> one expert input embedding per waypoint (§6.1).

    Layout for `num_enc_layers` = n: trunk = n × [Linear, SiLU, RMSNorm] then Linear(hidden → out_features),
    followed by LayerNorm(out_features). With the checkpoint's n = 2, hidden 512, out 2048 the state dict is
    `sinus.{0,1}.freqs`, `timestep_fourier_encoder.freqs`, `encoder.trunk.{0,3,6}.{weight,bias}`,
    `encoder.trunk.{2,5}.weight`, `norm.{weight,bias}` (1,349,632 parameters).
    """

    def __init__(self, config: ActionInProjConfig, out_features: int) -> None:
        """Args: config: sizes. out_features: the expert hidden size (2048 in the checkpoint)."""
        super().__init__()
        self.config = config
        feats = config.num_fourier_feats
        # sinus.0 encodes acceleration (channel 0), sinus.1 curvature (channel 1); same frequencies.
        self.sinus = nn.ModuleList(
            [FourierEncoder(feats, config.max_freq, config.freqs_dtype) for _ in range(2)]
        )
        self.timestep_fourier_encoder = FourierEncoder(feats, config.max_freq, config.freqs_dtype)
        self.encoder = _Encoder(3 * feats, config, out_features)
        self.norm = nn.LayerNorm(out_features, eps=config.norm_eps)

    def features(self, x: Tensor, t: Tensor) -> Tensor:
        """Per-waypoint Fourier features φ(accel) ‖ φ(curv) ‖ φ(t) -> [N, T, 3·num_fourier_feats] float32.

        Args:
            x: [N, T, 2] normalised (accel, curvature).
            t: [N, 1, 1] flow time (the same t for every waypoint of a sample).
        """
        if x.dim() != 3 or x.shape[-1] != 2:
            raise ValueError(f"x must be [N, T, 2], got {tuple(x.shape)}")
        if t.shape != (x.shape[0], 1, 1):
            raise ValueError(f"t must be [N, 1, 1] = [{x.shape[0]}, 1, 1], got {tuple(t.shape)}")
        accel = self.sinus[0](x[..., 0])  # [N, T, F]
        curvature = self.sinus[1](x[..., 1])  # [N, T, F]
        time = self.timestep_fourier_encoder(t[..., 0]).expand_as(accel)  # [N, 1, F] -> [N, T, F]
        return torch.cat([accel, curvature, time], dim=-1)  # [N, T, 3F]

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """Embed the noisy action.

        Args:
            x: [N, T, 2] normalised (accel, curvature) at flow time t.
            t: [N, 1, 1] flow time.

        Returns:
            [N, T, out_features]: float32 under autocast (LayerNorm runs in float32), else the weights' dtype.
        """
        feats = self.features(x, t)  # [N, T, 3F] float32
        if not torch.is_autocast_enabled(feats.device.type):
            # Upstream always runs under autocast; without it a float32 input cannot enter bf16 weights.
            feats = feats.to(self.encoder.trunk[0].weight.dtype)
        return self.norm(self.encoder(feats))  # [N, T, out]
