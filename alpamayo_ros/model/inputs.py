"""Prompt ids per model family, and the shape checks of the model's public inputs.

`PromptBuilder` renders and tokenizes a model's prompts once per (kind, cameras, tokens per image) and splices
route and question texts into the cached ids (see `prompt.py`): "plan" prompts end in `<|cot_start|>`, "ask"
prompts (1.5 only) in `<|answer_start|>`. Rows whose prompts differ in length are left-padded with
`<|endoftext|>`, which no prompt holds otherwise, so the padding mask is `ids != pad`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from alpamayo_ros.model.config import AlpamayoConfig, check_camera_order
from alpamayo_ros.model.prompt import (
    insert_after,
    pad_left,
    plain_text_ids,
    render_question_prompt,
    render_trajectory_prompt,
    tokenize_prompt,
)

class PromptBuilder:
    """Token ids of one model's prompts in its family's style (`config.family`)."""

    def __init__(self, config: AlpamayoConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.special = config.tokens.special_token_ids()
        self._added_ids = frozenset(tokenizer.added_tokens_decoder)  # never inside route or question text
        self._templates: dict[tuple[str, tuple[int, ...], int], Tensor] = {}

    def camera_indices(self, camera_names: Sequence[str] | None = None) -> tuple[int, ...]:
        """Prompt camera indices: 1.5 upstream indices (checked), R1 0…V−1 (its prompt has no labels).

        Args:
            camera_names: the cameras of the images; default `config.io.camera_names`.

        Raises:
            ValueError: a 1.5 camera without an upstream index, or cameras out of index order.
        """
        names = tuple(self.config.io.camera_names if camera_names is None else camera_names)
        if self.config.family == "a15":
            return check_camera_order(names)
        return tuple(range(len(names)))

    def template(self, kind: str, cameras: tuple[int, ...], tokens_per_image: int) -> Tensor:
        """Cached prompt ids [L] of `kind` ("plan" or "ask"), image pads expanded, without route or question.

        "plan" ids still hold the `<|traj_history|>` placeholders (`prompt.fuse_history` fills them).

        Raises:
            ValueError: unknown kind, or "ask" for an R1 model.
        """
        key = (kind, cameras, tokens_per_image)
        if key in self._templates:
            return self._templates[key]
        io, style = self.config.io, self.config.family
        frames, num_images = io.frames_per_camera, len(cameras) * io.frames_per_camera
        if kind == "plan":
            history = io.tokens_per_history_traj
            text = render_trajectory_prompt(style, cameras, frames, history)
        elif kind == "ask" and style == "a15":
            history, text = 0, render_question_prompt(cameras, frames, "")
        else:
            raise ValueError(f"no {kind!r} prompt for family {style!r}")
        ids = tokenize_prompt(self.tokenizer, self.special, text, num_images, history, tokens_per_image)
        self._templates[key] = ids
        return ids

    def text_ids(self, text: str, what: str) -> list[int]:
        """Ids of a route or question text; ValueError if it holds added (special or `<iN>`) tokens."""
        return plain_text_ids(self.tokenizer, text, self._added_ids, what)

    def trajectory(
        self, batch: int, cameras: tuple[int, ...], tokens_per_image: int, route: Sequence[str | None] | None
    ) -> Tensor:
        """[B, L] trajectory prompt ids (placeholders unfilled), each row with its route block if any,
        left-padded to a common length (MODEL-1.5.md §4.3: route block right after `<|traj_history_end|>`)."""
        base = self.template("plan", cameras, tokens_per_image)
        if route is None or all(text is None for text in route):
            return base.expand(batch, -1)
        special, rows = self.special, []
        for text in route:
            if text is None:
                rows.append(base)
            else:
                block = [special.route_start, *self.text_ids(text, "route"), special.route_end]
                rows.append(insert_after(base, special.traj_history_end, block))
        return pad_left(rows, special.pad)

    def question(self, cameras: tuple[int, ...], tokens_per_image: int, question: str) -> Tensor:
        """[1, L] question prompt ids (MODEL-1.5.md §4.4)."""
        base = self.template("ask", cameras, tokens_per_image)
        return insert_after(base, self.special.question_start, self.text_ids(question, "question"))[None]


def check_plan_inputs(
    config: AlpamayoConfig,
    images: Tensor,
    hist_xyz: Tensor,
    hist_rot: Tensor,
    samples: int,
    max_new_tokens: int,
    noise: Tensor | None,
    forced: Tensor | None,
    views: int,
) -> None:
    """Raise ValueError unless every `plan` input has the documented shape and dtype (V = `views`)."""
    io, batch = config.io, images.shape[0] if images.dim() else 0
    frames, poses = io.frames_per_camera, io.history_poses
    layout_ok = images.dim() == 6 and images.shape[1:4] == (views, frames, 3) and batch >= 1
    if not layout_ok or images.dtype != torch.uint8:
        raise ValueError(
            f"images must be uint8 [B, {views}, {frames}, 3, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    if hist_xyz.shape != (batch, poses, 3) or hist_rot.shape != (batch, poses, 3, 3):
        raise ValueError(
            f"hist_xyz/hist_rot must be [{batch}, {poses}, 3] / [{batch}, {poses}, 3, 3], "
            f"got {tuple(hist_xyz.shape)} / {tuple(hist_rot.shape)}"
        )
    if samples < 1 or max_new_tokens < 1:
        raise ValueError(f"num_samples and max_new_tokens must be >= 1, got {samples} and {max_new_tokens}")
    if noise is not None and noise.shape != (batch, samples, config.n_waypoints, 2):
        raise ValueError(
            f"noise must be [{batch}, {samples}, {config.n_waypoints}, 2], got {tuple(noise.shape)}"
        )
    bad_forced = forced is not None and (forced.dim() != 3 or forced.shape[:2] != (batch, samples))
    if bad_forced or (forced is not None and forced.numel() == 0):
        raise ValueError(f"forced_coc_ids must be [{batch}, {samples}, N >= 1], got {tuple(forced.shape)}")


def _needs_a15(config: AlpamayoConfig, feature: str) -> None:
    if config.family != "a15":
        raise ValueError(f"{feature} needs an Alpamayo 1.5 model (family 'a15'), this is {config.family!r} "
                         f"(load with family='a15' to force it)")


def check_route(
    config: AlpamayoConfig, route: Sequence[str | None] | None, guidance_weight: float | None, batch: int
) -> None:
    """Raise ValueError unless the route texts and guidance weight fit the model and the batch.

    A guidance weight needs a route for every input (upstream raises likewise, MODEL-1.5.md §7).
    """
    if route is None and guidance_weight is None:
        return
    _needs_a15(config, "route conditioning")
    if route is not None and (
        isinstance(route, str)
        or len(route) != batch
        or not all(text is None or isinstance(text, str) for text in route)
    ):
        raise ValueError(f"route must be a list of {batch} texts or None (one per input), got {route!r}")
    if guidance_weight is not None:
        if route is None or any(text is None for text in route):
            raise ValueError(f"guidance_weight needs a route text for every input, got route={route!r}")
        if not math.isfinite(guidance_weight):
            raise ValueError(f"guidance_weight must be finite, got {guidance_weight!r}")


def check_question_inputs(config: AlpamayoConfig, images: Tensor, max_new_tokens: int, views: int) -> None:
    """Raise ValueError unless `ask` can run: a 1.5 model, images [1, V, F, 3, H, W] uint8, a token cap."""
    _needs_a15(config, "question answering")
    frames = config.io.frames_per_camera
    if images.dim() != 6 or images.shape[:4] != (1, views, frames, 3) or images.dtype != torch.uint8:
        raise ValueError(
            f"images must be uint8 [1, {views}, {frames}, 3, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
