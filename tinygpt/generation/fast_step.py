"""The fast paths of cached decoding: the eager :class:`DecodeStep` and the compiled step.

Both compute what the model's cached forward computes (``model(tokens, input_pos=...)``, the
reference in :mod:`tinygpt.models.gpt`), and one test holds every path equal to the model's
plain forward (tests/generation/test_fast_step.py): a change to the block must be made in the
module and in :meth:`DecodeStep.__call__`; the compiled step exports the module itself.

The eager step
--------------
At batch 1 a token of a small model costs a few dozen tiny ops, and on a CPU the time goes to
calling them, not to the arithmetic: every ``nn.Module.__call__``, module attribute lookup,
3-D ``linear`` reshape and additive mask costs about as much as the matmul it wraps. A
:class:`DecodeStep` collects a :class:`~tinygpt.models.TinyGPT`'s weights and KV-cache buffers
once per generation, keeps activations 2-D ``(batch * t, n_embd)``, and attends over the whole
cache with the model's additive cache mask (slicing the filled part instead would make the
keys and values non-contiguous, and attention would copy them on every call). It computes what
``model(tokens, input_pos=...)`` computes, in eval mode (no dropout).

The module forward stays the path for training, analysis and the AOTInductor-built step below
(``torch.export`` traces modules); mixture-of-experts feed-forwards are called as modules,
since their routing is already a handful of batched ops. Layer norms are called as
``torch.layer_norm``, not through ``F.layer_norm``'s Python wrapper: in a step made of so few
small ops, every wrapper shows.

The compiled step
-----------------
A batch-1 step of a small model is a few dozen tiny ops, so its cost is calling them. Compiled
with ``torch.compile``, a call still pays Dynamo's guards and the compiled graph's runtime
wrappers, which at the notebook's size cost more than the eager :class:`DecodeStep` does.
Exported once with ``torch.export`` and compiled by AOTInductor into a shared library, the step
is a single C++ call, faster than both (benchmarks/bench_decoding.py times the eager and the
compiled step).

:func:`compiled_sampling_step` builds the step with the token's choice inside it
(:func:`~tinygpt.generation.sampling.choose`): eager sampling is a dozen small ops per token, as
many as the step's own call costs. The sampling settings and the noise are inputs, the noise
drawn from the caller's generator as eager sampling draws it, so one build serves every setting
and seeded decoding picks the eager tokens.

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
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from tinygpt.errors import CompileError
from tinygpt.generation.sampling import SamplingParams, choose, sampling_tensors
from tinygpt.models.gpt import MLP, TinyGPT


class _Layer(NamedTuple):
    ln_1: tuple[torch.Tensor, torch.Tensor | None]
    qkv: tuple[torch.Tensor, torch.Tensor | None]
    proj: tuple[torch.Tensor, torch.Tensor | None]
    ln_2: tuple[torch.Tensor, torch.Tensor | None]
    keys: torch.Tensor  # (batch, n_head, block_size, head_dim), the layer's KV cache
    values: torch.Tensor
    mlp: tuple[torch.Tensor, ...] | None  # dense: fc weight, fc bias, proj weight, proj bias
    moe: nn.Module | None  # a mixture-of-experts feed-forward, called as a module


def _affine(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    return module.weight, module.bias


class DecodeStep:
    """``step(tokens, start)``: the last position's logits, reading and writing the KV cache.

    Build it after :meth:`TinyGPT.setup_kv_cache`: a call writes its tokens' keys and values
    into those buffers at ``start ..`` and attends to positions ``0 ..`` its own, which earlier
    calls must have filled. It holds the weights themselves, so it reflects later in-place
    updates, but not replaced modules or a new cache.
    """

    def __init__(self, model: TinyGPT) -> None:
        config = model.config
        self.n_embd, self.n_head = config.n_embd, config.n_head
        self.wte, self.wpe = model.wte.weight, model.wpe.weight
        self.ln_f, self.lm_head = _affine(model.ln_f), model.lm_head.weight
        self.layers = []
        for block in model.blocks:
            cache, ffn = block.attn.kv_cache, block.mlp
            if cache is None:
                raise RuntimeError("set up the model's KV cache before building a DecodeStep")
            dense = isinstance(ffn, MLP)
            self.layers.append(
                _Layer(
                    ln_1=_affine(block.ln_1),
                    qkv=_affine(block.attn.qkv),
                    proj=_affine(block.attn.proj),
                    ln_2=_affine(block.ln_2),
                    keys=cache.k,
                    values=cache.v,
                    mlp=(*_affine(ffn.fc), *_affine(ffn.proj)) if dense else None,
                    moe=None if dense else ffn,
                )
            )
        # (block_size, block_size) additive mask: row p lets a query at p see keys 0 .. p.
        self.cache_mask = model.cache_mask

    def __call__(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """Logits ``(batch, vocab)`` after ``tokens`` ``(batch, t)`` placed at ``start ..``.

        ``t == 1`` is a decoding step; ``t > 1`` a prefill (or a chunk of one).
        """
        B, T = tokens.shape
        C, H = self.n_embd, self.n_head
        end = start + T
        shape = (C,)
        mask = self.cache_mask[start:end]
        # Activations stay 2-D, (batch * t, n_embd): linear then needs no reshapes.
        x = self.wte.index_select(0, tokens.reshape(-1))
        x = (x.view(B, T, C) + self.wpe[start:end]).view(B * T, C)
        for layer in self.layers:
            h = torch.layer_norm(x, shape, *layer.ln_1)
            qkv = F.linear(h, *layer.qkv).view(B, T, 3, H, C // H)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, head, t, head_dim)
            layer.keys.narrow(2, start, T).copy_(k)
            layer.values.narrow(2, start, T).copy_(v)
            y = F.scaled_dot_product_attention(q, layer.keys, layer.values, attn_mask=mask)
            x = x + F.linear(y.transpose(1, 2).reshape(B * T, C), *layer.proj)
            h = torch.layer_norm(x, shape, *layer.ln_2)
            if layer.mlp is None:
                x = x + layer.moe(h)
            else:
                fc_w, fc_b, proj_w, proj_b = layer.mlp
                x = x + F.linear(F.gelu(F.linear(h, fc_w, fc_b)), proj_w, proj_b)
        last = x if T == 1 else x.view(B, T, C)[:, -1]
        return F.linear(torch.layer_norm(last, shape, *self.ln_f), self.lm_head)


StepFn = Callable[[torch.Tensor, int], torch.Tensor]
SampleFn = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]
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


def shape_key(model: TinyGPT, batch_size: int, names: tuple[str, ...] | None = None) -> tuple:
    """Everything a build depends on besides the machine: one build serves all models sharing it.

    The model's shape (not its training-only settings), parameter and buffer names (``names``
    if the caller has them already), batch size, device, dtype, and the intra-op thread count,
    from which Inductor decides whether to emit multi-threaded loops.
    """
    config, weight = model.config, model.wte.weight
    shape = tuple(getattr(config, name) for name in SHAPE_FIELDS)
    if names is None:
        names = tuple(name for name, _ in (*model.named_parameters(), *model.named_buffers()))
    threads = torch.get_num_threads()
    return (shape, names, batch_size, str(weight.device), str(weight.dtype), threads)


def can_compile(model: TinyGPT) -> bool:
    """Whether :func:`compiled_decode_step` supports ``model``: every feed-forward dense."""
    return all(isinstance(block.mlp, MLP) for block in model.blocks)


class _Step(nn.Module):
    """``model(tokens, input_pos)``'s last logits with the model's tensors passed in by name."""

    leading_inputs = 2  # tokens, input_pos; then the model's tensors

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


class _SamplingStep(_Step):
    """The step and the token chosen from its logits, in one graph: the next token ``(batch,)``
    as :func:`~tinygpt.generation.sampling.choose` picks it, and the logits' float32 sum for the
    loop's finiteness check. The sampling parameters and noise are inputs, so one build serves
    every setting, and the noise comes from the caller's generator as eager sampling draws it.
    """

    leading_inputs = 5  # tokens, input_pos, sampling values, top_k, noise

    def forward(  # type: ignore[override]
        self,
        tokens: torch.Tensor,
        input_pos: torch.Tensor,
        values: torch.Tensor,
        top_k: torch.Tensor,
        noise: torch.Tensor,
        tensors: list[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logits = super().forward(tokens, input_pos, tensors)
        return choose(logits, values, top_k, noise), logits.sum(dtype=torch.float32)


def _build(module: nn.Module, inputs: list[torch.Tensor], path: Path) -> None:
    """Export ``module`` (a :class:`_Step` or :class:`_SamplingStep`) and build it into an
    AOTInductor package at ``path``. ``inputs``: its tensor inputs, the model's tensors last."""
    *leading, tensors = _split_inputs(module, inputs)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # torch's own pytree code warns about a deprecation inside export; not ours to fix.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            exported = torch.export.export(module, (*leading, tensors))
            torch._inductor.aoti_compile_and_package(exported, package_path=str(path))
    except Exception as error:  # a missing compiler, say: one line for the user, not inductor's log
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CompileError(
            f"could not compile the decoding step ({first_line[:200]}); decode without compile"
        ) from error


def _split_inputs(module: nn.Module, inputs: list[torch.Tensor]) -> list:
    """``inputs`` as ``module.forward``'s arguments: the leading tensors, then the model's list."""
    leading = module.leading_inputs
    return [*inputs[:leading], inputs[leading:]]


def _load(path: Path, device: torch.device) -> _Runner | None:
    index = device.index if device.type == "cuda" and device.index is not None else -1
    try:
        return torch._inductor.aoti_load_package(str(path), device_index=index).loader.run
    except Exception:  # a partial, corrupt or incompatible package: rebuild it
        return None


def _compile(module: _Step, inputs: list[torch.Tensor], key: tuple) -> _Runner:
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
        _build(module, inputs, built)
        if path is not None:  # moved in whole: a concurrent reader never sees half a package
            os.replace(built, path)
        run = _load(path or built, device)  # the loader extracts what it needs elsewhere
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if run is None:
        raise CompileError("the built decoding step could not be loaded; decode without compile")
    return run


def _compiled(
    model: TinyGPT, kind: type[_Step], leading: list[torch.Tensor]
) -> tuple[_Runner, list[torch.Tensor]]:
    """The built ``kind`` of step for ``model``'s shape, and the input list it runs on:
    ``leading`` (placeholders of the right shapes), then the model's tensors."""
    if not can_compile(model):
        raise ValueError("the compiled decoding step supports dense feed-forwards only")
    if model.training:
        raise ValueError("compile the decoding step of a model in eval mode (no dropout)")
    if model.blocks[0].attn.kv_cache is None:
        raise RuntimeError("set up the model's KV cache before compiling its decoding step")
    named = [*model.named_parameters(), *model.named_buffers()]
    names = tuple(name for name, _ in named)
    inputs = [*leading, *(tensor for _, tensor in named)]
    key = (*shape_key(model, leading[0].size(0), names), kind.__name__)
    if key not in _COMPILED:
        _COMPILED[key] = _compile(kind(model, names), inputs, key)
    return _COMPILED[key], inputs


_POSITIONS: dict[tuple[int, torch.device], list[torch.Tensor]] = {}


def _positions(model: TinyGPT) -> list[torch.Tensor]:
    """One position tensor per cache slot, made once per context length and device, so neither
    a step nor a generation allocates them. The steps only read them."""
    key = (model.config.block_size, model.wte.weight.device)
    if key not in _POSITIONS:
        with torch.inference_mode(False):  # usable outside inference mode too
            _POSITIONS[key] = list(torch.arange(key[0], device=key[1]).split(1))
    return _POSITIONS[key]


def _token_placeholder(model: TinyGPT) -> torch.Tensor:
    batch_size = model.blocks[0].attn.kv_cache.k.size(0)
    return torch.zeros(batch_size, 1, dtype=torch.long, device=model.wte.weight.device)


def compiled_decode_step(model: TinyGPT) -> StepFn:
    """``step(tokens, pos)``: logits ``(batch, vocab)`` after ``tokens`` ``(batch, 1)`` at ``pos``.

    Call it after :meth:`TinyGPT.setup_kv_cache` (the step uses that cache), in eval mode. The
    first call for a new shape builds the step (tens of seconds) unless an earlier process on
    this machine left it in the cache (:func:`package_dir`); later calls reuse it.
    """
    cache = model.blocks[0].attn.kv_cache
    if cache is None:
        raise RuntimeError("set up the model's KV cache before compiling its decoding step")
    positions = _positions(model)
    run, inputs = _compiled(model, _Step, [_token_placeholder(model), positions[0]])

    def step(tokens: torch.Tensor, pos: int) -> torch.Tensor:
        # The library was built for contiguous tokens; a column of a wider buffer is not.
        inputs[0], inputs[1] = tokens.contiguous(), positions[pos]
        return run(inputs)[0]

    return step


def compiled_sampling_step(
    model: TinyGPT, params: SamplingParams, generator: torch.Generator | None
) -> SampleFn:
    """``step(tokens, pos)``: the next token ``(batch,)`` after ``tokens`` ``(batch, 1)`` at
    ``pos``, chosen by ``params`` in the compiled graph, and the logits' float32 sum.

    The compiled step with sampling moved inside it (:class:`_SamplingStep`): a token costs one
    library call and one noise draw instead of the dozen small ops of eager sampling. The noise
    is drawn from ``generator`` exactly as :func:`~tinygpt.generation.sampling.next_token`
    draws it (none when greedy), so seeded decoding picks the eager path's tokens. Parameters
    with a repetition penalty need the history: use :func:`compiled_decode_step` for those.
    Requirements as for :func:`compiled_decode_step`.
    """
    if model.blocks[0].attn.kv_cache is None:
        raise RuntimeError("set up the model's KV cache before compiling its decoding step")
    tokens = _token_placeholder(model)
    values, top_k = sampling_tensors(params, model.config.vocab_size, tokens.device)
    noise = torch.ones(tokens.size(0), model.config.vocab_size, device=tokens.device)
    positions = _positions(model)
    run, inputs = _compiled(model, _SamplingStep, [tokens, positions[0], values, top_k, noise])
    greedy = params.greedy

    def step(tokens: torch.Tensor, pos: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not greedy:
            noise.exponential_(generator=generator)
        inputs[0], inputs[1] = tokens.contiguous(), positions[pos]
        token, logits_sum = run(inputs)
        return token, logits_sum

    return step
