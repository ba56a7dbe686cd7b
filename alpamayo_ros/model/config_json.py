"""Read and write the checkpoint's config.json as an `AlpamayoConfig`.

The released config.json (MODEL.md §2.1) holds upstream's fields: hydra-style `*_cfg` dicts with `_target_`
keys, `traj_vocab_size`, `tokens_per_history_traj`, pixel limits, `expert_cfg`, … but not the VLM shape, which
upstream takes from `vlm_name_or_path` (Qwen3-VL-8B). Fields upstream has no key for (the VLM shape of
non-Qwen3-VL-8B models, base token ids, camera names, sampling, our dtype switches) are written under one
extra key, `"alpamayo_ros"`; a file without it reads as the real checkpoint. Unknown keys are ignored.

The model family (Alpamayo-R1 or 1.5) is read from upstream's own metadata, by MODEL-1.5.md §1.1's rule:
`model_type`, else `architectures[0]`, else the `_target_` prefixes; writing mirrors NVIDIA's converter.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, TypeVar

from alpamayo_ros.model.action_proj import ActionInProjConfig
from alpamayo_ros.model.action_space import ActionSpaceConfig
from alpamayo_ros.model.config import (
    AlpamayoConfig,
    ExpertConfig,
    IOConfig,
    ProcessorConfig,
    SamplingConfig,
    TextConfig,
    VisionConfig,
)
from alpamayo_ros.model.flow_matching import FlowMatchingConfig
from alpamayo_ros.model.history import HistoryTokenizerConfig
from alpamayo_ros.model.tokens import TokenLayout

logger = logging.getLogger(__name__)

EXTENSION_KEY = "alpamayo_ros"
# Upstream metadata per family (MODEL-1.5.md §1.1, NVIDIA `convert_checkpoint.py`).
MODEL_TYPES = {"r1": "alpamayo_r1", "a15": "alpamayo1_5"}
ARCHITECTURES = {"r1": "AlpamayoR1", "a15": "Alpamayo1_5"}
TARGET_PACKAGES = {"r1": "alpamayo_r1.", "a15": "alpamayo1_5."}
# model_type and architecture of RL-training-format directories (`convert_release_config_to_training.py`):
# the same for both families.
AMBIGUOUS_NAMES = frozenset({"alpamayo_reasoning_vla", "ReasoningVLA"})
# Keys whose upstream code defaults are known to differ from the checkpoint: never fall back silently.
REQUIRED_KEYS = (
    "traj_vocab_size",
    "expert_cfg",
    "action_in_proj_cfg",
    "action_space_cfg",
    "diffusion_cfg",
    "hist_traj_tokenizer_cfg",
)
# Backbones of the MODEL.md §2.2 shape (upstream's RL tooling swaps in Cosmos-Reason2-8B, same shape).
KNOWN_VLMS = ("Qwen/Qwen3-VL-8B-Instruct", "nvidia/Cosmos-Reason2-8B")
_OURS_ONLY = {"stats_dtype", "max_cholesky_retries", "norm_eps", "freqs_dtype"}  # no upstream key for these
_TARGETS = {
    "action_in_proj_cfg": "alpamayo_r1.models.action_in_proj.PerWaypointActionInProjV2",
    "action_out_proj_cfg": "torch.nn.Linear",
    "diffusion_cfg": "alpamayo_r1.diffusion.flow_matching.FlowMatching",
    "action_space_cfg": "alpamayo_r1.action_space.UnicycleAccelCurvatureActionSpace",
    "traj_tokenizer_cfg": "alpamayo_r1.action_space.discrete_action_space.DiscreteTrajectoryTokenizer",
    "hist_traj_tokenizer_cfg": "alpamayo_r1.models.delta_tokenizer.DeltaTrajectoryTokenizer",
}
_T = TypeVar("_T")


class ConfigError(ValueError):
    """A config.json is missing, unreadable, lacks a required key, or describes an unsupported model."""


class AmbiguousFamilyError(ConfigError):
    """A config.json that does not tell Alpamayo-R1 from 1.5 (RL training format); pass `family`."""


def _build(cls: type[_T], data: dict[str, Any], source: str, section: str) -> _T:
    """Instantiate a config dataclass from a dict: unknown and `_hydra_` keys ignored, lists made tuples."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(k for k in data if k not in names and not k.startswith("_"))
    if unknown:
        logger.debug("%s: ignoring keys %s of %s", source, unknown, section)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: invalid {section}: {exc}") from exc


def _section(raw: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    """A dict-valued key (absent or null -> {}); anything else is a ConfigError."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key} must be an object, got {type(value).__name__}")
    return value


def _targets(value: Any) -> list[str]:
    """Every `_target_` string in a nested config (depth first)."""
    if isinstance(value, dict):
        found = [value["_target_"]] if isinstance(value.get("_target_"), str) else []
        return found + [t for v in value.values() for t in _targets(v)]
    if isinstance(value, list):
        return [t for v in value for t in _targets(v)]
    return []


def detect_family(raw: dict[str, Any]) -> str | None:
    """The family a config.json declares: "r1", "a15", or None when it does not say (MODEL-1.5.md §1.1).

    Rule: `model_type`, else `architectures[0]`, else the first `_target_` with an `alpamayo_r1.` or
    `alpamayo1_5.` prefix (`torch.nn.Linear` is kept by the converter). A file with none of them is None.

    Raises:
        AmbiguousFamilyError: an RL-training-format file (the same for both families).
        ConfigError: an unknown model_type or architecture.
    """
    architectures = raw.get("architectures") or [None]
    for key, value, known in (
        ("model_type", raw.get("model_type"), MODEL_TYPES),
        ("architectures[0]", architectures[0], ARCHITECTURES),
    ):
        if value is None:
            continue
        if value in AMBIGUOUS_NAMES:
            raise AmbiguousFamilyError(
                f"{key} {value!r} (RL training format) is the same for Alpamayo-R1 and 1.5; "
                f"pass family='r1' or 'a15'"
            )
        by_name = {name: family for family, name in known.items()}
        if value not in by_name:
            raise ConfigError(f"{key} must be one of {sorted(by_name)}, got {value!r}")
        return by_name[value]
    for target in _targets(raw):
        for family, package in TARGET_PACKAGES.items():
            if target.startswith(package):
                return family
    return None


def config_from_dict(
    raw: dict[str, Any], source: str = "<dict>", family: str | None = None
) -> AlpamayoConfig:
    """Map a parsed config.json onto `AlpamayoConfig`.

    Args:
        raw: the parsed JSON object.
        source: where it came from (a path), named in errors.
        family: "r1" or "a15" to override what the file declares (`detect_family`); None: detect, and a
            file that does not say reads as R1.

    Raises:
        ConfigError: a required key is missing, a value is invalid, or the model is not supported.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a JSON object, got {type(raw).__name__}")
    if family is not None and family not in MODEL_TYPES:
        raise ConfigError(f"{source}: family must be one of {sorted(MODEL_TYPES)}, got {family!r}")
    try:
        declared = detect_family(raw)
    except AmbiguousFamilyError as exc:
        if family is None:
            raise AmbiguousFamilyError(f"{source}: {exc}") from exc
        declared = family
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    if family is not None and family != declared:
        logger.info("%s declares family %s; overridden to %s", source, declared, family)
    family = family or declared or "r1"
    missing = [key for key in REQUIRED_KEYS if raw.get(key) is None]
    if missing:
        raise ConfigError(f"{source}: missing required keys {missing}")
    if raw.get("add_special_tokens", True) is not True:
        raise ConfigError(f"{source}: add_special_tokens must be true (the only vocabulary layout supported)")
    ext = _section(raw, EXTENSION_KEY, source)
    vlm_name = raw.get("vlm_name_or_path", KNOWN_VLMS[0])
    if "vision" in ext and "text" in ext:
        vision = _build(VisionConfig, ext["vision"], source, f"{EXTENSION_KEY}.vision")
        text = _build(TextConfig, ext["text"], source, f"{EXTENSION_KEY}.text")
    elif vlm_name in KNOWN_VLMS:
        vision, text = VisionConfig(), TextConfig()
    else:
        raise ConfigError(
            f"{source}: unknown vlm_name_or_path {vlm_name!r} and no {EXTENSION_KEY}.vision/.text shape"
        )

    hist = _section(raw, "hist_traj_tokenizer_cfg", source)
    if hist.get("predict_yaw", False):
        raise ConfigError(f"{source}: hist_traj_tokenizer_cfg.predict_yaw=true is not supported")
    renamed = {"xyz_min": "ego_xyz_min", "xyz_max": "ego_xyz_max", "num_bins": "num_bins"}
    history_fields = {ours: hist[theirs] for ours, theirs in renamed.items() if hist.get(theirs) is not None}
    history = _build(HistoryTokenizerConfig, history_fields, source, "hist_traj_tokenizer_cfg")
    traj = _section(raw, "traj_tokenizer_cfg", source)
    if traj and "num_bins" not in traj:
        raise ConfigError(f"{source}: traj_tokenizer_cfg has no num_bins")
    if not traj:  # upstream then starts the history ids at <i0> (`_initialize_trajectory_tokenizers`)
        logger.warning("%s: no traj_tokenizer_cfg, so history ids start at <i0> as upstream does", source)
    token_fields = {
        **ext.get("tokens", {}),
        "traj_vocab_size": raw["traj_vocab_size"],
        "future_bins": traj.get("num_bins", 0),
    }
    if "traj_token_start_idx" in raw:
        token_fields["base_vocab_size"] = raw["traj_token_start_idx"]
    tokens = _build(TokenLayout, token_fields, source, "token layout")
    if raw.get("vocab_size", tokens.vocab_size) != tokens.vocab_size:
        raise ConfigError(
            f"{source}: vocab_size {raw['vocab_size']} disagrees with the computed layout "
            f"({tokens.vocab_size})"
        )
    history_tokens = raw.get("tokens_per_history_traj", 48)  # the prompt helper hard-codes 48
    if not isinstance(history_tokens, int) or history_tokens % 3:
        raise ConfigError(
            f"{source}: tokens_per_history_traj must be a multiple of 3, got {history_tokens!r}"
        )

    diffusion = _section(raw, "diffusion_cfg", source)
    flow = {
        "num_steps": diffusion.get("num_inference_steps", 10),  # not in the release file: code default 10
        "int_method": diffusion.get("int_method", "euler"),
    }
    processor = {k: raw[k] for k in ("min_pixels", "max_pixels") if raw.get(k) is not None}
    sections = {
        "vision": vision,
        "text": text,
        "tokens": tokens,
        "history": history,
        "expert": _build(ExpertConfig, _section(raw, "expert_cfg", source), source, "expert_cfg"),
        "action_in_proj": _build(
            ActionInProjConfig,
            {**_section(raw, "action_in_proj_cfg", source), **ext.get("action_in_proj", {})},
            source,
            "action_in_proj_cfg",
        ),
        "action_space": _build(
            ActionSpaceConfig, {**_section(raw, "action_space_cfg", source), **ext.get("action_space", {})},
            source, "action_space_cfg",
        ),
        "flow": _build(FlowMatchingConfig, flow, source, "diffusion_cfg"),
        "processor": _build(ProcessorConfig, processor, source, "min_pixels/max_pixels"),
        "io": _build(
            IOConfig,
            {**ext.get("io", {}), "history_poses": history_tokens // 3},
            source,
            "tokens_per_history_traj",
        ),
        "sampling": _build(SamplingConfig, ext.get("sampling", {}), source, f"{EXTENSION_KEY}.sampling"),
    }
    scalars = {k: raw[k] for k in ("expert_non_causal_attention", "tokens_per_future_traj") if k in raw}
    try:
        return AlpamayoConfig(**sections, **scalars, vlm_name_or_path=vlm_name, family=family)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: inconsistent configuration: {exc}") from exc


def read_config_json(path: str | Path, family: str | None = None) -> AlpamayoConfig:
    """Read a config.json file (see `config_from_dict`; `family` overrides the declared family).

    Raises:
        ConfigError: the file does not exist, is not valid JSON, or fails `config_from_dict`.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return config_from_dict(raw, str(path), family)


def _upstream_fields(obj: object) -> dict[str, Any]:
    """asdict without our own fields, tuples as lists."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(obj).items() if k not in _OURS_ONLY}


def _family_target(target: str, family: str) -> str:
    """Upstream `_target_` of `family`: the converter swaps the `alpamayo_r1.` package prefix."""
    r1_package = TARGET_PACKAGES["r1"]
    if target.startswith(r1_package):
        return TARGET_PACKAGES[family] + target.removeprefix(r1_package)
    return target


def config_to_dict(config: AlpamayoConfig) -> dict[str, Any]:
    """The config.json object of `config`: upstream's keys and layout plus our `"alpamayo_ros"` extension.

    The family is written as upstream metadata (model_type, architectures, `_target_` prefixes).
    """
    targets = {key: _family_target(target, config.family) for key, target in _TARGETS.items()}
    tokens, specials = config.tokens, config.tokens.special_token_ids()
    traj_token_ids = {k: getattr(specials, f"traj_{k}") for k in
                      ("history", "future", "history_start", "future_start", "history_end", "future_end")}
    hist = config.history
    ext = {
        "vision": asdict(config.vision),
        "text": asdict(config.text),
        "tokens": {f.name: getattr(tokens, f.name) for f in fields(tokens) if f.name.endswith("_id")},
        "io": {
            "camera_names": list(config.io.camera_names),
            "frames_per_camera": config.io.frames_per_camera,
        },
        "sampling": asdict(config.sampling),
        "action_space": {k: v for k, v in asdict(config.action_space).items() if k in _OURS_ONLY},
        "action_in_proj": {k: v for k, v in asdict(config.action_in_proj).items() if k in _OURS_ONLY},
    }
    return {
        "architectures": [ARCHITECTURES[config.family]],
        "model_type": MODEL_TYPES[config.family],
        "dtype": "bfloat16",
        "vlm_name_or_path": config.vlm_name_or_path,
        "vlm_backend": "qwenvl3",
        "model_dtype": "bfloat16",
        "add_special_tokens": True,
        "traj_vocab_size": tokens.traj_vocab_size,
        "tokens_per_history_traj": config.io.tokens_per_history_traj,
        "tokens_per_future_traj": config.tokens_per_future_traj,
        "min_pixels": config.processor.min_pixels,
        "max_pixels": config.processor.max_pixels,
        "expert_cfg": asdict(config.expert),
        "expert_non_causal_attention": config.expert_non_causal_attention,
        "keep_same_dtype": True,
        "action_in_proj_cfg": {
            "_target_": targets["action_in_proj_cfg"],
            **_upstream_fields(config.action_in_proj),
        },
        "action_out_proj_cfg": {"_target_": targets["action_out_proj_cfg"]},
        "diffusion_cfg": {
            "_target_": targets["diffusion_cfg"],
            "int_method": config.flow.int_method,
            "num_inference_steps": config.flow.num_steps,
        },
        "action_space_cfg": {
            "_target_": targets["action_space_cfg"],
            **_upstream_fields(config.action_space),
        },
        "traj_tokenizer_cfg": (
            {"_target_": targets["traj_tokenizer_cfg"], "num_bins": tokens.future_bins}
            if tokens.future_bins
            else None
        ),
        "hist_traj_tokenizer_cfg": {
            "_target_": targets["hist_traj_tokenizer_cfg"],
            "ego_xyz_min": list(hist.xyz_min),
            "ego_xyz_max": list(hist.xyz_max),
            "num_bins": hist.num_bins,
            "predict_yaw": False,
        },
        "vocab_size": tokens.vocab_size,
        "traj_token_start_idx": tokens.traj_token_start_idx,
        "traj_token_ids": traj_token_ids,
        EXTENSION_KEY: ext,
    }


def write_config_json(config: AlpamayoConfig, path: str | Path) -> None:
    """Write `config_to_dict(config)` to `path` (indented, sorted as upstream's HF configs are)."""
    Path(path).write_text(json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n")
