"""The plain-tensor cached forward computes what the module's forward computes."""

import pytest
import torch

from tinygpt.generation.fast_step import DecodeStep
from tinygpt.models import TinyGPT, TinyGPTConfig

SHAPES = {
    "dense": dict(),
    "no bias": dict(bias=False),
    "moe top-1": dict(ffn="moe"),
    "moe top-2, first layer only": dict(ffn="moe", experts_per_token=2, moe_layers=[0]),
}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@torch.no_grad()
def test_a_prefill_and_steps_match_the_full_forward(shape):
    torch.manual_seed(0)
    config = TinyGPTConfig(vocab_size=20, block_size=10, n_layer=2, n_head=2, n_embd=16, **shape)
    model = TinyGPT(config).eval()
    for param in model.parameters():
        param.mul_(3)  # spread the logits, so a wrong step cannot hide in rounding
    seq = torch.randint(0, 20, (3, 10), generator=torch.Generator().manual_seed(1))
    prompt = 4
    model.setup_kv_cache(batch_size=3)
    try:
        step = DecodeStep(model)
        outputs = [step(seq[:, :prompt], 0)]  # prefill of positions 0..3
        outputs += [step(seq[:, pos : pos + 1], pos) for pos in range(prompt, 10)]
    finally:
        model.clear_kv_cache()
    for pos, logits in enumerate(outputs, start=prompt - 1):
        assert logits.shape == (3, 20)
        full = model(seq[:, : pos + 1])[0][:, -1]
        torch.testing.assert_close(logits, full, atol=1e-5, rtol=0)


@torch.no_grad()
def test_a_prefill_in_chunks_matches_the_full_forward():
    torch.manual_seed(0)
    config = TinyGPTConfig(vocab_size=20, block_size=10, n_layer=2, n_head=2, n_embd=16)
    model = TinyGPT(config).eval()
    seq = torch.randint(0, 20, (2, 10), generator=torch.Generator().manual_seed(2))
    model.setup_kv_cache(batch_size=2)
    try:
        step = DecodeStep(model)
        chunks = [(0, 3), (3, 7), (7, 10)]  # each attends to the earlier chunks' cached keys
        outputs = {end: step(seq[:, start:end], start) for start, end in chunks}
    finally:
        model.clear_kv_cache()
    for end, logits in outputs.items():
        torch.testing.assert_close(logits, model(seq[:, :end])[0][:, -1], atol=1e-5, rtol=0)


def test_building_a_step_without_a_cache_is_refused():
    with pytest.raises(RuntimeError, match="KV cache"):
        DecodeStep(TinyGPT(TinyGPTConfig(vocab_size=5, block_size=4, n_embd=8, n_head=2)))
