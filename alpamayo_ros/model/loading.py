"""Load and save `AlpamayoR1` checkpoints: config.json + (sharded) safetensors, keys exactly as the release.

Loading builds the network on the meta device, checks the checkpoint's key set and shapes strictly against it
(raising `CheckpointError` naming the path and every missing/unexpected/mis-shaped key), assigns the tensors
shard by shard, then rebuilds every non-learned buffer the checkpoint does not hold from the config (RoPE
frequencies, Fourier frequencies, action-space statistics; MODEL.md §1.4, §8.3). Alpamayo 1.5 registers those
buffers as non-persistent (MODEL-1.5.md §2.3): for a 1.5 model they are always rebuilt, and checkpoint copies
are ignored. The family comes from config.json (`config_json.detect_family`) unless `family` overrides it.
safetensors only: no pickle, no remote code, local paths only.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from tqdm import tqdm
from transformers.models.qwen3_vl.modeling_qwen3_vl import (
    Qwen3VLTextRotaryEmbedding,
    Qwen3VLVisionRotaryEmbedding,
)

from alpamayo_ros.model.action_proj import PerWaypointActionInProjV2
from alpamayo_ros.model.action_space import UnicycleAccelCurvatureActionSpace
from alpamayo_ros.model.alpamayo import AlpamayoR1
from alpamayo_ros.model.config import AlpamayoConfig
from alpamayo_ros.model.config_json import write_config_json
from alpamayo_ros.model.tokenizer import load_tokenizer

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
TOKENIZER_SUBDIR = "tokenizer"
_MAX_LISTED = 20
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


class CheckpointError(RuntimeError):
    """A checkpoint directory is missing, incomplete, or does not match the model it should load into."""


def _shard_keys(path: Path) -> dict[Path, list[str]]:
    """Shard file -> its tensor names, from the index (or the single file); every listed file must exist."""
    index_path, single = path / INDEX_NAME, path / SINGLE_NAME
    if index_path.is_file():
        try:
            weight_map = json.loads(index_path.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"cannot read the weight map of {index_path}: {exc}") from exc
        shards: dict[Path, list[str]] = {}
        for key, name in weight_map.items():
            shards.setdefault(path / name, []).append(key)
    elif single.is_file():
        with safe_open(single, framework="pt") as handle:
            shards = {single: list(handle.keys())}
    else:
        raise CheckpointError(f"checkpoint {path} has neither {INDEX_NAME} nor {SINGLE_NAME}")
    missing_files = sorted(str(f.name) for f in shards if not f.is_file())
    if missing_files:
        raise CheckpointError(f"checkpoint {path} lists shard files that do not exist: {missing_files}")
    return shards


def _listed(title: str, items: list[str]) -> str:
    more = f", … {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"\n  {title} ({len(items)}): {', '.join(items[:_MAX_LISTED])}{more}"


def optional_keys(model: AlpamayoR1) -> set[str]:
    """Persistent buffers a checkpoint may omit (rebuilt from config): Fourier freqs, action-space stats."""
    return {f"action_in_proj.{n}" for n, _ in model.action_in_proj.named_buffers()} | {
        f"action_space.{n}" for n, _ in model.action_space.named_buffers()
    }


def check_keys(model: AlpamayoR1, shards: dict[Path, list[str]], path: Path) -> None:
    """Strict key and shape check of a checkpoint against the model's state dict.

    Raises:
        CheckpointError: naming `path` and listing missing keys, unexpected keys and shape mismatches.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found: dict[str, tuple[int, ...]] = {}
    for shard, keys in shards.items():
        with safe_open(shard, framework="pt") as handle:
            stored = set(handle.keys())
            absent = [k for k in keys if k not in stored]
            if absent:
                raise CheckpointError(
                    f"checkpoint {path}: {shard.name} lacks tensors its index lists: {absent[:_MAX_LISTED]}"
                )
            found.update({k: tuple(handle.get_slice(k).get_shape()) for k in keys})
    missing = sorted(set(expected) - set(found) - optional_keys(model))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(
        f"{k} {found[k]} vs model {expected[k]}"
        for k in set(found) & set(expected)
        if found[k] != expected[k]
    )
    if missing or unexpected or mismatched:
        sections = (
            ("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)
        )
        report = "".join(_listed(title, items) for title, items in sections if items)
        raise CheckpointError(f"checkpoint {path} does not match the model:{report}")


def rebuild_non_learned_buffers(model: AlpamayoR1) -> None:
    """Recreate from the config every buffer still on the meta device (not in the checkpoint), on CPU.

    RoPE frequency modules are rebuilt whole (float32, as transformers builds them); the Fourier frequencies
    and action-space statistics come from freshly built modules (bf16-valued, §8.3).
    """
    cfg = model.config
    visual = model.vlm.model.visual
    if visual.rotary_pos_emb.inv_freq.is_meta:
        head_dim = cfg.vision.hidden_size // cfg.vision.num_heads
        visual.rotary_pos_emb = Qwen3VLVisionRotaryEmbedding(head_dim // 2)  # as Qwen3VLVisionModel builds it
    for owner in (model.vlm.model.language_model, model.expert):
        if owner.rotary_emb.inv_freq.is_meta:
            owner.rotary_emb = Qwen3VLTextRotaryEmbedding(config=owner.config)
    donors = {
        "action_in_proj": lambda: PerWaypointActionInProjV2(cfg.action_in_proj, cfg.expert.hidden_size),
        "action_space": lambda: UnicycleAccelCurvatureActionSpace(cfg.action_space),
    }
    for name, build in donors.items():
        module = getattr(model, name)
        meta = [n for n, buffer in module.named_buffers() if buffer.is_meta]
        if meta:
            fresh = dict(build().named_buffers())
            for buffer_name in meta:
                parent, _, leaf = buffer_name.rpartition(".")
                module.get_submodule(parent).register_buffer(leaf, fresh[buffer_name])
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:
        raise CheckpointError(f"tensors left uninitialised after loading: {leftover[:_MAX_LISTED]}")


def _default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on CUDA (the reference regime, §8), float32 elsewhere."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def from_pretrained(
    path: str | Path,
    *,
    tokenizer_path: str | Path | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    attn_implementation: str = "sdpa",
    progress: bool = True,
    family: str | None = None,
) -> AlpamayoR1:
    """Load a checkpoint directory (config.json + model.safetensors[.index.json] + shards).

    Args:
        path: local checkpoint directory.
        tokenizer_path: base Qwen3-VL or extended tokenizer directory; default `<path>/tokenizer` if present.
        dtype: parameter dtype; default bf16 on CUDA, float32 otherwise. Buffers keep their own dtypes.
        device: target device.
        attn_implementation: VLM attention: "sdpa" (default, as the reference effectively runs), "eager", or
            "flash_attention_2" (needs flash_attn installed); the expert always uses SDPA.
        progress: show a tqdm bar over the shards.
        family: "r1" or "a15" to override the family config.json declares (None: as declared; a file that
            declares none is R1). It selects prompt style and features, not weights (MODEL-1.5.md §1.1).

    Returns:
        The model in eval mode on `device`.

    Raises:
        CheckpointError: missing path/tokenizer/shards, or a key/shape mismatch (strict).
        ConfigError: bad config.json. TokenizerError: tokenizer ids disagree with the config.
        ImportError: flash_attention_2 requested without flash_attn.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint directory {path} does not exist")
    if attn_implementation == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ImportError("attn_implementation='flash_attention_2' needs flash_attn, which is not installed")
    config = AlpamayoConfig.from_json(path / CONFIG_NAME, family)
    if tokenizer_path is None:
        if not (path / TOKENIZER_SUBDIR).is_dir():
            raise CheckpointError(
                f"checkpoint {path} has no {TOKENIZER_SUBDIR}/ directory; pass tokenizer_path"
            )
        tokenizer_path = path / TOKENIZER_SUBDIR
    tokenizer = load_tokenizer(tokenizer_path, config.tokens, config.family)
    device = torch.device(device)
    dtype = dtype or _default_dtype(device)
    shards = _shard_keys(path)
    with torch.device("meta"):
        model = AlpamayoR1(config, tokenizer, attn_implementation=attn_implementation)
    check_keys(model, shards, path)
    targets, buffers = model.state_dict(), optional_keys(model)
    ignored = buffers if config.family == "a15" else set()  # non-persistent in 1.5: rebuilt from config
    for shard, keys in tqdm(shards.items(), desc=f"loading {path.name}", unit="shard", disable=not progress):
        tensors: dict[str, Tensor] = {}
        with safe_open(shard, framework="pt", device=str(device)) as handle:
            for key in (k for k in keys if k not in ignored):
                tensor = handle.get_tensor(key)
                if tensor.is_floating_point():  # parameters -> dtype; buffers keep the model's buffer dtype
                    tensor = tensor.to(targets[key].dtype if key in buffers else dtype)
                if tensor.device.type == "cpu" and tensor.data_ptr() % 64:
                    # safetensors hands out views at arbitrary file offsets; unaligned weights make CPU
                    # matmuls ~10x slower (measured 1.36 vs 0.10 ms for the tiny lm_head), so copy them.
                    tensor = tensor.clone()
                tensors[key] = tensor
        model.load_state_dict(tensors, strict=False, assign=True)
    rebuild_non_learned_buffers(model)
    logger.info("loaded %s (%d shards) as %s on %s", path, len(shards), dtype, device)
    return model.to(device).eval()


def _parse_size(size: int | str) -> int:
    """Bytes from an int or a string like "5GB", "500MB", "64KiB" (decimal units as transformers)."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]I?B|B)?\s*", size.upper())
    if match is None:
        raise ValueError(f"max_shard_size must be bytes or like '5GB', got {size!r}")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2) or ""]


def save_pretrained(
    model: AlpamayoR1,
    path: str | Path,
    *,
    max_shard_size: int | str = "5GB",
    dtype: torch.dtype | None = None,
    include_buffers: bool | None = None,
    save_tokenizer: bool = True,
) -> None:
    """Write config.json, the safetensors shards + index (release layout and key names) and the tokenizer.

    One shard is written as model.safetensors; more as model-0000i-of-0000N.safetensors plus
    model.safetensors.index.json {"metadata": {"total_size"}, "weight_map"}, like transformers.

    Args:
        model: the model to save.
        path: output directory (created).
        max_shard_size: bytes per shard at most (a single tensor larger than this gets its own shard).
        dtype: cast floating parameters to this (e.g. bf16 as released); buffers are saved as they are.
        include_buffers: also save the 7 non-learned buffers (the loader accepts either); default: yes for R1,
            no for 1.5 (non-persistent there, MODEL-1.5.md §2.3).
        save_tokenizer: save the tokenizer to `<path>/tokenizer/`.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if include_buffers is None:
        include_buffers = model.config.family == "r1"
    write_config_json(model.config, path / CONFIG_NAME)
    params = {name for name, _ in model.named_parameters()}
    shards: list[dict[str, Tensor]] = [{}]
    shard_bytes, limit, total = 0, _parse_size(max_shard_size), 0
    for key, tensor in model.state_dict().items():
        if key not in params and not include_buffers:
            continue
        if dtype is not None and key in params and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and shard_bytes + size > limit:
            shards.append({})
            shard_bytes = 0
        shards[-1][key] = tensor.detach().contiguous().cpu()
        shard_bytes += size
        total += size
    names = [SINGLE_NAME] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))
    ]
    for name, tensors in zip(names, shards):
        save_file(tensors, path / name, metadata={"format": "pt"})
    if len(shards) > 1:
        weight_map = {key: name for name, tensors in zip(names, shards) for key in tensors}
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (path / INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    if save_tokenizer:
        model.tokenizer.save_pretrained(str(path / TOKENIZER_SUBDIR))
    logger.info("saved %s: %d shard(s), %d bytes", path, len(shards), total)
