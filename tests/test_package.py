"""The package's boundaries: the notebook API is torch only."""

import subprocess
import sys

import tinygpt

NOTEBOOK_API = {
    "load_model",
    "generate",
    "generate_greedy",
    "generate_temperature",
    "generate_top_k",
    "generate_nucleus",
    "generateV2",
    "stream_generate",
    "TinyGPT",
    "TinyGPTConfig",
}


def test_the_notebook_api_is_exported_at_the_top():
    assert set(tinygpt.__all__) == NOTEBOOK_API
    assert all(callable(getattr(tinygpt, name)) for name in NOTEBOOK_API)


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
