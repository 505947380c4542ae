"""OmegaConf resolvers used by the YAML files in conf/; entry points register them first."""

from __future__ import annotations

import re

import torch
from omegaconf import OmegaConf


def auto_precision() -> str:
    """bf16-mixed on a GPU that supports it, full float32 elsewhere."""
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def safe_name(text: str) -> str:
    """A directory name from Hydra's override string: no path separators or odd characters."""
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", text)[:120] or "default"


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("auto_precision", auto_precision, replace=True)
    OmegaConf.register_new_resolver("safe_name", safe_name, replace=True)
