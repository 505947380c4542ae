"""Every cached path computes what the model's plain forward computes: the module's own cached
forward (``input_pos``), ``forward_with`` on tensors gathered once, as decoding runs it (a
prefill then one-token steps, or a prefill in chunks) and the compiled step (dense models only),
for dense and mixture-of-experts models."""

from collections.abc import Callable

import pytest
import torch
from helpers import spread_model

from tinygpt.generation.compiled import compiled_step
from tinygpt.generation.loop import DECODE_THREADS, decode_threads, decoding_settings
from tinygpt.models import TinyGPT

BLOCK, BATCH, PROMPT = 8, 2, 3  # spread_model's context
SHAPES = {
    "dense": {},
    "no bias": {"bias": False},
    "moe top-1": {"ffn": "moe"},
    "moe top-2, first layer only": {"ffn": "moe", "experts_per_token": 2, "moe_layers": [0]},
}
Path = Callable[[TinyGPT, torch.Tensor], dict[int, torch.Tensor]]  # {n: logits after seq[:, :n]}


def module_input_pos(model: TinyGPT, seq: torch.Tensor) -> dict[int, torch.Tensor]:
    logits = {PROMPT: model(seq[:, :PROMPT], input_pos=torch.arange(PROMPT))[0][:, -1]}
    for pos in range(PROMPT, BLOCK):
        logits[pos + 1] = model(seq[:, pos : pos + 1], input_pos=torch.tensor([pos]))[0][:, -1]
    return logits


def gathered(model: TinyGPT, seq: torch.Tensor, start: int, end: int) -> torch.Tensor:
    input_pos = torch.arange(start, end)
    return model.forward_with(model.tensors(), seq[:, start:end], input_pos)[0][:, -1]


def forward_with(model: TinyGPT, seq: torch.Tensor) -> dict[int, torch.Tensor]:
    logits = {PROMPT: gathered(model, seq, 0, PROMPT)}
    logits.update({pos + 1: gathered(model, seq, pos, pos + 1) for pos in range(PROMPT, BLOCK)})
    return logits


def forward_with_chunks(model: TinyGPT, seq: torch.Tensor) -> dict[int, torch.Tensor]:
    # Each chunk attends to the earlier chunks' cached keys.
    return {end: gathered(model, seq, start, end) for start, end in ((0, 3), (3, 7), (7, BLOCK))}


def compiled(model: TinyGPT, seq: torch.Tensor) -> dict[int, torch.Tensor]:
    # Under decoding's settings, as generate_ids builds it: the build is keyed by the thread count.
    with decoding_settings(decode_threads(model, DECODE_THREADS)):
        logits = {PROMPT: gathered(model, seq, 0, PROMPT)}  # prefilled eagerly
        step = compiled_step(model)
        logits.update(
            {pos + 1: step(seq[:, pos : pos + 1], pos)[1] for pos in range(PROMPT, BLOCK)}
        )
    return logits


PATHS: dict[str, Path] = {
    "module input_pos": module_input_pos,
    "forward_with": forward_with,
    "forward_with chunks": forward_with_chunks,
}
CASES = [pytest.param(s, p, id=f"{s}, {p}") for s in SHAPES for p in PATHS]
# A real C++ build (tens of seconds), of the shape test_compiled_step.py builds too.
CASES.append(pytest.param("dense", "compiled", id="dense, compiled", marks=pytest.mark.slow))
PATHS["compiled"] = compiled


@pytest.mark.parametrize(("shape", "path"), CASES)
@torch.no_grad()
def test_every_cached_path_computes_the_plain_forward(shape, path):
    model = spread_model(**SHAPES[shape])
    seq = torch.randint(0, 20, (BATCH, BLOCK), generator=torch.Generator().manual_seed(1))
    model.setup_kv_cache(BATCH)
    try:
        cached = PATHS[path](model, seq)
    finally:
        model.clear_kv_cache()
    assert len(cached) >= 3
    for n, logits in cached.items():
        assert logits.shape == (BATCH, 20) and logits.dtype == torch.float32
        torch.testing.assert_close(logits, model(seq[:, :n])[0][:, -1], atol=1e-5, rtol=0)


def test_a_cached_forward_without_a_cache_is_refused():
    with pytest.raises(RuntimeError, match="KV cache"):
        spread_model()(torch.zeros(1, 1, dtype=torch.long), input_pos=torch.tensor([0]))
