"""TinyGPT: compact character-level GPTs, trained with Lightning and configured with Hydra.

The notebook API, torch only (importing it loads neither Lightning, Hydra nor matplotlib)::

    from tinygpt import load_model, generate
    model = load_model("outputs/runs/<run>/checkpoints/best.ckpt")
    print(generate(model, "To be", 200, temperature=0.8, seed=1))

and ``train``, which loads them on first use: ``run = tinygpt.train(["model=moe"])``.

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
    "train",
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


def __getattr__(name: str) -> object:
    if name == "train":  # Lightning and Hydra: loaded when training is asked for
        from tinygpt.cli.in_process import train

        return train
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "train"])
