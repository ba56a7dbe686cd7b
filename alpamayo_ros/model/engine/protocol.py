"""The planning interface shared by the reference path (`AlpamayoR1`) and `FastEngine`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from alpamayo_ros.model.alpamayo import PlanOutput


@runtime_checkable
class Planner(Protocol):
    """Anything with `AlpamayoR1.plan`'s signature (see there for the arguments and shapes)."""

    def plan(
        self,
        images: Tensor,
        hist_xyz: Tensor,
        hist_rot: Tensor,
        *,
        num_samples: int = 1,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        max_new_tokens: int | None = None,
        noise: Tensor | None = None,
        greedy: bool = False,
        forced_coc_ids: Tensor | None = None,
        route: Sequence[str | None] | None = None,
        guidance_weight: float | None = None,
        camera_names: Sequence[str] | None = None,
    ) -> PlanOutput:
        """Reason about the scene and sample S future trajectories per input."""
        ...
