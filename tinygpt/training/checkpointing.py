"""Lightning checkpoint I/O that never leaves a truncated file and never unpickles code."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from tinygpt.checkpoint import load_checkpoint


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic saves (temporary file, fsync, rename) and weights-only loads.

    A crash at any moment leaves either the previous checkpoint or the new one at ``path``,
    because ``os.replace`` swaps whole files; resuming goes through the same allowlisted loader
    as generation, so a crafted checkpoint cannot run code.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, path)
        finally:
            Path(tmp_name).unlink(missing_ok=True)

    def load_checkpoint(
        self, path: str | Path, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint(path)
