"""The one-token cached decoding step, compiled ahead of time by AOTInductor.

A batch-1 step of a small model is a few dozen tiny ops, so its cost is calling them. Compiled
with ``torch.compile``, a call still pays Dynamo's guards and the compiled graph's runtime
wrappers (at the seed's size on a 2-core Xeon: ~175 us a step, no better than the eager
:class:`~tinygpt.decode_step.DecodeStep`'s ~165 us). Exported once with ``torch.export`` and
compiled by AOTInductor into a shared library, the step is a single C++ call (~65 us there).

Weights and KV-cache buffers are inputs of the compiled step, not constants baked into it, so
one compilation serves every model of the same shape, batch size, device and dtype (kept for
the life of the process), sees in-place weight updates, and reads and writes the model's own
cache, which the eager prefills fill. The step is the module's fixed-shape forward (attention
over the whole cache, masked), as ``model(tokens, input_pos=...)`` computes it.

Dense feed-forwards only: mixture-of-experts routing has data-dependent shapes, which
``torch.export`` cannot capture (see :func:`can_compile`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call

from tinygpt.errors import CompileError
from tinygpt.model import MLP, TinyGPT

StepFn = Callable[[torch.Tensor, int], torch.Tensor]
_Runner = Callable[[list[torch.Tensor]], list[torch.Tensor]]
_COMPILED: dict[tuple, _Runner] = {}  # shape key -> compiled step, for the process's life


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


def _compile(model: TinyGPT, names: tuple[str, ...], inputs: list[torch.Tensor]) -> _Runner:
    tokens, input_pos, *tensors = inputs
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # torch's own pytree code warns about a deprecation inside export; not ours to fix.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
            exported = torch.export.export(_Step(model, names), (tokens, input_pos, tensors))
            package = torch._inductor.aoti_compile_and_package(exported)
        return torch._inductor.aoti_load_package(package).loader.run
    except Exception as error:  # a missing compiler, say: one line for the user, not inductor's log
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CompileError(
            f"could not compile the decoding step ({first_line[:200]}); decode without compile"
        ) from error


def compiled_decode_step(model: TinyGPT) -> StepFn:
    """``step(tokens, pos)``: logits ``(batch, vocab)`` after ``tokens`` ``(batch, 1)`` at ``pos``.

    Call it after :meth:`TinyGPT.setup_kv_cache` (the step uses that cache), in eval mode. The
    first call for a new shape compiles (tens of seconds); later ones reuse the compilation.
    """
    if not can_compile(model):
        raise ValueError("the compiled decoding step supports dense feed-forwards only")
    cache = model.blocks[0].attn.kv_cache
    if cache is None:
        raise RuntimeError("set up the model's KV cache before compiling its decoding step")
    named = [*model.named_parameters(), *model.named_buffers()]
    names = tuple(name for name, _ in named)
    weight = model.wte.weight
    batch_size = cache.k.size(0)
    key = (repr(model.config), names, batch_size, weight.device, weight.dtype)
    # One position tensor per cache slot, made once, so a step does not allocate one.
    positions = list(torch.arange(model.config.block_size, device=weight.device).split(1))
    inputs = [torch.zeros(batch_size, 1, dtype=torch.long, device=weight.device), positions[0]]
    inputs += [tensor for _, tensor in named]
    if key not in _COMPILED:
        _COMPILED[key] = _compile(model, names, inputs)
    run = _COMPILED[key]

    def step(tokens: torch.Tensor, pos: int) -> torch.Tensor:
        # The library was built for contiguous tokens; a column of a wider buffer is not.
        inputs[0], inputs[1] = tokens.contiguous(), positions[pos]
        return run(inputs)[0]

    return step
