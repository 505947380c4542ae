"""A non-editable install (``pip install .``) holds the library only, not train.py, generate.py
or conf/: reports over finished runs work from it, and what needs the checkout says so."""

import os
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT

from tinygpt.cli import train as train_cli


@pytest.mark.slow
def test_an_installed_package_reports_on_runs_and_refuses_to_train_in_one_line(
    tiny_text_file, tmp_path
):
    source, site = tmp_path / "source", tmp_path / "site"
    shutil.copytree(ROOT / "tinygpt", source / "tinygpt", ignore=shutil.ignore_patterns("__py*"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    install += ["--no-build-isolation", "--target", str(site), str(source)]
    subprocess.run(install, cwd=tmp_path, check=True, capture_output=True, timeout=300)
    assert (site / "tinygpt" / "cli" / "train.py").is_file() and not (site / "conf").exists()

    run_dir = tmp_path / "run"  # a finished run, trained here from the checkout
    tiny = ["trainer=cpu", "trainer.max_steps=4", "trainer.val_check_interval=2"]
    tiny += ["model.block_size=16", "data.batch_size=8", "callbacks.attention_heatmap=null"]
    train_cli.main([*tiny, f"data.path={tiny_text_file}", f"hydra.run.dir={run_dir}"])

    def report(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tinygpt", "report", *args],
            cwd=tmp_path,  # PYTHONPATH first: the installed copy, not this checkout
            env={**os.environ, "PYTHONPATH": str(site)},
            capture_output=True,
            text=True,
            timeout=300,
        )

    done = report(str(run_dir), "--out", "out", "--max-new-tokens", "8")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| dense | 1 (1337) | 4 |" in (tmp_path / "out" / "report.md").read_text()
    refused = report("--sweep", "sweep", "--run", "seed=1,2", "--out", "out")
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"error: no training configs at {site / 'conf'}: ")
    assert "need a checkout of the TinyGPT repository" in refused.stderr
    assert refused.stderr.count("\n") == 1 and not (tmp_path / "sweep").exists()
