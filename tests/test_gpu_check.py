"""benchmarks/gpu_check.sh refuses cleanly where there is no GPU (CI, this machine kind)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the script would run")
def test_gpu_check_without_a_gpu_says_so_in_one_line():
    # The script calls `python`: make that this interpreter, which has torch.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    result = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": path},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: no CUDA GPU visible to torch; benchmarks/gpu_check.sh needs one"
    ]
    assert result.stdout == ""
