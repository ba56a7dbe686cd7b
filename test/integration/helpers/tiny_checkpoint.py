"""Tests make their own tiny models: a randomly initialised tiny Alpamayo saved as a checkpoint directory."""

from __future__ import annotations

from pathlib import Path

import torch

from alpamayo_ros.model.alpamayo import AlpamayoR1
from alpamayo_ros.model.config import PRESETS
from alpamayo_ros.model.loading import save_pretrained
from alpamayo_ros.model.tokenizer import build_tiny_tokenizer


def write_tiny_checkpoint(path: Path, seed: int = 0) -> Path:
    config = PRESETS["tiny"]
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AlpamayoR1(config, build_tiny_tokenizer(config.tokens)).eval()
    save_pretrained(model, path, max_shard_size="2MB")
    return path
