"""The compiled decoding step: the model's one-token cached forward and the token's choice,
exported with ``torch.export`` and built by AOTInductor into a shared library.

A batch-1 step is a few dozen tiny ops: ``torch.compile``'s guards cost as much per call as
the ops, while an AOTInductor library is one C++ call. The weights, the KV cache, the sampling
settings (:func:`~tinygpt.generation.sampling.sampling_tensors`) and the sampling noise are its
inputs, so one build serves every model and setting of the same :func:`shape_key`, follows in-place
weight updates, and draws the noise from the caller's generator as eager sampling does.

A build takes tens of seconds, so it is kept: in memory for the process's life, and on disk
under :func:`package_dir`, named by a hash of the shape key, the machine and the torch version.
A package that cannot be loaded is rebuilt, a cache that cannot be written costs a build. Dense
only: ``torch.export`` cannot capture MoE routing's data-dependent shapes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from tinygpt.errors import CompileError
from tinygpt.generation.sampling import Decoder, choose, sampling_tensors
from tinygpt.models.gpt import MLP, TinyGPT

# (tokens (batch, 1), cache slot) -> next token (batch,), logits (batch, vocab), their sum
Step = Callable[[torch.Tensor, int], list[torch.Tensor]]
_Runner = Callable[[list[torch.Tensor]], list[torch.Tensor]]
_COMPILED: dict[tuple, _Runner] = {}  # shape key -> loaded library, for the process's life
CACHE_DIR_ENV = "TINYGPT_CACHE_DIR"
# The config fields the built step depends on (dropout, say, does not: the step runs in eval mode).
SHAPE_FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias", "ffn")


def package_dir() -> Path:
    """Where built steps are kept between processes: ``$TINYGPT_CACHE_DIR`` or
    ``~/.cache/tinygpt``, then ``decode_steps/``."""
    root = os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "tinygpt"
    return Path(root) / "decode_steps"


def _hardware(device: torch.device) -> str:
    """The CUDA architecture, or the CPU model and flags: the library is built for the building
    CPU (``-march=native``), so a cache in a shared home directory must tell machines apart."""
    if device.type == "cuda":
        return f"sm_{''.join(map(str, torch.cuda.get_device_capability(device)))}"
    described = [torch.backends.cpu.get_cpu_capability(), platform.machine(), platform.processor()]
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        described += [line for line in cpuinfo if line.startswith(("model name", "flags"))][:2]
    return "|".join(described)


def shape_key(model: TinyGPT, batch_size: int) -> tuple:
    """Everything a build depends on besides the machine: the model's shape (not its
    training-only settings), batch size, device, dtype, and the intra-op thread count, from
    which Inductor decides whether to emit multi-threaded loops."""
    shape = tuple(getattr(model.config, name) for name in SHAPE_FIELDS)
    weight = model.wte.weight
    return (shape, batch_size, str(weight.device), str(weight.dtype), torch.get_num_threads())


def can_compile(model: TinyGPT) -> bool:
    """Whether :func:`compiled_step` supports ``model``: every feed-forward dense."""
    return all(isinstance(block.ffn, MLP) for block in model.blocks)


class _Step(nn.Module):
    """The step as one graph: ``model.forward_with`` on the tensors given (flattened), then
    :func:`~tinygpt.generation.sampling.choose`; it returns the token, the last logits and
    their float32 sum, for the loop's finiteness check."""

    def __init__(self, model: TinyGPT, spec: object) -> None:
        super().__init__()
        self.model, self.spec = (model,), spec  # a tuple: its weights are not constants

    def forward(
        self,
        tokens: torch.Tensor,
        input_pos: torch.Tensor,
        values: torch.Tensor,
        top_k: torch.Tensor,
        noise: torch.Tensor,
        tensors: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model_tensors = tree_unflatten(tensors, self.spec)
        logits = self.model[0].forward_with(model_tensors, tokens, input_pos)[0][:, -1]
        return choose(logits, values, top_k, noise), logits, logits.sum(dtype=torch.float32)


def _build(module: _Step, inputs: list[torch.Tensor], path: Path) -> None:
    """Export ``module`` on ``inputs`` and build it into an AOTInductor package at ``path``."""
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # torch's own pytree code warns about a deprecation inside export; not ours to fix.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            exported = torch.export.export(module, (*inputs[:5], inputs[5:]))
            torch._inductor.aoti_compile_and_package(exported, package_path=str(path))
    except Exception as error:  # a missing compiler, say: one line for the user, not inductor's log
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CompileError(
            f"could not compile the decoding step ({first_line[:200]}); decode without compile"
        ) from error


def _load(path: Path, device: torch.device) -> _Runner | None:
    index = device.index if device.type == "cuda" and device.index is not None else -1
    try:
        return torch._inductor.aoti_load_package(str(path), device_index=index).loader.run
    except Exception:  # a partial, corrupt or incompatible package: rebuild it
        return None


@functools.cache  # said once per process
def _not_kept(directory: str, reason: str) -> None:
    print(
        f"compiled decoding: cannot write {directory} ({reason}); the step is built for this "
        "process only, not kept",
        file=sys.stderr,
        flush=True,
    )


def _compile(module: _Step, inputs: list[torch.Tensor], key: tuple) -> _Runner:
    """The step for ``key``: loaded from the on-disk cache, or built and left there."""
    device = inputs[0].device
    stamp = repr((key, _hardware(device), torch.__version__))
    path = package_dir() / f"{hashlib.sha256(stamp.encode()).hexdigest()[:24]}.pt2"
    if path.is_file() and (run := _load(path, device)) is not None:
        return run
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = tempfile.TemporaryDirectory(dir=path.parent, ignore_cleanup_errors=True)
    except OSError as exc:  # an unwritable cache: build for this process only
        _not_kept(str(path.parent), exc.strerror or str(exc))
        path, scratch = None, tempfile.TemporaryDirectory(ignore_cleanup_errors=True)
    with scratch as directory:
        built = Path(directory) / "step.pt2"
        _build(module, inputs, built)
        if path is not None:  # moved in whole: a concurrent reader never sees half a package
            os.replace(built, path)
        run = _load(path or built, device)  # the loader extracts what it needs elsewhere
    if run is None:
        raise CompileError("the built decoding step could not be loaded; decode without compile")
    return run


def compiled_step(
    model: TinyGPT, decoder: Decoder | None = None, generator: torch.Generator | None = None
) -> Step:
    """``step(tokens, slot)`` for ``tokens`` ``(batch, 1)`` at cache slot ``slot``: the token
    ``decoder`` chooses (a repetition penalty left out), the logits and their float32 sum.

    Call it after :meth:`TinyGPT.setup_kv_cache` (the step reads and writes that cache), in
    eval mode. Each call draws fresh noise from ``generator`` as eager sampling draws it (none
    when greedy, or without ``decoder``: then only the logits mean anything), so seeded
    decoding picks the eager tokens. The first call for a new shape builds the step (tens of
    seconds) unless an earlier process left it in :func:`package_dir`.
    """
    if not can_compile(model):
        raise ValueError("the compiled decoding step supports dense feed-forwards only")
    if model.training:
        raise ValueError("compile the decoding step of a model in eval mode (no dropout)")
    if model.kv_cache is None:
        raise RuntimeError("set up the model's KV cache before compiling its decoding step")
    batch, vocab = model.kv_cache[0][0].size(0), model.config.vocab_size
    device = model.wte.weight.device
    tensors, spec = tree_flatten(model.tensors())
    positions = torch.arange(model.config.block_size, device=device)
    tokens = torch.zeros(batch, 1, dtype=torch.long, device=device)
    noise = torch.ones(batch, vocab, device=device)
    settings = sampling_tensors(decoder or Decoder(), vocab, device)
    inputs = [tokens, positions[:1], *settings, noise, *tensors]
    key = shape_key(model, batch)
    if key not in _COMPILED:
        _COMPILED[key] = _compile(_Step(model, spec), inputs, key)
    run, draws = _COMPILED[key], decoder is not None and not decoder.greedy

    def step(tokens: torch.Tensor, slot: int) -> list[torch.Tensor]:
        if draws:
            noise.exponential_(generator=generator)
        # The library was built for contiguous tokens; a column of a wider buffer is not.
        inputs[0], inputs[1] = tokens.contiguous(), positions[slot : slot + 1]
        return run(inputs)

    return step
