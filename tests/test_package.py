"""The package's boundaries: the notebook API is torch only."""

import subprocess
import sys

from helpers import save_checkpoint

import tinygpt

GENERATORS = [
    "generate",
    "generate_greedy",
    "generate_temperature",
    "generate_top_k",
    "generate_nucleus",
    "generateV2",
]


def test_the_notebooks_calls_from_the_top_load_a_checkpoint_and_continue_a_prompt(tmp_path):
    # As the notebook calls them: `from tinygpt import ...`, a checkpoint loaded, text out.
    model = tinygpt.load_model(save_checkpoint(tmp_path / "best.ckpt"))
    assert isinstance(model, tinygpt.TinyGPT) and isinstance(model.config, tinygpt.TinyGPTConfig)
    for name in GENERATORS:
        text = getattr(tinygpt, name)(model, "To be", 12, seed=1)
        assert text.startswith("To be") and len(text) == len("To be") + 12, name
    pieces = list(tinygpt.stream_generate(model, "To be", 12, seed=1))
    assert "To be" + "".join(pieces) == tinygpt.generate(model, "To be", 12, seed=1)
    assert set(tinygpt.__all__) <= set(dir(tinygpt))


def test_importing_tinygpt_loads_neither_lightning_hydra_nor_matplotlib():
    # A fresh interpreter: this one has imported everything the other tests needed.
    code = (
        "import sys, tinygpt, tinygpt.generation, tinygpt.checkpoint, tinygpt.data\n"
        "import tinygpt.export\n"
        "heavy = ('lightning', 'pytorch_lightning', 'hydra', 'omegaconf', 'matplotlib')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(heavy)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"
