"""notebooks/tinygpt.ipynb: committed without outputs, and run top to bottom in quick mode under a
real Jupyter kernel, from a scratch directory."""

import json
import shutil

import pytest
from helpers import ROOT

NOTEBOOK = ROOT / "notebooks" / "tinygpt.ipynb"


def test_the_notebook_is_committed_without_outputs():
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom_in_quick_mode(tmp_path, monkeypatch, shakespeare_cache):
    nbclient = pytest.importorskip(
        "nbclient", reason='the notebook extra: pip install -e ".[notebook]"'
    )
    nbformat = pytest.importorskip("nbformat")
    root = tmp_path / "root"
    (root / "data").mkdir(parents=True)
    shutil.copy(shakespeare_cache / "tinyshakespeare.txt", root / "data")
    monkeypatch.setenv("TINYGPT_QUICK", "1")  # the kernel inherits this environment
    monkeypatch.setenv("TINYGPT_ROOT", str(root))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()  # raises CellExecutionError on any cell's error
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 7  # losses, comparison, expert load and routing, attention
    tables = "".join(o["data"].get("text/markdown", "") for o in outputs if "data" in o)
    for strategy in ("greedy", "temperature 0.5", "temperature 1.5", "top-k 5", "nucleus 0.9"):
        assert f"| {strategy} |" in tables
    assert "| combined |" in tables and "concordant" in tables
    assert len(list((root / "outputs" / "runs").iterdir())) == 2  # dense and MoE
