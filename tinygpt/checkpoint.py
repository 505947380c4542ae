"""Reading TinyGPT checkpoints safely: weights, tokenizer and config, with no code executed.

A checkpoint is a Lightning checkpoint whose ``"tinygpt"`` entry holds the model config, the
tokenizer and the resolved run config as plain Python types, so it alone rebuilds the model.
"""

import pickle
import re
import zipfile
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from tinygpt.data.tokenizer import CharTokenizer
from tinygpt.errors import CheckpointError
from tinygpt.models import TinyGPT, TinyGPTConfig

CHECKPOINT_KEY = "tinygpt"
MODEL_PREFIX = "model."


def checkpoint_entry(
    config: TinyGPTConfig,
    tokenizer: CharTokenizer,
    run_config: dict[str, Any],
    data_fingerprint: str | None = None,
) -> dict[str, Any]:
    """What a training checkpoint stores under ``"tinygpt"`` besides Lightning's own state;
    ``data_fingerprint`` (:func:`tinygpt.data.download.sha256_of` the training text) lets a
    resume notice another text with the same vocabulary."""
    return {
        "model_config": asdict(config),
        "tokenizer": tokenizer.to_dict(),
        "config": run_config,
        "data_fingerprint": data_fingerprint,  # None: not known, nothing to compare on resume
    }


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: a pickle that would run code is refused.

    The file is memory-mapped (``mmap=True``): tensors read their bytes from it on use, so a
    large checkpoint is not first copied whole into RAM beside the model it is loaded into.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"checkpoint path is a directory, not a file: {path}")
    # torch.save writes a zip archive; anything else (text, a truncated file) is not ours.
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated, or not a PyTorch checkpoint)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f"{found.group(1)}, " if found else ""
        raise CheckpointError(
            f"refusing to load {path}: it holds objects that could run code ({what}"
            "outside the weights-only allowlist)"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt: {type(exc).__name__})"
        ) from None
    if not isinstance(checkpoint, dict) or CHECKPOINT_KEY not in checkpoint:
        raise CheckpointError(f"{path} is not a TinyGPT checkpoint (no '{CHECKPOINT_KEY}' entry)")
    return checkpoint


def run_config_of(path: str | Path) -> dict[str, Any]:
    """The resolved config of the run that saved the checkpoint (empty where it has none)."""
    return load_checkpoint(path)[CHECKPOINT_KEY].get("config") or {}


def load_model(path: str | Path, device: torch.device | str = "cpu") -> TinyGPT:
    """Rebuild the trained model, in eval mode, with its tokenizer attached as ``.tokenizer``."""
    checkpoint = load_checkpoint(path)
    entry = checkpoint[CHECKPOINT_KEY]
    known = {f.name for f in fields(TinyGPTConfig)}  # an older checkpoint's extra keys: ignored
    model = TinyGPT(TinyGPTConfig(**{k: v for k, v in entry["model_config"].items() if k in known}))
    state = {
        key.removeprefix(MODEL_PREFIX): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith(MODEL_PREFIX)
    }
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: weights do not fit the stored model config ({exc})"
        ) from None
    model.tokenizer = CharTokenizer.from_dict(entry["tokenizer"])
    return model.eval().to(device)
