"""Sample text from a trained TinyGPT checkpoint, streaming it to the terminal.

    python generate.py ckpt_path=outputs/.../last.ckpt prompt="To be" max_new_tokens=200 \
        decoder=nucleus decoder.top_p=0.9 seed=1
    python generate.py -m decoder=temperature decoder.temperature=0.5,1.0,1.5

Decoders (conf/decoder/): greedy, temperature, top_k, nucleus, combined, min_p. Without
``ckpt_path`` the newest ``*.ckpt`` under ``outputs/`` is used. Each run writes samples.txt and
samples.json (samples, resolved config, speed) into its Hydra run directory; a multirun also
writes summary.json and summary.md into the sweep directory.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from tinygpt.checkpoint import load_model
from tinygpt.cli import run_hydra_app, user_errors
from tinygpt.compiled_step import can_compile, package_dir
from tinygpt.config import register_resolvers
from tinygpt.decoding import MAX_NEW_TOKENS_LIMIT, SamplingParams, check_int
from tinygpt.errors import CheckpointError, ConfigError
from tinygpt.generation import MAX_NUM_SAMPLES, stream_generate
from tinygpt.generation_dashboard import log_generation_run

register_resolvers()


def newest_checkpoint(root: Path) -> Path:
    """The most recently modified ``*.ckpt`` under ``root``."""
    candidates = [path for path in root.rglob("*.ckpt") if path.is_file()] if root.is_dir() else []
    if not candidates:
        raise CheckpointError(f"no ckpt_path given and no *.ckpt file under {root}/")
    return max(candidates, key=lambda path: path.stat().st_mtime)


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {name!r} is not a torch device ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return device


def sampling_params(decoder: DictConfig) -> SamplingParams:
    values = OmegaConf.to_container(decoder, resolve=True)
    values.pop("name", None)
    unknown = sorted(set(values) - {f.name for f in fields(SamplingParams)})
    if unknown:
        raise ConfigError(f"unknown decoder parameter(s): {', '.join(unknown)}")
    return SamplingParams(**values)


def stream_to_terminal(
    model: torch.nn.Module, cfg: DictConfig, params: SamplingParams
) -> list[str]:
    """Print sample 1 as it is generated, then the others; return every sample's text."""
    steps = stream_generate(
        model,
        cfg.prompt,
        cfg.max_new_tokens,
        **asdict(params),
        seed=cfg.seed,
        num_samples=cfg.num_samples,
        use_cache=cfg.use_cache,
        compile=cfg.compile,
    )
    pieces: list[list[str]] = [[cfg.prompt] for _ in range(cfg.num_samples)]
    many = cfg.num_samples > 1
    print(f"--- sample 1/{cfg.num_samples} ---\n" if many else "", end=cfg.prompt, flush=True)
    for step in steps:
        print(step[0], end="", flush=True)
        for sample, piece in zip(pieces, step, strict=True):
            sample.append(piece)
    texts = ["".join(sample) for sample in pieces]
    for i, text in enumerate(texts[1:], start=2):
        print(f"\n--- sample {i}/{cfg.num_samples} ---\n{text}", end="")
    print(flush=True)
    return texts


def run(cfg: DictConfig) -> None:
    # Validate everything cheap before loading the checkpoint.
    if not isinstance(cfg.prompt, str):
        raise ConfigError(
            f"prompt must be text, got {type(cfg.prompt).__name__} {cfg.prompt!r}: "
            "quote it for Hydra, e.g. prompt=\"'42'\""
        )
    params = sampling_params(cfg.decoder)
    check_int("max_new_tokens", cfg.max_new_tokens, 0, MAX_NEW_TOKENS_LIMIT)
    check_int("num_samples", cfg.num_samples, 1, MAX_NUM_SAMPLES)
    if cfg.compile not in (True, False) or cfg.use_cache not in (True, False):
        raise ConfigError(
            f"compile and use_cache must be true or false, got "
            f"compile={cfg.compile!r}, use_cache={cfg.use_cache!r}"
        )
    device = resolve_device(cfg.device)
    if cfg.ckpt_path is None:
        ckpt_path = newest_checkpoint(Path(cfg.checkpoints_dir))
        print(f"using the newest checkpoint: {ckpt_path}", file=sys.stderr, flush=True)
    else:
        ckpt_path = Path(cfg.ckpt_path)
    model = load_model(ckpt_path, device=device)
    if cfg.compile and cfg.use_cache and cfg.max_new_tokens > 1 and can_compile(model):
        print(
            "compiled decoding: the first run for a model shape builds the step (tens of "
            f"seconds), kept in {package_dir()}",
            file=sys.stderr,
            flush=True,
        )

    start = time.perf_counter()
    texts = stream_to_terminal(model, cfg, params)
    seconds = time.perf_counter() - start

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    record: dict[str, Any] = {
        "ckpt_path": str(ckpt_path),
        "overrides": list(HydraConfig.get().overrides.task),
        "decoder": {"name": cfg.decoder.name, **asdict(params)},
        "tokens_per_s": round(cfg.max_new_tokens * cfg.num_samples / seconds, 1),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "samples": texts,
    }
    (out_dir / "samples.json").write_text(json.dumps(record, indent=2) + "\n")
    separator = "\n\n" + "=" * 40 + "\n\n"
    (out_dir / "samples.txt").write_text(separator.join(texts) + "\n")
    log_generation_run(out_dir, record, model)  # TensorBoard: samples, HParams row


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    with user_errors():
        run(cfg)


if __name__ == "__main__":
    run_hydra_app(main)
