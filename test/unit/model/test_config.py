"""Configuration: presets, checkpoint config.json mapping, HF configs, full-size parameter counts and keys."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from alpamayo_ros.model.alpamayo import AlpamayoR1
from alpamayo_ros.model.config import CAMERA_NAMES, PRESETS, AlpamayoConfig, IOConfig, TextConfig
from alpamayo_ros.model.config_json import ConfigError, config_from_dict, config_to_dict

# The released config.json as far as MODEL.md §2.1 documents it, with hydra `_target_`s and unrelated keys.
RELEASE_CONFIG = {
    "architectures": ["AlpamayoR1"],
    "model_type": "alpamayo_r1",
    "dtype": "bfloat16",
    "add_special_tokens": True,
    "attn_implementation": "flash_attention_2",
    "expert_non_causal_attention": True,
    "keep_same_dtype": True,
    "expert_cfg": {"dtype": "bfloat16", "head_dim": 128, "hidden_size": 2048, "intermediate_size": 8256,
                   "num_attention_heads": 16},
    "action_in_proj_cfg": {
        "_target_": "alpamayo_r1.models.action_in_proj.PerWaypointActionInProjV2",
        "hidden_size": 512, "max_freq": 100.0, "num_enc_layers": 2, "num_fourier_feats": 20,
    },
    "action_out_proj_cfg": {"_target_": "torch.nn.Linear"},
    "diffusion_cfg": {"_target_": "alpamayo_r1.diffusion.flow_matching.FlowMatching", "int_method": "euler",
                      "x_dims": "???"},
    "action_space_cfg": {
        "_target_": "alpamayo_r1.action_space.UnicycleAccelCurvatureActionSpace",
        "accel_mean": 0.02902694707164455, "accel_std": 0.6810426736454882,
        "curvature_mean": 0.0002692167976330542, "curvature_std": 0.026148280660833106,
        "accel_bounds": [-9.8, 9.8], "curvature_bounds": [-0.33, 0.33], "dt": 0.1, "n_waypoints": 64,
    },
    "vlm_name_or_path": "Qwen/Qwen3-VL-8B-Instruct",
    "vlm_backend": "qwenvl3",
    "model_dtype": "bfloat16",
    "traj_vocab_size": 4000,
    "tokens_per_history_traj": 48,
    "tokens_per_future_traj": 128,
    "min_pixels": 163840,
    "max_pixels": 196608,
    "traj_tokenizer_cfg": {
        "_target_": "alpamayo_r1.action_space.discrete_action_space.DiscreteTrajectoryTokenizer",
        "_recursive_": False, "num_bins": 3000, "dims_min": [-10, -10], "dims_max": [10, 10],
    },
    "hist_traj_tokenizer_cfg": {"_target_": "alpamayo_r1.models.delta_tokenizer.DeltaTrajectoryTokenizer"},
    "vocab_size": 155697,
    "traj_token_start_idx": 151669,
    "transformers_version": "4.57.1",
}


def test_release_config_json_reads_as_the_default_config(tmp_path: Path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(RELEASE_CONFIG))
    assert AlpamayoConfig.from_json(path) == AlpamayoConfig() == PRESETS["alpamayo-r1-10b"]


@pytest.mark.parametrize("key", ["traj_vocab_size", "expert_cfg", "hist_traj_tokenizer_cfg"])
def test_missing_required_key_is_named(key: str):
    raw = {k: v for k, v in RELEASE_CONFIG.items() if k != key}
    with pytest.raises(ConfigError, match=f"my/config.json: missing required keys \\['{key}'\\]"):
        config_from_dict(raw, "my/config.json")


def test_inconsistent_or_unsupported_configs_are_rejected(tmp_path: Path):
    with pytest.raises(ConfigError, match="vocab_size 155698 disagrees"):
        config_from_dict({**RELEASE_CONFIG, "vocab_size": 155698})
    with pytest.raises(ConfigError, match="unknown vlm_name_or_path 'Qwen/Qwen3-VL-2B'"):
        config_from_dict({**RELEASE_CONFIG, "vlm_name_or_path": "Qwen/Qwen3-VL-2B"})
    with pytest.raises(ConfigError, match="invalid expert_cfg: ExpertConfig.hidden_size must be > 0, got 0"):
        config_from_dict({**RELEASE_CONFIG, "expert_cfg": {**RELEASE_CONFIG["expert_cfg"], "hidden_size": 0}})
    with pytest.raises(ConfigError, match="does not exist"):
        AlpamayoConfig.from_json(tmp_path / "missing.json")


def test_without_traj_tokenizer_history_ids_start_at_i0_like_upstream():
    raw = {k: v for k, v in RELEASE_CONFIG.items() if k != "traj_tokenizer_cfg"}
    assert config_from_dict(raw).tokens.hist_token_start_idx == 151669


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_config_json(name: str):
    config = PRESETS[name]
    assert config_from_dict(json.loads(json.dumps(config_to_dict(config)))) == config


def test_tiny_keeps_the_real_io_geometry():
    tiny = PRESETS["tiny"]
    assert tiny.io.camera_names == CAMERA_NAMES and tiny.io.frames_per_camera == 4
    assert (tiny.io.history_poses, tiny.io.tokens_per_history_traj) == (16, 48)
    assert (tiny.n_waypoints, tiny.flow.num_steps, tiny.history.num_bins) == (64, 10, 1000)
    micro = PRESETS["micro"]
    assert (micro.io.num_images, micro.io.tokens_per_history_traj) == (4, 12)
    assert (micro.n_waypoints, micro.flow.num_steps) == (8, 3)


def test_validation_names_field_and_value():
    expected = r"TextConfig.mrope_section must be 3 values summing to head_dim/2=64, got \(24, 20, 21\)"
    with pytest.raises(ValueError, match=expected):
        TextConfig(mrope_section=(24, 20, 21))
    with pytest.raises(ValueError, match="IOConfig.history_poses must be >= 4, got 3"):
        IOConfig(history_poses=3)
    with pytest.raises(ValueError, match="expert.head_dim must equal text.head_dim=128, got 64"):
        replace(AlpamayoConfig(), expert=replace(AlpamayoConfig().expert, head_dim=64))


def test_vlm_and_expert_configs():
    config = AlpamayoConfig()
    vlm = config.vlm_config("eager")
    text = vlm.text_config
    assert (text.vocab_size, text.hidden_size, text.num_hidden_layers) == (155697, 4096, 36)
    assert text.num_key_value_heads == 8
    assert text.rope_theta == 5e6 and text.rope_scaling["mrope_section"] == [24, 20, 20]
    assert text.rope_scaling["mrope_interleaved"] is True and vlm.tie_word_embeddings is False
    assert (vlm.image_token_id, vlm.video_token_id, vlm.vision_start_token_id) == (151655, 151656, 151652)
    assert vlm.vision_config.deepstack_visual_indexes == [8, 16, 24] and text._attn_implementation == "eager"
    expert = config.expert_config(text)
    assert (expert.hidden_size, expert.intermediate_size) == (2048, 8256)
    assert (expert.num_attention_heads, expert.head_dim) == (16, 128)
    assert (expert.num_hidden_layers, expert.num_key_value_heads, expert.rope_theta) == (36, 8, 5e6)
    assert expert._attn_implementation == "sdpa"
    assert text.hidden_size == 4096  # a copy: the VLM's text config is untouched


@pytest.fixture(scope="module")
def full_model(real_layout_tokenizer) -> AlpamayoR1:
    with torch.device("meta"):
        return AlpamayoR1(AlpamayoConfig(), real_layout_tokenizer)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_parameter_counts(full_model: AlpamayoR1):
    assert _count(full_model.vlm.model.visual) == 576_388_336
    assert _count(full_model.vlm) == 8_797_933_808
    assert _count(full_model.expert) == 2_279_238_656
    assert _count(full_model.action_in_proj) == 1_349_632
    assert _count(full_model.action_out_proj) == 4_098
    assert _count(full_model) == 11_078_526_194


def test_full_size_checkpoint_keys(full_model: AlpamayoR1):
    state = {k: tuple(v.shape) for k, v in full_model.state_dict().items()}

    def under(prefix: str) -> list[str]:
        return [k for k in state if k.startswith(prefix)]

    assert len(under("vlm.model.visual.blocks.")) == 27 * 12
    assert len(under("vlm.model.visual.deepstack_merger_list.")) == 3 * 6
    assert len(under("vlm.model.language_model.layers.")) == 36 * 11
    assert len(under("expert.layers.")) == 36 * 11
    assert not under("expert.embed_tokens") and not [k for k in state if "rotary" in k]
    assert sorted(k.removeprefix("action_in_proj.") for k in under("action_in_proj.")) == sorted(
        ["encoder.trunk.0.weight", "encoder.trunk.0.bias", "encoder.trunk.2.weight", "encoder.trunk.3.weight",
         "encoder.trunk.3.bias", "encoder.trunk.5.weight", "encoder.trunk.6.weight", "encoder.trunk.6.bias",
         "norm.weight", "norm.bias", "sinus.0.freqs", "sinus.1.freqs", "timestep_fourier_encoder.freqs"])
    stats = ("accel_mean", "accel_std", "curvature_mean", "curvature_std")
    assert under("action_space.") == [f"action_space.{n}" for n in stats]
    assert len(state) == (2 + 1 + 27 * 12 + 6 + 18) + (1 + 36 * 11 + 1) + 1 + (36 * 11 + 1) + 13 + 2 + 4
    expected_shapes = {
        "vlm.model.visual.patch_embed.proj.weight": (1152, 3, 2, 16, 16),
        "vlm.model.visual.pos_embed.weight": (2304, 1152),
        "vlm.model.visual.blocks.26.attn.qkv.weight": (3456, 1152),
        "vlm.model.visual.blocks.0.mlp.linear_fc1.weight": (4304, 1152),
        "vlm.model.visual.merger.linear_fc1.weight": (4608, 4608),
        "vlm.model.visual.deepstack_merger_list.2.linear_fc2.weight": (4096, 4608),
        "vlm.model.visual.deepstack_merger_list.0.norm.weight": (4608,),
        "vlm.model.language_model.embed_tokens.weight": (155697, 4096),
        "vlm.model.language_model.layers.35.self_attn.k_proj.weight": (1024, 4096),
        "vlm.model.language_model.layers.0.self_attn.q_norm.weight": (128,),
        "vlm.model.language_model.layers.0.mlp.down_proj.weight": (4096, 12288),
        "vlm.lm_head.weight": (155697, 4096),
        "expert.layers.0.self_attn.q_proj.weight": (2048, 2048),
        "expert.layers.35.self_attn.v_proj.weight": (1024, 2048),
        "expert.layers.7.mlp.gate_proj.weight": (8256, 2048),
        "expert.norm.weight": (2048,),
        "action_in_proj.encoder.trunk.0.weight": (512, 60),
        "action_in_proj.encoder.trunk.6.weight": (2048, 512),
        "action_in_proj.sinus.0.freqs": (1, 10),
        "action_out_proj.weight": (2, 2048),
        "action_space.accel_std": (),
    }
    assert {k: state[k] for k in expected_shapes} == expected_shapes
    assert "vlm.model.language_model.layers.0.self_attn.q_proj.bias" not in state
