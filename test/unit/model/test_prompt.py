"""Image preprocessing (MODEL.md §4.2), prompt layout (§4.3), history fusion (§4.5), 3-D positions (§5.1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize as hf_smart_resize

from alpamayo_ros.model.images import PatchGeometry, preprocess_images, resize_uint8, smart_resize
from alpamayo_ros.model.prompt import fuse_history, mrope_position_ids, prompt_token_ids, render_prompt

REAL = PatchGeometry()
IMG = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.mark.parametrize(
    ("size", "budget", "expected"),
    [
        ((1080, 1920), (163840, 196608), (320, 576)),
        ((64, 64), (4096, 4096), (64, 64)),
        ((127, 127), (4096, 4096), (64, 64)),
        ((100, 100), (163840, 196608), (416, 416)),  # §11.1: the real budget up-scales small frames
        ((20, 3000), (4096, 4096), (32, 768)),  # the short side is floored at 32, so the area may exceed max
    ],
)
def test_smart_resize(size, budget, expected):
    assert smart_resize(*size, 32, *budget) == expected == hf_smart_resize(*size, 32, *budget)


def test_smart_resize_rejects_extreme_aspect_ratio():
    with pytest.raises(ValueError, match="aspect ratio"):
        smart_resize(10, 2010, 32, 4096, 4096)


def test_real_frames_give_the_spec_grid():
    generator = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (2, 3, 1080, 1920), dtype=torch.uint8, generator=generator)
    pixel_values, grid = preprocess_images(frames, REAL, 163840, 196608)
    assert grid.tolist() == [[1, 20, 36]] * 2
    assert pixel_values.shape == (2 * 720, 1536) and pixel_values.dtype == torch.float32
    assert int(grid[0].prod()) // REAL.merge_size**2 == 180  # LLM tokens per image
    assert pixel_values.min() >= -1 and pixel_values.max() <= 1
    # The resize is torch's native uint8 antialiased bicubic kernel.
    expected = F.interpolate(frames, size=(320, 576), mode="bicubic", antialias=True, align_corners=False)
    assert torch.equal(resize_uint8(frames, (320, 576)), expected)


def test_patch_layout_matches_the_qwen_processor():
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (3, 3, 64, 96), dtype=torch.uint8, generator=generator)
    ours, grid = preprocess_images(images, REAL, 64 * 96, 64 * 96)  # already the target size: no resampling
    processor = Qwen2VLImageProcessor(
        patch_size=16, temporal_patch_size=2, merge_size=2, min_pixels=64 * 96, max_pixels=64 * 96,
        image_mean=[0.5] * 3, image_std=[0.5] * 3,
    )
    reference = processor(images=list(images.numpy()), do_resize=False, input_data_format="channels_first",
                          return_tensors="pt")
    assert torch.equal(grid, reference["image_grid_thw"])
    torch.testing.assert_close(ours, reference["pixel_values"], rtol=0, atol=1e-6)


def test_rendered_prompt_is_the_spec_string():
    text = render_prompt(16, 48)
    assert text == (
        "<|im_start|>system\nYou are a driving assistant that generates safe and accurate actions."
        "<|im_end|>\n"
        "<|im_start|>user\n" + IMG * 16 + "<|traj_history_start|>" + "<|traj_history|>" * 48
        + "<|traj_history_end|>output the chain-of-thought reasoning of the driving process, then output the "
        "future trajectory.<|im_end|>\n<|im_start|>assistant\n<|cot_start|>"
    )


def test_prompt_token_layout(tiny_tokenizer, tiny_config):
    special = tiny_config.tokens.special_token_ids()
    ids = prompt_token_ids(tiny_tokenizer, special, 16, 48, tokens_per_image=4).tolist()
    starts = [i for i, t in enumerate(ids) if t == special.vision_start]
    assert len(starts) == 16
    for s in starts:  # camera-major/time-minor blocks: start, 4 pads, end
        assert ids[s : s + 6] == [special.vision_start] + [special.image_pad] * 4 + [special.vision_end]
    assert ids.count(special.image_pad) == 64
    h = ids.index(special.traj_history_start)
    assert h == starts[-1] + 6  # no separator between the last image and the history block
    assert ids[h + 1 : h + 49] == [special.traj_history] * 48 and ids[h + 49] == special.traj_history_end
    assert ids[-1] == special.cot_start and special.im_end not in ids[-4:]
    assert tiny_tokenizer.decode(ids[-4:]) == "<|im_start|>assistant\n<|cot_start|>"


def test_history_fusion_replaces_exactly_the_placeholders_in_order(tiny_tokenizer, tiny_config):
    special = tiny_config.tokens.special_token_ids()
    prompt = prompt_token_ids(tiny_tokenizer, special, 16, 48, 4).expand(2, -1)
    hist = tiny_config.tokens.hist_token_start_idx + torch.arange(96).reshape(2, 48)
    fused = fuse_history(prompt, hist, special.traj_history)
    placeholder = prompt == special.traj_history
    assert torch.equal(fused[~placeholder], prompt[~placeholder])
    assert torch.equal(fused[placeholder].reshape(2, 48), hist)
    with pytest.raises(ValueError, match="placeholders per row"):
        fuse_history(prompt, hist[:, :47], special.traj_history)


def _synthetic_prompt(num_images: int, tokens_per_image: int, image_id: int = 7) -> torch.Tensor:
    """[1, L]: 5 text tokens, per image start/pads/end, 60 text tokens (only image ids matter)."""
    block = [1] + [image_id] * tokens_per_image + [2]
    return torch.tensor([[3] * 5 + block * num_images + [4] * 60])


def test_rope_deltas_of_the_real_layout():
    ids = _synthetic_prompt(16, 180)
    grids = torch.tensor([[1, 20, 36]] * 16)
    positions, deltas = mrope_position_ids(ids, grids, image_token_id=7, merge_size=2)
    assert deltas.tolist() == [[16 * (18 - 180)]] == [[-2592]]
    s = 6  # first image token: 5 text + vision_start
    assert positions[:, 0, s].tolist() == [s, s, s]
    assert positions[:, 0, s + 179].tolist() == [s, s + 9, s + 17]  # last token: (s, s+h'-1, s+w'-1)
    assert positions[:, 0, s + 180].tolist() == [s + 18] * 3  # vision_end: text resumes at s + max(h', w')


def test_rope_index_matches_transformers_on_the_tiny_layout(tiny_model, make_inputs):
    images, hist_xyz, _ = make_inputs(2)
    input_ids, _, grid, positions, deltas = tiny_model.prepare_inputs(images, hist_xyz)
    assert deltas.tolist() == [[16 * (2 - 4)]] * 2  # 16 images × (max(h', w') − tokens)
    hf_positions, hf_deltas = tiny_model.vlm.model.get_rope_index(input_ids, grid)
    assert torch.equal(positions, hf_positions) and torch.equal(deltas, hf_deltas)


def test_micro_layout_rope_deltas(tiny_tokenizer, tiny_config):
    """MODEL.md §11.1: 2 cameras × 2 frames at 64×64 -> rope_deltas 4·(2 − 4) = −8."""
    special = tiny_config.tokens.special_token_ids()
    ids = prompt_token_ids(tiny_tokenizer, special, 4, 12, 4)[None]
    _, deltas = mrope_position_ids(ids, torch.tensor([[1, 4, 4]] * 4), special.image_pad, 2)
    assert deltas.tolist() == [[-8]]


def test_rope_index_rejects_grid_mismatch():
    with pytest.raises(ValueError, match="image_grid_thw has 3 rows but the prompts hold 2"):
        mrope_position_ids(_synthetic_prompt(2, 4), torch.tensor([[1, 4, 4]] * 3), 7, 2)
    with pytest.raises(ValueError, match="is not 16 image tokens long"):
        mrope_position_ids(_synthetic_prompt(2, 4), torch.tensor([[1, 8, 8]] * 2), 7, 2)
