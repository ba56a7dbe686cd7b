"""The inference prompt (MODEL.md §4.3), history-token fusion (§4.5) and Qwen3-VL 3-D positions (§5.1).

The prompt is the Qwen3-VL chat template rendered with `continue_final_message=True`: a system turn, a user
turn with V·F image blocks (camera-major, time-minor) then the history placeholders and the instruction, and
an assistant turn prefilled with `<|cot_start|>` and left open. Each `<|image_pad|>` is expanded to the
image's LLM token count, then the `<|traj_history|>` placeholders are overwritten by history bin ids.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from alpamayo_ros.model.tokens import BASE_TOKEN_STRINGS, SpecialTokens, TokenizerError, special_token

SYSTEM_PROMPT = "You are a driving assistant that generates safe and accurate actions."
USER_INSTRUCTION = (
    "output the chain-of-thought reasoning of the driving process, then output the future trajectory."
)


def render_prompt(num_images: int, num_history_tokens: int) -> str:
    """The rendered prompt string before image-pad expansion (MODEL.md §4.3), ending in `<|cot_start|>`."""
    im_start, im_end = BASE_TOKEN_STRINGS["im_start"], BASE_TOKEN_STRINGS["im_end"]
    image = BASE_TOKEN_STRINGS["vision_start"] + special_token("image_pad") + BASE_TOKEN_STRINGS["vision_end"]
    history = (
        special_token("traj_history_start")
        + special_token("traj_history") * num_history_tokens
        + special_token("traj_history_end")
    )
    return (
        f"{im_start}system\n{SYSTEM_PROMPT}{im_end}\n"
        f"{im_start}user\n{image * num_images}{history}{USER_INSTRUCTION}{im_end}\n"
        f"{im_start}assistant\n{special_token('cot_start')}"
    )


def prompt_token_ids(
    tokenizer: PreTrainedTokenizerBase,
    specials: SpecialTokens,
    num_images: int,
    num_history_tokens: int,
    tokens_per_image: int,
) -> Tensor:
    """Token ids of the prompt with every `<|image_pad|>` expanded to `tokens_per_image` copies.

    Args:
        tokenizer: the extended tokenizer.
        specials: its special-token ids.
        num_images: V·F image blocks.
        num_history_tokens: history placeholders (3 per pose).
        tokens_per_image: LLM tokens per image, grid_h·grid_w / merge² (180 for 320×576 frames).

    Returns:
        [L] int64, still holding the `<|traj_history|>` placeholders.

    Raises:
        TokenizerError: the tokenizer does not split the image/history placeholders out as single tokens.
    """
    ids = tokenizer(render_prompt(num_images, num_history_tokens), add_special_tokens=False)["input_ids"]
    if ids.count(specials.image_pad) != num_images or ids.count(specials.traj_history) != num_history_tokens:
        raise TokenizerError(
            f"prompt tokenization gave {ids.count(specials.image_pad)} image pads (expected {num_images}) "
            f"and {ids.count(specials.traj_history)} history placeholders (expected {num_history_tokens})"
        )
    expanded: list[int] = []
    for token in ids:
        expanded.extend([token] * tokens_per_image if token == specials.image_pad else [token])
    return torch.tensor(expanded, dtype=torch.int64)


def fuse_history(input_ids: Tensor, history_ids: Tensor, placeholder_id: int) -> Tensor:
    """Overwrite the history placeholders of each row, in order, with that row's history token ids.

    Args:
        input_ids: [B, L] int64 with exactly N placeholders per row.
        history_ids: [B, N] int64 vocabulary ids (bins + hist_token_start_idx).
        placeholder_id: id of `<|traj_history|>`.

    Returns:
        [B, L] int64 (a new tensor; nothing else changes).

    Raises:
        ValueError: a row's placeholder count differs from N.
    """
    mask = input_ids == placeholder_id  # [B, L]
    counts = mask.sum(dim=-1)  # [B]
    rows_match = history_ids.dim() == 2 and history_ids.shape[0] == input_ids.shape[0]
    if not rows_match or (counts != history_ids.shape[-1]).any():
        raise ValueError(
            f"history_ids {tuple(history_ids.shape)} do not match the placeholders per row {counts.tolist()}"
        )
    return input_ids.masked_scatter(mask, history_ids.to(input_ids.dtype))


def mrope_position_ids(
    input_ids: Tensor, image_grid_thw: Tensor, image_token_id: int, merge_size: int
) -> tuple[Tensor, Tensor]:
    """Qwen3-VL 3-D (t, h, w) positions of a prompt and its rope deltas (same rule as transformers'
    `Qwen3VLModel.get_rope_index` for images, MODEL.md §5.1).

    Text tokens get (p, p, p) with p counting up; an image block with merged grid (t, h', w') starting at text
    position s gets (s + ti, s + hi, s + wi), and text resumes at s + max(t, h', w'). Images are consumed from
    `image_grid_thw` in row-major (row, then position) order.

    Args:
        input_ids: [B, L] int64, no padding.
        image_grid_thw: [N, 3] int64 patch grids of all images of all rows, in order.
        image_token_id: id of `<|image_pad|>`.
        merge_size: spatial merge size.

    Returns:
        position_ids [3, B, L] int64 and rope_deltas [B, 1] int64 = max position + 1 − L
        (−2592 for the real 16-image prompt, −8 for MODEL.md §11.1's tiny 4-image one).

    Raises:
        ValueError: the image tokens do not match the grids.
    """
    batch, length = input_ids.shape
    grids = image_grid_thw.tolist()
    position_ids = torch.empty(3, batch, length, dtype=torch.int64)
    deltas: list[int] = []
    image = 0
    for b, row in enumerate(input_ids.tolist()):
        chunks: list[Tensor] = []
        start, next_pos = 0, 0
        while image_token_id in row[start:]:
            end = row.index(image_token_id, start)
            if image >= len(grids):
                raise ValueError(f"row {b} has more image blocks than image_grid_thw rows ({len(grids)})")
            t, h, w = grids[image][0], grids[image][1] // merge_size, grids[image][2] // merge_size
            image += 1
            text = torch.arange(end - start).expand(3, -1) + next_pos  # [3, n_text]
            s = next_pos + end - start
            t_idx = torch.arange(t).repeat_interleave(h * w)
            h_idx = torch.arange(h).repeat_interleave(w).repeat(t)
            w_idx = torch.arange(w).repeat(t * h)
            chunks += [text, torch.stack([t_idx, h_idx, w_idx]) + s]  # [3, t·h'·w']
            start = end + t * h * w
            if row[end:start] != [image_token_id] * (t * h * w):
                raise ValueError(f"row {b}: image block at {end} is not {t * h * w} image tokens long")
            next_pos = s + max(t, h, w)
        chunks.append(torch.arange(length - start).expand(3, -1) + next_pos)
        positions = torch.cat(chunks, dim=1)  # [3, L]
        position_ids[:, b] = positions
        deltas.append(int(positions.max()) + 1 - length)
    if image != len(grids):
        raise ValueError(f"image_grid_thw has {len(grids)} rows but the prompts hold {image} image blocks")
    rope_deltas = torch.tensor(deltas, dtype=torch.int64, device=input_ids.device)[:, None]  # [B, 1]
    return position_ids.to(input_ids.device), rope_deltas
