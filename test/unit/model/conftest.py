"""Fixtures of the model tests: tiny model + tokenizer, a real-layout tokenizer, deterministic inputs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from alpamayo_ros.model.alpamayo import AlpamayoR1
from alpamayo_ros.model.config import PRESETS, AlpamayoConfig
from alpamayo_ros.model.tokenizer import build_extended_tokenizer, build_tiny_tokenizer

# Qwen3-VL base specials at ids 151643…151668 (MODEL.md §3.1).
QWEN_SPECIALS = (
    "<|endoftext|> <|im_start|> <|im_end|> <|object_ref_start|> <|object_ref_end|> <|box_start|> <|box_end|> "
    "<|quad_start|> <|quad_end|> <|vision_start|> <|vision_end|> <|vision_pad|> <|image_pad|> <|video_pad|> "
    "<tool_call> </tool_call> <|fim_prefix|> <|fim_middle|> <|fim_suffix|> <|fim_pad|> <|repo_name|> "
    "<|file_sep|> <tool_response> </tool_response> <think> </think>"
).split()


def build_model(config: AlpamayoConfig, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> AlpamayoR1:
    """A randomly initialised model, reproducible without touching the caller's global RNG state."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return AlpamayoR1(config, tokenizer).eval()


@pytest.fixture(scope="session")
def tiny_config() -> AlpamayoConfig:
    return PRESETS["tiny"]


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_config: AlpamayoConfig) -> PreTrainedTokenizerBase:
    return build_tiny_tokenizer(tiny_config.tokens)


@pytest.fixture(scope="session")
def tiny_model(tiny_config: AlpamayoConfig, tiny_tokenizer: PreTrainedTokenizerBase) -> AlpamayoR1:
    """Shared tiny model: tests must not modify it."""
    return build_model(tiny_config, tiny_tokenizer)


@pytest.fixture(scope="session")
def qwen_like_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stand-in for the Qwen3-VL tokenizer directory: 151643 word tokens + the 26 Qwen specials (151669)."""
    vocab = {f"w{i}": i for i in range(151642)} | {"[UNK]": 151642}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.add_special_tokens([AddedToken(text, special=True) for text in QWEN_SPECIALS])
    path = tmp_path_factory.mktemp("qwen_like")
    pad, eos = QWEN_SPECIALS[0], QWEN_SPECIALS[2]
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token=pad, eos_token=eos)
    fast.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def real_layout_tokenizer(qwen_like_dir: Path) -> PreTrainedTokenizerBase:
    """The stand-in base extended by the real rule: ids of the released checkpoint."""
    return build_extended_tokenizer(qwen_like_dir)


def straight_history(batch: int, poses: int, speed_mps: float = 8.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Constant-speed straight driving along x ending at the origin -> (xyz [B, H, 3], rot [B, H, 3, 3])."""
    t = torch.arange(poses, dtype=torch.float32) * 0.1 - 0.1 * (poses - 1)  # [H], s, last = 0
    xyz = torch.stack([speed_mps * t, torch.zeros_like(t), torch.zeros_like(t)], dim=-1)  # [H, 3]
    return xyz.expand(batch, -1, -1).clone(), torch.eye(3).expand(batch, poses, 3, 3).clone()


def random_images(config: AlpamayoConfig, batch: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """uint8 images [B, V, F, 3, size, size] from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, len(config.io.camera_names), config.io.frames_per_camera, 3, size, size)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


InputsFn = Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@pytest.fixture(scope="session")
def make_inputs(tiny_config: AlpamayoConfig) -> InputsFn:
    """(batch=1, config=tiny, size=64, seed=0) -> (images [B, V, F, 3, s, s] uint8, hist_xyz, hist_rot)."""

    def make(batch: int = 1, config: AlpamayoConfig = tiny_config, size: int = 64, seed: int = 0):
        return (random_images(config, batch, size, seed), *straight_history(batch, config.io.history_poses))

    return make


@pytest.fixture(scope="session")
def tiny_a15_config() -> AlpamayoConfig:
    return PRESETS["tiny-a15"]


@pytest.fixture(scope="session")
def tiny_a15_tokenizer(tiny_a15_config: AlpamayoConfig) -> PreTrainedTokenizerBase:
    return build_tiny_tokenizer(tiny_a15_config.tokens, "a15")


@pytest.fixture(scope="session")
def tiny_a15_model(
    tiny_a15_config: AlpamayoConfig, tiny_a15_tokenizer: PreTrainedTokenizerBase
) -> AlpamayoR1:
    """Shared tiny 1.5-style model (the weights of `tiny_model`): tests must not modify it."""
    return build_model(tiny_a15_config, tiny_a15_tokenizer)
