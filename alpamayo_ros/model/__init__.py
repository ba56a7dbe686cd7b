"""Alpamayo-R1 / 1.5 network, ROS-free: config, tokens, prompt, expert, flow matching, action space, loading.

The public names below resolve lazily (PEP 562), so importing a light submodule such as
`alpamayo_ros.model.history` does not import transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AlpamayoR1": "alpamayo",
    "PlanOutput": "alpamayo",
    "AlpamayoConfig": "config",
    "PRESETS": "config",
    "ConfigError": "config_json",
    "CheckpointError": "loading",
    "from_pretrained": "loading",
    "save_pretrained": "loading",
    "TokenizerError": "tokens",
    "TokenLayout": "tokens",
    "build_extended_tokenizer": "tokenizer",
    "build_tiny_tokenizer": "tokenizer",
    "load_tokenizer": "tokenizer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
