"""Image preprocessing equivalent to the Qwen3-VL image processor as upstream runs it (MODEL.md §4.2).

uint8 RGB frames -> smart-resize (sides multiple of 32, area within the pixel budget) with torch's native
uint8 antialiased bicubic kernel (what torchvision uses on CPU tensors) -> (x − 127.5)/127.5 in float32 ->
each still image duplicated along time to fill the temporal patch -> flattened patches in merge-block order.
No torchvision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import einops
import torch
import torch.nn.functional as F
from torch import Tensor

_MAX_ASPECT_RATIO = 200  # the processor rejects more elongated images


@dataclass(frozen=True)
class PatchGeometry:
    """Patch sizes of the vision tower (copied from `VisionConfig`)."""

    patch_size: int = 16  # pixels per patch side
    temporal_patch_size: int = 2  # frames per patch
    merge_size: int = 2  # patches per LLM token along each side

    def __post_init__(self) -> None:
        for name in ("patch_size", "temporal_patch_size", "merge_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"PatchGeometry.{name} must be >= 1, got {getattr(self, name)!r}")

    @property
    def factor(self) -> int:
        """Resized sides are multiples of this (32 for Qwen3-VL)."""
        return self.patch_size * self.merge_size

    @property
    def patch_dim(self) -> int:
        """Values per flattened patch: 3 channels × temporal × patch² (1536 for Qwen3-VL)."""
        return 3 * self.temporal_patch_size * self.patch_size**2


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Target (height, width) of the Qwen2-VL/Qwen3-VL processor (MODEL.md §4.2).

    Each side is rounded (half-to-even) to a multiple of `factor`; if the area then exceeds `max_pixels`, both
    sides shrink by β = √(H·W/max) computed from the original size and floor to a multiple (at least
    `factor`); if it is below `min_pixels`, they grow by β = √(min/(H·W)) and ceil. (1080, 1920) -> (320, 576)
    with the real budget.

    Raises:
        ValueError: a non-positive side or an aspect ratio above 200.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image sides must be >= 1, got {height}x{width}")
    if max(height, width) / min(height, width) > _MAX_ASPECT_RATIO:
        raise ValueError(f"image aspect ratio must be <= {_MAX_ASPECT_RATIO}, got {height}x{width}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def resize_uint8(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Antialiased bicubic resize of uint8 images [N, 3, H, W] -> [N, 3, h, w] uint8.

    On CPU this is torch's native uint8 kernel (bit-exact with the reference processor on CPU tensors). On
    other devices the reference path goes through float32, clamps to [0, 255] and rounds half-to-even; we do
    the same.
    """
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    if images.device.type == "cpu":
        return F.interpolate(images, size=size, mode="bicubic", antialias=True, align_corners=False)
    resized = F.interpolate(images.float(), size=size, mode="bicubic", antialias=True, align_corners=False)
    return resized.clamp_(0, 255).round_().to(torch.uint8)


def patchify(pixels: Tensor, geometry: PatchGeometry) -> Tensor:
    """Normalised still images [N, 3, h, w] -> flattened patches [N · h/p · w/p, 3 · tp · p · p].

    Patch order per image: (merge-block row, merge-block col, intra row, intra col); each patch vector is
    (channel, time, row, col), time being the still image duplicated `temporal_patch_size` times.
    """
    p, m, tp = geometry.patch_size, geometry.merge_size, geometry.temporal_patch_size
    frames = einops.repeat(pixels, "n c h w -> n tp c h w", tp=tp)  # [N, tp, 3, h, w]
    return einops.rearrange(
        frames,
        "n tp c (hb m1 p1) (wb m2 p2) -> (n hb wb m1 m2) (c tp p1 p2)",
        m1=m, m2=m, p1=p, p2=p,
    )


def preprocess_images(
    images: Tensor, geometry: PatchGeometry, min_pixels: int, max_pixels: int
) -> tuple[Tensor, Tensor]:
    """uint8 RGB images of one size -> (pixel_values, image_grid_thw) as the Qwen3-VL processor returns them.

    Args:
        images: [N, 3, H, W] uint8 RGB (all images share one size).
        geometry: patch sizes.
        min_pixels: smallest resized area.
        max_pixels: largest resized area.

    Returns:
        pixel_values [N · grid_h · grid_w, patch_dim] float32 in [-1, 1], and image_grid_thw [N, 3] int64,
        every row (1, grid_h, grid_w) with grid = resized side / patch_size. Real model, 1080×1920 inputs: 720
        rows per image of 1536 values, grid (1, 20, 36).

    Raises:
        ValueError: wrong rank, channel count or dtype.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 RGB, got {images.dtype}")
    height, width = smart_resize(images.shape[-2], images.shape[-1], geometry.factor, min_pixels, max_pixels)
    resized = resize_uint8(images, (height, width))  # [N, 3, h, w] uint8
    normalised = (resized.float() - 127.5) / 127.5  # mean = std = 0.5 fused with the 1/255 rescale
    pixel_values = patchify(normalised, geometry)  # [N · gh · gw, patch_dim]
    grid = torch.tensor([1, height // geometry.patch_size, width // geometry.patch_size], dtype=torch.int64)
    return pixel_values, grid.to(images.device).expand(images.shape[0], 3).contiguous()
