"""Checkpoint save/load: release key names and index layout, strict key checks, buffer rebuilding, dtypes."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from alpamayo_ros.model.loading import INDEX_NAME, CheckpointError, from_pretrained, save_pretrained
from alpamayo_ros.model.tokens import TokenizerError

BUFFERS = {
    "action_in_proj.sinus.0.freqs", "action_in_proj.sinus.1.freqs",
    "action_in_proj.timestep_fourier_encoder.freqs", "action_space.accel_mean", "action_space.accel_std",
    "action_space.curvature_mean", "action_space.curvature_std",
}


@pytest.fixture(scope="module")
def sharded(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny_ckpt")
    save_pretrained(tiny_model, path, max_shard_size="400KB")
    return path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _index(path: Path) -> dict:
    return json.loads((path / INDEX_NAME).read_text())


def test_sharded_layout_and_key_names(sharded: Path, tiny_model):
    index = _index(sharded)
    shards = sorted(p.name for p in sharded.glob("*.safetensors"))
    pattern = rf"model-\d{{5}}-of-{len(shards):05d}\.safetensors"
    assert len(shards) >= 3 and all(re.fullmatch(pattern, s) for s in shards)
    assert set(index) == {"metadata", "weight_map"} and set(index["weight_map"].values()) == set(shards)
    state = tiny_model.state_dict()
    assert set(index["weight_map"]) == set(state) and BUFFERS <= set(index["weight_map"])
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in state.values())
    for name in shards:
        with safe_open(sharded / name, framework="pt") as handle:
            assert {k for k, v in index["weight_map"].items() if v == name} == set(handle.keys())
    assert (sharded / "config.json").is_file() and (sharded / "tokenizer" / "tokenizer.json").is_file()


def test_round_trip_gives_identical_outputs(sharded: Path, tiny_model, make_inputs):
    loaded = from_pretrained(sharded, progress=False)
    assert loaded.config == tiny_model.config and not loaded.training
    theirs = {**dict(loaded.named_parameters()), **dict(loaded.named_buffers())}
    for name, ours in [*tiny_model.named_parameters(), *tiny_model.named_buffers()]:
        assert ours.dtype == theirs[name].dtype and torch.equal(ours, theirs[name]), name
    images, hist_xyz, hist_rot = make_inputs(2)
    ours, theirs = (m.plan(images, hist_xyz, hist_rot, num_samples=2, seed=5) for m in (tiny_model, loaded))
    assert torch.equal(ours.token_ids, theirs.token_ids) and torch.equal(ours.xyz, theirs.xyz)
    assert ours.coc == theirs.coc


def test_absent_non_learned_buffers_are_rebuilt_from_the_config(tiny_model, tmp_path: Path):
    save_pretrained(tiny_model, tmp_path, max_shard_size="400KB", include_buffers=False)
    assert not BUFFERS & set(_index(tmp_path)["weight_map"])
    loaded = from_pretrained(tmp_path, progress=False)
    for name, buffer in tiny_model.named_buffers():  # RoPE inv_freq included
        rebuilt = loaded.get_buffer(name)
        assert rebuilt.dtype == buffer.dtype and torch.equal(rebuilt, buffer), name
    assert loaded.action_in_proj.sinus[0].freqs.tolist() == [[1.0, 100.0]]


def _drop_key(path: Path, key: str) -> None:
    index = _index(path)
    shard = path / index["weight_map"].pop(key)
    tensors = load_file(shard)
    del tensors[key]
    save_file(tensors, shard)
    (path / INDEX_NAME).write_text(json.dumps(index))


def _add_key(path: Path, key: str, tensor: torch.Tensor) -> None:
    index = _index(path)
    name = next(iter(index["weight_map"].values()))
    tensors = load_file(path / name)
    tensors[key] = tensor
    save_file(tensors, path / name)
    index["weight_map"][key] = name
    (path / INDEX_NAME).write_text(json.dumps(index))


def test_missing_key_is_named_with_the_path(sharded: Path, tmp_path: Path):
    path = _copy(sharded, tmp_path / "ckpt")
    _drop_key(path, "expert.layers.1.mlp.up_proj.weight")
    with pytest.raises(CheckpointError) as err:
        from_pretrained(path, progress=False)
    message = str(err.value)
    assert str(path) in message and "missing keys (1): expert.layers.1.mlp.up_proj.weight" in message


def test_optional_buffer_may_be_missing_but_a_weight_may_not(sharded: Path, tmp_path: Path):
    path = _copy(sharded, tmp_path / "ckpt")
    _drop_key(path, "action_space.accel_std")
    loaded = from_pretrained(path, progress=False)
    assert loaded.action_space.accel_std.item() == 0.6796875  # bf16 of 0.68104 (§8.3)


def test_unexpected_key_and_shape_mismatch_are_named(sharded: Path, tmp_path: Path):
    path = _copy(sharded, tmp_path / "ckpt")
    _add_key(path, "expert.embed_tokens.weight", torch.zeros(4, 48))
    _add_key(path, "vlm.lm_head.weight", torch.zeros(3, 64))  # overwrites the real one with a wrong shape
    with pytest.raises(CheckpointError) as err:
        from_pretrained(path, progress=False)
    message = str(err.value)
    assert str(path) in message
    assert "unexpected keys (1): expert.embed_tokens.weight" in message
    assert "shape mismatches (1): vlm.lm_head.weight (3, 64) vs model (1828, 64)" in message


def test_missing_paths_and_files_are_clear_errors(sharded: Path, tmp_path: Path):
    with pytest.raises(CheckpointError, match="checkpoint directory .*nowhere does not exist"):
        from_pretrained(tmp_path / "nowhere")
    path = _copy(sharded, tmp_path / "no_shard")
    (path / "model-00002-of-{:05d}.safetensors".format(len(list(path.glob("model-*"))))).unlink()
    with pytest.raises(CheckpointError, match="shard files that do not exist: \\['model-00002-of-"):
        from_pretrained(path, progress=False)
    path = _copy(sharded, tmp_path / "no_tokenizer")
    shutil.rmtree(path / "tokenizer")
    with pytest.raises(CheckpointError, match="no tokenizer/ directory; pass tokenizer_path"):
        from_pretrained(path, progress=False)
    with pytest.raises(TokenizerError, match="does not exist"):
        from_pretrained(path, tokenizer_path=tmp_path / "none", progress=False)


def test_single_file_bf16_checkpoint(tiny_model, tmp_path: Path):
    save_pretrained(tiny_model, tmp_path, dtype=torch.bfloat16)
    assert (tmp_path / "model.safetensors").is_file() and not (tmp_path / INDEX_NAME).exists()
    with safe_open(tmp_path / "model.safetensors", framework="pt") as handle:
        assert handle.get_tensor("vlm.lm_head.weight").dtype == torch.bfloat16
    as_float = from_pretrained(tmp_path, progress=False)
    assert as_float.dtype == torch.float32  # CPU default
    as_bf16 = from_pretrained(tmp_path, dtype=torch.bfloat16, progress=False)
    assert {p.dtype for p in as_bf16.parameters()} == {torch.bfloat16}
    assert as_bf16.vlm.model.language_model.rotary_emb.inv_freq.dtype == torch.float32
    assert as_bf16.action_in_proj.sinus[0].freqs.dtype == torch.bfloat16
    torch.testing.assert_close(as_float.vlm.lm_head.weight, tiny_model.vlm.lm_head.weight.bfloat16().float())


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash_attn is installed here")
def test_flash_attention_needs_the_package(sharded: Path):
    with pytest.raises(ImportError, match="flash_attn"):
        from_pretrained(sharded, attn_implementation="flash_attention_2", progress=False)


def test_loaded_cpu_weights_are_64_byte_aligned(sharded: Path):
    """safetensors views sit at arbitrary file offsets; unaligned weights slow CPU matmuls ~10x."""
    model = from_pretrained(sharded, progress=False)
    misaligned = [name for name, p in model.named_parameters() if p.data_ptr() % 64]
    assert not misaligned, misaligned[:5]
