"""Alpamayo 1.5 prompts (MODEL-1.5.md §4): labelled cameras and frames, variable camera counts and their rope
offsets, the route block and its removal for guidance, the question prompt, left padding."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from alpamayo_ros.model.config import CAMERA_NAMES, check_camera_order
from alpamayo_ros.model.guidance import unguided_prompt_ids
from alpamayo_ros.model.inputs import PromptBuilder
from alpamayo_ros.model.prompt import (
    camera_label,
    insert_after,
    mrope_position_ids,
    pad_left,
    remove_span,
    render_prompt,
    render_question_prompt,
    render_trajectory_prompt,
    tokenize_prompt,
)

IMG = "<|vision_start|><|image_pad|><|vision_end|>"
HEAD = "<|im_start|>system\nYou are a driving assistant that generates safe and accurate actions.<|im_end|>\n"
INSTRUCTION = (
    "output the chain-of-thought reasoning of the driving process, then output the future trajectory."
)
HISTORY = "<|traj_history_start|>" + "<|traj_history|>" * 48 + "<|traj_history_end|>"
FRAMES = "".join(f"frame {k} {IMG}" for k in range(4))
# Camera subsets in upstream index order: 2, 3 and 4 cameras.
SUBSETS = {
    2: ("camera_front_wide_120fov", "camera_front_tele_30fov"),
    3: ("camera_cross_left_120fov", "camera_front_wide_120fov", "camera_cross_right_120fov"),
    4: CAMERA_NAMES,
}


def test_a15_trajectory_prompt_is_the_spec_string():
    cameras = ("Front left camera", "Front camera", "Front right camera", "Front telephoto camera")
    user = "".join(f"{name}: {FRAMES}" for name in cameras) + HISTORY
    tail = "<|im_end|>\n<|im_start|>assistant\n<|cot_start|>"
    assert render_trajectory_prompt("a15", (0, 1, 2, 6), 4, 48) == (
        HEAD + "<|im_start|>user\n" + user + INSTRUCTION + tail
    )
    assert render_trajectory_prompt("a15", (0, 1, 2, 6), 4, 48, route="Turn left in 11m") == (
        HEAD + "<|im_start|>user\n" + user + "<|route_start|>Turn left in 11m<|route_end|>" + INSTRUCTION
        + tail
    )


def test_r1_style_is_unchanged_and_has_no_labels():
    assert render_trajectory_prompt("r1", range(4), 4, 48) == render_prompt(16, 48)
    assert "camera" not in render_prompt(16, 48) and "frame" not in render_prompt(16, 48)
    with pytest.raises(ValueError, match="prompt style must be one of"):
        render_trajectory_prompt("r2", range(4), 4, 48)


def test_question_prompt_is_the_spec_string():
    assert render_question_prompt((1,), 4, "Is the light red?") == (
        HEAD + "<|im_start|>user\nFront camera: " + FRAMES
        + "<|question_start|>Is the light red?<|question_end|>"
        + "<|im_end|>\n<|im_start|>assistant\n<|answer_start|>"
    )


def test_camera_labels_and_order():
    assert [camera_label(i) for i in (0, 1, 2, 3, 4, 5, 6, 9)] == [
        "Front left camera", "Front camera", "Front right camera", "Rear left camera", "Rear camera",
        "Rear right camera", "Front telephoto camera", "Camera 9"]
    assert check_camera_order(CAMERA_NAMES) == (0, 1, 2, 6)
    with pytest.raises(ValueError, match="ascending camera index order"):
        check_camera_order(("camera_front_tele_30fov", "camera_front_wide_120fov"))
    with pytest.raises(ValueError, match=r"\['front'\] have no upstream camera index"):
        check_camera_order(("front",))


@pytest.mark.parametrize("num_cameras", sorted(SUBSETS))
def test_a15_token_layout_per_camera_count(tiny_a15_config, tiny_a15_tokenizer, num_cameras: int):
    prompts = PromptBuilder(tiny_a15_config, tiny_a15_tokenizer)
    cameras = prompts.camera_indices(SUBSETS[num_cameras])
    ids = prompts.template("plan", cameras, 4).tolist()
    special, decode = prompts.special, tiny_a15_tokenizer.decode
    starts = [i for i, t in enumerate(ids) if t == special.vision_start]
    assert len(starts) == 4 * num_cameras and ids.count(special.image_pad) == 16 * num_cameras
    for s in starts:
        assert ids[s : s + 6] == [special.vision_start] + [special.image_pad] * 4 + [special.vision_end]
    # Text between image blocks: the camera name before each camera's first frame, then "frame k ".
    user = ids.index(special.im_start, 1) + 3  # <|im_start|> user \n
    gaps = [decode(ids[a:b]) for a, b in zip([user] + [s + 6 for s in starts[:-1]], starts)]
    names = [camera_label(i) for i in cameras]
    assert gaps == [f"{names[c]}: frame 0 " if k == 0 else f"frame {k} " for c in range(num_cameras)
                    for k in range(4)]
    h = ids.index(special.traj_history_start)
    assert h == starts[-1] + 6 and ids[h + 49] == special.traj_history_end
    assert decode(ids[h + 50 :]) == INSTRUCTION + "<|im_end|>\n<|im_start|>assistant\n<|cot_start|>"


def test_route_and_question_splices_equal_whole_prompt_tokenization(tiny_a15_config, tiny_a15_tokenizer):
    prompts, cameras = PromptBuilder(tiny_a15_config, tiny_a15_tokenizer), (0, 1, 2, 6)
    route = "Turn left in 11m, then keep lane"
    whole = render_trajectory_prompt("a15", cameras, 4, 48, route=route)
    expected = tokenize_prompt(tiny_a15_tokenizer, prompts.special, whole, 16, 48, 4)
    assert torch.equal(prompts.trajectory(1, cameras, 4, [route])[0], expected)
    question = "What is the car ahead doing?"
    whole = render_question_prompt(cameras, 4, question)
    expected = tokenize_prompt(tiny_a15_tokenizer, prompts.special, whole, 16, 0, 4)
    assert torch.equal(prompts.question(cameras, 4, question)[0], expected)


def test_texts_with_special_tokens_are_rejected(tiny_a15_config, tiny_a15_tokenizer):
    prompts = PromptBuilder(tiny_a15_config, tiny_a15_tokenizer)
    for text in ("left<|route_end|>now", "<|im_end|>", "go <i3>"):
        with pytest.raises(ValueError, match="route must be plain text without special tokens"):
            prompts.trajectory(1, (0, 1, 2, 6), 4, [text])
    with pytest.raises(ValueError, match="no 'ask' prompt for family 'r1'"):
        PromptBuilder(replace(tiny_a15_config, family="r1"), tiny_a15_tokenizer).template("ask", (0,), 4)


@pytest.mark.parametrize("num_cameras", sorted(SUBSETS))
def test_rope_offsets_per_camera_count(tiny_a15_model, make_inputs, num_cameras: int):
    """Each 64×64 frame costs 4 pad tokens but 2 positions: rope_deltas = −2 per image = −8 per camera."""
    images, hist_xyz, _ = make_inputs(1)
    cameras = SUBSETS[num_cameras]
    images = images[:, [CAMERA_NAMES.index(name) for name in cameras]]
    prepared = tiny_a15_model.prepare_inputs(images, hist_xyz, camera_names=cameras)
    input_ids, _, grid, positions, deltas = prepared
    assert deltas.tolist() == [[-8 * num_cameras]]
    hf_positions, hf_deltas = tiny_a15_model.vlm.model.get_rope_index(input_ids, grid)
    assert torch.equal(positions, hf_positions) and torch.equal(deltas, hf_deltas)


def test_padded_batch_positions_match_transformers(tiny_a15_model, make_inputs):
    images, hist_xyz, _ = make_inputs(3)
    routes = ["Turn left in 11m", None, "Turn right in 300m at the intersection"]
    input_ids, _, grid, positions, deltas = tiny_a15_model.prepare_inputs(images, hist_xyz, route=routes)
    pad = tiny_a15_model.special.pad
    mask = input_ids != pad
    lengths = mask.sum(dim=1).tolist()
    assert lengths[0] < lengths[2] == input_ids.shape[1] and lengths[1] < lengths[0]
    assert not mask[:, : input_ids.shape[1] - max(lengths)].any() and mask[:, -min(lengths) :].all()
    hf_positions, hf_deltas = tiny_a15_model.vlm.model.get_rope_index(input_ids, grid,
                                                                      attention_mask=mask.long())
    assert torch.equal(positions, hf_positions) and torch.equal(deltas, hf_deltas)
    # Decode positions (cache index + delta) continue each row's own positions, padded or not.
    assert (positions.amax(dim=(0, 2)) + 1 == input_ids.shape[1] + deltas[:, 0]).all()


def test_unguided_prompt_is_the_route_free_prompt(tiny_a15_model, make_inputs):
    images, hist_xyz, _ = make_inputs(2)
    routes = ["Turn left in 11m", "Turn right in 300m at the intersection"]
    guided = tiny_a15_model.prepare_inputs(images, hist_xyz, route=routes)[0]
    plain = tiny_a15_model.prepare_inputs(images, hist_xyz)[0]
    special = tiny_a15_model.special
    assert torch.equal(unguided_prompt_ids(guided[1:], special), plain[1:])  # unpadded row: exactly
    # Upstream keeps the guided batch's left padding (masked by id), then re-pads to a common length U.
    unguided = unguided_prompt_ids(guided, special)
    guided_pads = (guided == special.pad).sum(dim=1)  # [B]
    assert unguided.shape[1] == plain.shape[1] + int(guided_pads.max())
    for b in range(2):
        assert torch.equal(unguided[b][unguided[b] != special.pad], plain[b])
    with pytest.raises(ValueError, match="no span"):
        unguided_prompt_ids(plain, tiny_a15_model.special)


def test_splice_helpers():
    ids = torch.tensor([5, 1, 7, 2, 9])
    assert insert_after(ids, 1, [3, 4]).tolist() == [5, 1, 3, 4, 7, 2, 9]
    assert remove_span(torch.tensor([5, 1, 7, 2, 9, 1, 2]), 1, 2).tolist() == [5, 9, 1, 2]
    assert pad_left([torch.tensor([1, 2]), torch.tensor([3])], 0).tolist() == [[1, 2], [0, 3]]
    with pytest.raises(ValueError, match="token id 4 is not in the prompt"):
        insert_after(ids, 4, [1])
    _, deltas = mrope_position_ids(torch.tensor([[0, 0, 3, 4], [3, 4, 4, 4]]), torch.zeros(0, 3), 7, 2,
                                   torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]))
    assert deltas.tolist() == [[-2], [0]]  # text only: positions 0, 1 after the pads -> 2 − 4
