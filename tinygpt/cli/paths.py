"""Where runs live: the project root (``$TINYGPT_ROOT`` moves it), and which checkpoint
generate.py uses when it is given none: the newest run's best.ckpt.

A run is a directory whose ``checkpoints/`` holds ``best.ckpt`` (lowest val loss) or ``last.ckpt``
(the latest step); the newest run is the one whose checkpoint was written last. Picking the newest
``*.ckpt`` file instead would take a short sweep's ``last.ckpt`` over a finished run's
``best.ckpt`` just because it was touched later.
"""

import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from tinygpt.cli.run_dir import read_summary
from tinygpt.errors import CheckpointError, ConfigError

# A checkout of the repository holds this package, conf/, train.py and generate.py side by side;
# outputs/ and data/ live in it by default, whatever the working directory.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "conf"
ROOT_ENV = "TINYGPT_ROOT"


def config_dir() -> Path:
    """conf/ of the checkout that holds this package: where train.py and generate.py compose
    their configs. A package installed on its own (``pip install .``) has none: training and
    generate.py run from a checkout, and this error says so."""
    if not (CONFIG_DIR / "train.yaml").is_file():
        raise ConfigError(
            f"no training configs at {CONFIG_DIR}: train.py, generate.py and report --run need "
            "a checkout of the TinyGPT repository (git clone, then pip install -e . in it); "
            "this tinygpt is installed without one (reports over finished runs and "
            "checkpoints work anywhere)"
        )
    return CONFIG_DIR


def root_dir() -> str:
    """``$TINYGPT_ROOT`` (made absolute) if set and not empty, else the project root."""
    override = os.environ.get(ROOT_ENV)
    return str(Path(override).expanduser().absolute()) if override else str(PROJECT_ROOT)


PREFERRED = ("best.ckpt", "last.ckpt")


def checkpoint_to_use(ckpt_path: str | None, root: str | Path) -> Path:
    """``ckpt_path``, or where it is None the newest run's under ``root``, named on stderr."""
    if ckpt_path is not None:
        return Path(str(ckpt_path))
    path = newest_run_checkpoint(root)
    print(describe_choice(path), file=sys.stderr, flush=True)
    return path


def newest_run_checkpoint(root: str | Path) -> Path:
    """The best.ckpt (else last.ckpt) of the run under ``root`` that wrote a checkpoint last."""
    root = Path(root)
    runs: dict[Path, list[Path]] = {}
    for name in PREFERRED:
        for path in sorted(root.glob(f"**/checkpoints/{name}")):
            if path.is_file():
                runs.setdefault(path.parent.parent, []).append(path)
    if not runs:
        raise CheckpointError(
            f"no ckpt_path given and no run under {root}/ has checkpoints/best.ckpt or "
            "last.ckpt; give one with ckpt_path=PATH"
        )
    newest = max(runs.values(), key=lambda paths: max(p.stat().st_mtime for p in paths))
    return newest[0]  # best.ckpt where there is one: PREFERRED's order


def describe_choice(path: Path) -> str:
    """One line for stderr: which checkpoint of the newest run, its step and val loss."""
    step, val_loss = recorded_progress(path)
    step_text = "step unknown" if step is None else f"step {step}"
    loss = "no val loss recorded" if val_loss is None else f"val loss {val_loss:.4f}"
    why = "" if path.name == PREFERRED[0] else f"no {PREFERRED[0]}; "
    return f"using the newest run's {path.name} ({why}{step_text}, {loss}): {path}"


def recorded_progress(path: Path) -> tuple[int | None, float | None]:
    """The step and val loss that Lightning stored in the checkpoint, else the run's summary.

    Only for the message: a checkpoint that cannot be read here gives ``None`` and is reported
    properly by the loader that follows.
    """
    best = path.name == PREFERRED[0]
    try:  # weights-only (runs no code); mmap reads the small entries without the weights
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # any unreadable file: the loader that follows names the problem
        checkpoint = {}
    checkpoint = checkpoint if isinstance(checkpoint, dict) else {}
    val_loss = None
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and state.get("monitor") == "val/loss":
            val_loss = _finite(state.get("best_model_score" if best else "current_score"))
    if val_loss is None:
        summary = read_summary(path.parent.parent)
        val_loss = _finite(summary.get("best_val_loss" if best else "final_val_loss"))
    step = checkpoint.get("global_step")
    return (step if isinstance(step, int) else None), val_loss


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return number if math.isfinite(number) else None
