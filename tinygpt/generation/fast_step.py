"""The one-token cached decoding step, compiled ahead of time by AOTInductor.

A batch-1 step of a small model is a few dozen tiny ops, so its cost is calling them. Compiled
with ``torch.compile``, a call still pays Dynamo's guards and the compiled graph's runtime
wrappers (at the seed's size on a 2-core Xeon: ~175 us a step, slower than the eager
:class:`~tinygpt.decode_step.DecodeStep`'s ~120 us). Exported once with ``torch.export`` and
compiled by AOTInductor into a shared library, the step is a single C++ call (~60 us there).

Weights and KV-cache buffers are inputs of the compiled step, not constants baked into it, so
one build serves every model with the same :func:`shape_key`, sees in-place weight updates,
and reads and writes the model's own cache, which the eager prefills fill. The step is the
module's fixed-shape forward (attention over the whole cache, masked), as
``model(tokens, input_pos=...)`` computes it.

A build takes tens of seconds, so it is kept: in memory for the life of the process, and on
disk as an AOTInductor package under :func:`package_dir` (``$TINYGPT_CACHE_DIR`` or
``~/.cache/tinygpt``, then ``decode_steps/``), named by a hash of :func:`shape_key` (model
shape, batch size, device, dtype, thread count), the machine (CPU model and flags, or CUDA
architecture) and the torch version. A package that cannot be loaded is rebuilt; a cache that
cannot be written only costs the next process a build.

Dense feed-forwards only: mixture-of-experts routing has data-dependent shapes, which
``torch.export`` cannot capture (see :func:`can_compile`).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from tinygpt.errors import CompileError
from tinygpt.model import MLP, TinyGPT

StepFn = Callable[[torch.Tensor, int], torch.Tensor]
_Runner = Callable[[list[torch.Tensor]], list[torch.Tensor]]
_COMPILED: dict[tuple, _Runner] = {}  # shape key -> compiled step, for the process's life
CACHE_DIR_ENV = "TINYGPT_CACHE_DIR"
# The config fields the built step depends on (dropout, say, does not: the step runs in eval mode).
SHAPE_FIELDS = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "bias", "ffn")


def package_dir() -> Path:
    """Where built steps are kept between processes."""
    root = os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "tinygpt"
    return Path(root) / "decode_steps"


def _hardware(device: torch.device) -> str:
    """What the built machine code depends on: the CUDA architecture, or the CPU model and flags.

    The library is compiled for the building CPU (``-march=native``), so a package built on one
    machine may use instructions another lacks; a cache in a shared home directory must tell
    them apart.
    """
    if device.type == "cuda":
        return f"sm_{''.join(map(str, torch.cuda.get_device_capability(device)))}"
    described = [torch.backends.cpu.get_cpu_capability(), platform.machine()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            described += [line for line in cpuinfo if line.startswith(("model name", "flags"))][:2]
    except OSError:
        described.append(platform.processor())
    return "|".join(described)


def shape_key(model: TinyGPT, batch_size: int) -> tuple:
    """Everything a build depends on besides the machine: one build serves all models sharing it.

    The model's shape (not its training-only settings), parameter and buffer names, batch size,
    device, dtype, and the intra-op thread count, from which Inductor decides whether to emit
    multi-threaded loops.
    """
    config, weight = model.config, model.wte.weight
    shape = tuple(getattr(config, name) for name in SHAPE_FIELDS)
    names = tuple(name for name, _ in (*model.named_parameters(), *model.named_buffers()))
    threads = torch.get_num_threads()
    return (shape, names, batch_size, str(weight.device), str(weight.dtype), threads)


def can_compile(model: TinyGPT) -> bool:
    """Whether :func:`compiled_decode_step` supports ``model``: every feed-forward dense."""
    return all(isinstance(block.mlp, MLP) for block in model.blocks)


class _Step(nn.Module):
    """``model(tokens, input_pos)``'s last logits with the model's tensors passed in by name."""

    def __init__(self, model: TinyGPT, names: tuple[str, ...]) -> None:
        super().__init__()
        self.names = names
        self.model = (model,)  # a tuple, so the model's weights are not lifted as constants

    def forward(
        self, tokens: torch.Tensor, input_pos: torch.Tensor, tensors: list[torch.Tensor]
    ) -> torch.Tensor:
        state = dict(zip(self.names, tensors, strict=True))
        logits = functional_call(self.model[0], state, (tokens,), {"input_pos": input_pos})[0]
        return logits[:, -1]


def _build(model: TinyGPT, names: tuple[str, ...], inputs: list[torch.Tensor], path: Path) -> None:
    """Export the step and build it into an AOTInductor package at ``path``."""
    tokens, input_pos, *tensors = inputs
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # torch's own pytree code warns about a deprecation inside export; not ours to fix.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            exported = torch.export.export(_Step(model, names), (tokens, input_pos, tensors))
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


def _compile(
    model: TinyGPT, names: tuple[str, ...], inputs: list[torch.Tensor], key: tuple
) -> _Runner:
    """The step for ``key``: loaded from the on-disk cache, or built and left there."""
    device = inputs[0].device
    stamp = repr((key, _hardware(device), torch.__version__))
    path = package_dir() / f"{hashlib.sha256(stamp.encode()).hexdigest()[:24]}.pt2"
    if path.is_file() and (run := _load(path, device)) is not None:
        return run
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=path.parent))
    except OSError:  # an unwritable cache: build for this process only
        path, scratch = None, Path(tempfile.mkdtemp())
    built = scratch / "step.pt2"
    try:
        _build(model, names, inputs, built)
        if path is not None:  # moved in whole: a concurrent reader never sees half a package
            os.replace(built, path)
        run = _load(path or built, device)  # the loader extracts what it needs elsewhere
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if run is None:
        raise CompileError("the built decoding step could not be loaded; decode without compile")
    return run


def compiled_decode_step(model: TinyGPT) -> StepFn:
    """``step(tokens, pos)``: logits ``(batch, vocab)`` after ``tokens`` ``(batch, 1)`` at ``pos``.

    Call it after :meth:`TinyGPT.setup_kv_cache` (the step uses that cache), in eval mode. The
    first call for a new shape builds the step (tens of seconds) unless an earlier process on
    this machine left it in the cache (:func:`package_dir`); later calls reuse it.
    """
    if not can_compile(model):
        raise ValueError("the compiled decoding step supports dense feed-forwards only")
    if model.training:
        raise ValueError("compile the decoding step of a model in eval mode (no dropout)")
    cache = model.blocks[0].attn.kv_cache
    if cache is None:
        raise RuntimeError("set up the model's KV cache before compiling its decoding step")
    named = [*model.named_parameters(), *model.named_buffers()]
    names = tuple(name for name, _ in named)
    weight = model.wte.weight
    batch_size = cache.k.size(0)
    key = shape_key(model, batch_size)
    # One position tensor per cache slot, made once, so a step does not allocate one.
    positions = list(torch.arange(model.config.block_size, device=weight.device).split(1))
    inputs = [torch.zeros(batch_size, 1, dtype=torch.long, device=weight.device), positions[0]]
    inputs += [tensor for _, tensor in named]
    if key not in _COMPILED:
        _COMPILED[key] = _compile(model, names, inputs, key)
    run = _COMPILED[key]

    def step(tokens: torch.Tensor, pos: int) -> torch.Tensor:
        # The library was built for contiguous tokens; a column of a wider buffer is not.
        inputs[0], inputs[1] = tokens.contiguous(), positions[pos]
        return run(inputs)[0]

    return step
