"""TinyGPT: compact character-level GPTs, trained with Lightning and configured with Hydra.

The notebook API, torch only (importing it loads neither Lightning, Hydra nor matplotlib)::

    from tinygpt import load_model, generate
    model = load_model("outputs/runs/<run>/checkpoints/best.ckpt")
    print(generate(model, "To be", 200, temperature=0.8, seed=1))

Subpackages: ``models`` (config, GPT, MoE, KV cache), ``data`` (tokenizer, download,
DataModule), ``training`` (Lightning), ``generation`` (sampling, the token loop, fast steps),
``analysis`` (pictures, metrics, reports) and ``cli`` (Hydra: what train.py and generate.py run).
"""

from tinygpt.checkpoint import load_model
from tinygpt.generation import (
    generate,
    generate_greedy,
    generate_nucleus,
    generate_temperature,
    generate_top_k,
    generateV2,
    stream_generate,
)
from tinygpt.models import TinyGPT, TinyGPTConfig

__all__ = [
    "TinyGPT",
    "TinyGPTConfig",
    "generate",
    "generateV2",
    "generate_greedy",
    "generate_nucleus",
    "generate_temperature",
    "generate_top_k",
    "load_model",
    "stream_generate",
]
