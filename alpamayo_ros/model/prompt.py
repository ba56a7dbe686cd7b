"""Inference prompts (MODEL.md §4.3, MODEL-1.5.md §4), history fusion (§4.5), Qwen3-VL 3-D positions (§5.1).

Every prompt is the Qwen3-VL chat template rendered with `continue_final_message=True`: a system turn, a user
turn with V·F image blocks (camera-major, time-minor) and text, and an assistant turn prefilled and left open.
Each `<|image_pad|>` is expanded to the image's LLM token count, then the `<|traj_history|>` placeholders are
overwritten by history bin ids. Two styles:

- "r1": the images without any text, then the history block and the instruction; assistant `<|cot_start|>`.
- "a15": each camera's images preceded by its name and each frame by `frame k ` (labels by camera index); the
  history block, an optional route block `<|route_start|>TEXT<|route_end|>`, the instruction. The question
  prompt has the same images, then `<|question_start|>Q<|question_end|>`; assistant `<|answer_start|>`.

Route and question texts are tokenized on their own and spliced into a prompt tokenized once: special tokens
delimit both sides, so the ids equal those of the whole rendered string (a test checks it).
"""

from __future__ import annotations

from collections.abc import Container, Sequence

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from alpamayo_ros.model.tokens import BASE_TOKEN_STRINGS, SpecialTokens, TokenizerError, special_token

PROMPT_STYLES = ("r1", "a15")
SYSTEM_PROMPT = "You are a driving assistant that generates safe and accurate actions."
USER_INSTRUCTION = (
    "output the chain-of-thought reasoning of the driving process, then output the future trajectory."
)
# 1.5 display name per camera index (MODEL-1.5.md §4.1); other indices are "Camera <idx>".
CAMERA_LABELS: dict[int, str] = {
    0: "Front left camera",
    1: "Front camera",
    2: "Front right camera",
    3: "Rear left camera",
    4: "Rear camera",
    5: "Rear right camera",
    6: "Front telephoto camera",
}
_IMAGE = BASE_TOKEN_STRINGS["vision_start"] + special_token("image_pad") + BASE_TOKEN_STRINGS["vision_end"]


def camera_label(index: int) -> str:
    """The 1.5 prompt's name of camera `index` ("Front camera", …, else "Camera <idx>")."""
    return CAMERA_LABELS.get(index, f"Camera {index}")


def render_images(style: str, camera_indices: Sequence[int], frames_per_camera: int) -> str:
    """The image items of the user turn: camera-major, time-minor; "a15" adds camera and frame labels.

    Raises:
        ValueError: unknown style.
    """
    if style == "r1":
        return _IMAGE * (len(camera_indices) * frames_per_camera)
    if style == "a15":
        frames = "".join(f"frame {k} {_IMAGE}" for k in range(frames_per_camera))
        return "".join(f"{camera_label(index)}: {frames}" for index in camera_indices)
    raise ValueError(f"prompt style must be one of {PROMPT_STYLES}, got {style!r}")


def render_chat(user: str, assistant_prefix: str) -> str:
    """System turn, `user` turn, and the assistant turn opened with `assistant_prefix` (left open)."""
    im_start, im_end = BASE_TOKEN_STRINGS["im_start"], BASE_TOKEN_STRINGS["im_end"]
    return (
        f"{im_start}system\n{SYSTEM_PROMPT}{im_end}\n"
        f"{im_start}user\n{user}{im_end}\n"
        f"{im_start}assistant\n{assistant_prefix}"
    )


def route_block(route: str) -> str:
    """`<|route_start|>` + raw navigation text + `<|route_end|>` (MODEL-1.5.md §4.3)."""
    return special_token("route_start") + route + special_token("route_end")


def render_trajectory_prompt(
    style: str,
    camera_indices: Sequence[int],
    frames_per_camera: int,
    num_history_tokens: int,
    route: str | None = None,
) -> str:
    """The rendered trajectory prompt before image-pad expansion, ending in `<|cot_start|>`.

    Args:
        style: "r1" or "a15".
        camera_indices: upstream camera index of each camera, ascending (labels of the "a15" style).
        frames_per_camera: F.
        num_history_tokens: history placeholders (3 per pose).
        route: navigation text for the route block after the history block; None: no route block.
    """
    history = (
        special_token("traj_history_start")
        + special_token("traj_history") * num_history_tokens
        + special_token("traj_history_end")
    )
    images = render_images(style, camera_indices, frames_per_camera)
    route_text = "" if route is None else route_block(route)
    return render_chat(f"{images}{history}{route_text}{USER_INSTRUCTION}", special_token("cot_start"))


def render_question_prompt(camera_indices: Sequence[int], frames_per_camera: int, question: str) -> str:
    """The 1.5 question prompt (MODEL-1.5.md §4.4): labelled images, the question, `<|answer_start|>`."""
    images = render_images("a15", camera_indices, frames_per_camera)
    user = images + special_token("question_start") + question + special_token("question_end")
    return render_chat(user, special_token("answer_start"))


def render_prompt(num_images: int, num_history_tokens: int) -> str:
    """The R1 prompt string before image-pad expansion (MODEL.md §4.3), ending in `<|cot_start|>`."""
    return render_trajectory_prompt("r1", range(num_images), 1, num_history_tokens)


def tokenize_prompt(
    tokenizer: PreTrainedTokenizerBase,
    specials: SpecialTokens,
    text: str,
    num_images: int,
    num_history_tokens: int,
    tokens_per_image: int,
) -> Tensor:
    """Token ids of a rendered prompt with every `<|image_pad|>` expanded to `tokens_per_image` copies.

    Args:
        tokenizer: the extended tokenizer.
        specials: its special-token ids.
        text: the rendered prompt.
        num_images: image blocks it must hold.
        num_history_tokens: history placeholders it must hold.
        tokens_per_image: LLM tokens per image, grid_h·grid_w / merge² (180 for 320×576 frames).

    Returns:
        [L] int64, still holding the `<|traj_history|>` placeholders.

    Raises:
        TokenizerError: the tokenizer does not split the image/history placeholders out as single tokens.
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if ids.count(specials.image_pad) != num_images or ids.count(specials.traj_history) != num_history_tokens:
        raise TokenizerError(
            f"prompt tokenization gave {ids.count(specials.image_pad)} image pads (expected {num_images}) "
            f"and {ids.count(specials.traj_history)} history placeholders (expected {num_history_tokens})"
        )
    expanded: list[int] = []
    for token in ids:
        expanded.extend([token] * tokens_per_image if token == specials.image_pad else [token])
    return torch.tensor(expanded, dtype=torch.int64)


def prompt_token_ids(
    tokenizer: PreTrainedTokenizerBase,
    specials: SpecialTokens,
    num_images: int,
    num_history_tokens: int,
    tokens_per_image: int,
) -> Tensor:
    """Token ids of the R1 prompt (`render_prompt`), image pads expanded -> [L] int64 (`tokenize_prompt`)."""
    text = render_prompt(num_images, num_history_tokens)
    return tokenize_prompt(tokenizer, specials, text, num_images, num_history_tokens, tokens_per_image)


def plain_text_ids(
    tokenizer: PreTrainedTokenizerBase, text: str, forbidden_ids: Container[int], what: str
) -> list[int]:
    """Ids of a free text (route, question) that must not hold special or trajectory tokens.

    Args:
        tokenizer: the extended tokenizer.
        text: the text.
        forbidden_ids: ids the text may not produce (the tokenizer's added tokens).
        what: the text's name for the error.

    Raises:
        ValueError: the text holds such a token (it would break the prompt's structure).
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if any(i in forbidden_ids for i in ids):
        raise ValueError(f"{what} must be plain text without special tokens, got {text!r}")
    return ids


def insert_after(ids: Tensor, marker_id: int, tokens: Sequence[int]) -> Tensor:
    """[L] ids with `tokens` inserted right after the first `marker_id` -> [L + len(tokens)] (new tensor).

    Raises:
        ValueError: `marker_id` is not in `ids`.
    """
    where = (ids == marker_id).nonzero()
    if where.numel() == 0:
        raise ValueError(f"token id {marker_id} is not in the prompt")
    cut = int(where[0, 0]) + 1
    return torch.cat([ids[:cut], torch.tensor(tokens, dtype=ids.dtype), ids[cut:]])


def remove_span(ids: Tensor, start_id: int, end_id: int) -> Tensor:
    """[L] ids without the tokens from the first `start_id` through the first `end_id` after it, inclusive
    (the unguided prompt of MODEL-1.5.md §7 step 2).

    Raises:
        ValueError: the span is not there.
    """
    starts = (ids == start_id).nonzero()
    ends = (ids == end_id).nonzero()
    if starts.numel() == 0 or ends.numel() == 0:
        raise ValueError(f"no span from token id {start_id} to {end_id} in the prompt")
    first = int(starts[0, 0])
    after = ends[ends[:, 0] > first]
    if after.numel() == 0:
        raise ValueError(f"no token id {end_id} after {start_id} in the prompt")
    return torch.cat([ids[:first], ids[int(after[0, 0]) + 1 :]])


def pad_left(rows: Sequence[Tensor], pad_id: int) -> Tensor:
    """Stack [L_b] id rows into [B, max L_b], left-padded with `pad_id` (as the reference processor pads)."""
    length = max(row.shape[0] for row in rows)
    out = torch.full((len(rows), length), pad_id, dtype=torch.int64)
    for b, row in enumerate(rows):
        out[b, length - row.shape[0] :] = row
    return out


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
    input_ids: Tensor,
    image_grid_thw: Tensor,
    image_token_id: int,
    merge_size: int,
    attention_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Qwen3-VL 3-D (t, h, w) positions of a prompt and its rope deltas (same rule as transformers'
    `Qwen3VLModel.get_rope_index` for images, MODEL.md §5.1).

    Text tokens get (p, p, p) with p counting up; an image block with merged grid (t, h', w') starting at text
    position s gets (s + ti, s + hi, s + wi), and text resumes at s + max(t, h', w'). Images are consumed from
    `image_grid_thw` in row-major (row, then position) order. With an attention mask, positions count only
    the unmasked tokens, masked ones get 1, and the delta still uses the padded length L (transformers' rule,
    so that decode position = cache index + delta).

    Args:
        input_ids: [B, L] int64.
        image_grid_thw: [N, 3] int64 patch grids of all images of all rows, in order.
        image_token_id: id of `<|image_pad|>`.
        merge_size: spatial merge size.
        attention_mask: [B, L], nonzero for real tokens (left padding); None = no padding.

    Returns:
        position_ids [3, B, L] int64 and rope_deltas [B, 1] int64 = max position + 1 − L
        (−2592 for the real 16-image prompt, −8 for MODEL.md §11.1's tiny 4-image one).

    Raises:
        ValueError: the image tokens do not match the grids.
    """
    batch, length = input_ids.shape
    grids = image_grid_thw.tolist()
    position_ids = torch.ones(3, batch, length, dtype=torch.int64)
    valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    deltas: list[int] = []
    image = 0
    for b, (all_ids, keep) in enumerate(zip(input_ids.cpu(), valid.cpu())):
        row = all_ids[keep].tolist()
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
        chunks.append(torch.arange(len(row) - start).expand(3, -1) + next_pos)
        positions = torch.cat(chunks, dim=1)  # [3, L_valid]
        position_ids[:, b, keep] = positions
        deltas.append(int(positions.max()) + 1 - length)
    if image != len(grids):
        raise ValueError(f"image_grid_thw has {len(grids)} rows but the prompts hold {image} image blocks")
    rope_deltas = torch.tensor(deltas, dtype=torch.int64, device=input_ids.device)[:, None]  # [B, 1]
    return position_ids.to(input_ids.device), rope_deltas
