r"""The run behind ``python generate.py``: sample text from a checkpoint, streaming it.

    python generate.py ckpt_path=outputs/.../last.ckpt prompt="To be" max_new_tokens=200 \
        decoder=nucleus decoder.top_p=0.9 seed=1
    python generate.py prompt_file=speech.txt   # the file's whole text, line breaks included
    python generate.py -m decoder=temperature decoder.temperature=0.5,1.0,1.5

Decoders (conf/decoder/): greedy, temperature, top_k, nucleus, combined, min_p. Without
``ckpt_path`` the newest run's best (else last) checkpoint is used. Each run writes samples.txt and
samples.json (samples, resolved config, speed) into its Hydra run directory; a multirun also
writes summary.json and summary.md into the sweep directory.

:func:`main` is the command; tests compose a config and call :func:`generate` in-process.
"""

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from tinygpt.analysis.generation_dashboard import log_generation_run
from tinygpt.checkpoint import load_model
from tinygpt.cli.errors import run_hydra_app, user_errors
from tinygpt.cli.paths import checkpoint_to_use, run_dir_lock
from tinygpt.cli.resolvers import register_resolvers
from tinygpt.errors import ConfigError, DataError, require
from tinygpt.generation import stream_generate
from tinygpt.generation.compiled import can_compile, package_dir
from tinygpt.generation.sampling import Decoder, named_decoder
from tinygpt.generation.text import check_stop


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device {name!r} is not a torch device ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available")
    return device


def read_prompt_file(path: Path) -> str:
    """The whole text of a UTF-8 file, kept as written (a final line break too).

    Windows line breaks read as ``\\n`` and a UTF-8 byte order mark is dropped.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:  # the OS's reason: No such file or directory, Is a directory, ...
        raise DataError(f"cannot read prompt_file {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"prompt_file {path} is not UTF-8 text: byte 0x{data[exc.start]:02x} on line {line} "
            f"(offset {exc.start})"
        ) from None
    if not text:
        raise DataError(
            f"prompt_file {path} is empty; to start from a line break, leave prompt_file unset"
        )
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def read_prompt(cfg: DictConfig) -> str:
    """The prompt: ``prompt=``, or the whole text of ``prompt_file=`` (not both)."""
    if cfg.prompt_file is not None:
        if cfg.prompt != "":
            raise ConfigError("give prompt or prompt_file, not both")
        return read_prompt_file(Path(str(cfg.prompt_file)))
    if not isinstance(cfg.prompt, str):
        # Hydra reads an unquoted true, null or 3 as a boolean, null or number, [a] as a list.
        scalar = isinstance(cfg.prompt, (bool, int, float))
        quoted = "null" if cfg.prompt is None else str(cfg.prompt) if scalar else "..."
        raise ConfigError(
            f"prompt must be text, got {type(cfg.prompt).__name__} {cfg.prompt!r}: "
            f"quote it for Hydra, e.g. \"prompt='{quoted}'\""
        )
    return cfg.prompt


def configured_decoder(node: DictConfig) -> tuple[Decoder, tuple[str, ...]]:
    """conf/decoder/'s decoder (its name and settings, as resolved) and its stop strings."""
    settings = OmegaConf.to_container(node, resolve=True)
    stop = check_stop(settings.pop("stop"))
    return named_decoder(**settings), stop


def stream_to_terminal(
    model: torch.nn.Module,
    cfg: DictConfig,
    prompt: str,
    decoder: Decoder,
    stop: Sequence[str] = (),
) -> list[str]:
    """Print sample 1 as it is generated, then the others; return every sample's text."""
    steps = stream_generate(
        model,
        prompt,
        cfg.max_new_tokens,
        **asdict(decoder),
        seed=cfg.seed,
        num_samples=cfg.num_samples,
        stop=stop,
        use_cache=cfg.use_cache,
        compile=cfg.compile,
    )
    many = cfg.num_samples > 1
    # Each sample's text as UTF-8 bytes: held as one str object a piece (io.StringIO too), each
    # character outside Latin-1 would take ~80 bytes (tinygpt.generation.memory counts on less).
    samples = [bytearray(prompt.encode()) for _ in range(cfg.num_samples)]
    print(f"--- sample 1/{cfg.num_samples} ---\n" if many else "", end=prompt, flush=True)
    for step in steps:
        step = step if many else [step]  # one sample streams as a string
        print(step[0], end="", flush=True)
        for sample, piece in zip(samples, step, strict=True):
            sample += piece.encode()
    texts = [sample.decode() for sample in samples]
    for i, text in enumerate(texts[1:], start=2):
        print(f"\n--- sample {i}/{cfg.num_samples} ---\n{text}", end="")
    print(flush=True)
    return texts


def generate(cfg: DictConfig) -> None:
    """One generate job of a composed config (HydraConfig set): stream the samples, then write
    samples.json, samples.txt and the TensorBoard record into the run directory."""
    # Validate everything cheap before loading the checkpoint.
    prompt = read_prompt(cfg)
    decoder, stop = configured_decoder(cfg.decoder)
    require(
        isinstance(cfg.compile, bool) and isinstance(cfg.use_cache, bool),
        f"compile and use_cache must be true or false, got compile={cfg.compile!r}, "
        f"use_cache={cfg.use_cache!r}",
    )  # max_new_tokens, num_samples: stream_generate checks them
    device = resolve_device(cfg.device)
    ckpt_path = checkpoint_to_use(cfg.ckpt_path, cfg.checkpoints_dir)
    model = load_model(ckpt_path, device=device)
    if cfg.compile and cfg.use_cache and cfg.max_new_tokens > 1 and can_compile(model):
        print(
            "compiled decoding: the first run for a model shape builds the step (tens of "
            f"seconds), kept in {package_dir()}",
            file=sys.stderr,
            flush=True,
        )

    start = time.perf_counter()
    texts = stream_to_terminal(model, cfg, prompt, decoder, stop)
    seconds = time.perf_counter() - start
    new_characters = sum(len(text) - len(prompt) for text in texts)  # fewer when stopped

    out_dir = Path(HydraConfig.get().runtime.output_dir)
    record: dict[str, Any] = {
        "ckpt_path": str(ckpt_path),
        "overrides": list(HydraConfig.get().overrides.task),
        "decoder": {"name": cfg.decoder.name, **asdict(decoder), "stop": list(stop)},
        "tokens_per_s": round(new_characters / seconds, 1),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "prompt": prompt,
        "samples": texts,
    }
    (out_dir / "samples.json").write_text(json.dumps(record, indent=2) + "\n")
    separator = "\n\n" + "=" * 40 + "\n\n"
    (out_dir / "samples.txt").write_text(separator.join(texts) + "\n")
    log_generation_run(out_dir, record, model)  # TensorBoard: samples, HParams row


def _job(cfg: DictConfig) -> None:
    with user_errors(), run_dir_lock(HydraConfig.get().runtime.output_dir):
        generate(cfg)


def main(argv: Sequence[str] | None = None) -> None:
    """``python generate.py ARGV`` (``argv`` None: this process's command line)."""
    register_resolvers()
    run_hydra_app("generate", _job, argv)
