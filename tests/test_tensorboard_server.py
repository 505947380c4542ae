"""A real TensorBoard server over a two-run sweep, checked through its HTTP data API."""

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from test_train import TINY_RUN, run_train

from tinygpt.plots import read_scalars

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# This test checks the heatmap images, so it keeps the callback the other tiny runs switch off.
WITH_HEATMAPS = [o for o in TINY_RUN if not o.startswith("callbacks.attention_heatmap")]
SCALAR_TAGS = {"train/loss", "val/loss", "val/ppl", "attention/entropy/layer0_head0"}
HEATMAP_TAG = "attention/heatmaps"
CONFIG_TAG = (
    "config/text_summary"  # torch's SummaryWriter.add_text("config", ...) appends the suffix
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(base: str, route: str, **params: str) -> bytes:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{base}{route}{query}", timeout=10) as response:
        return response.read()


def get_json(base: str, route: str, **params: str):
    return json.loads(get(base, route, **params))


def wait_for_runs(base: str, server: subprocess.Popen, log: Path, count: int) -> list[str]:
    """Poll until the server answers and lists ``count`` runs with scalars loaded."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"tensorboard exited with {server.returncode}:\n{log.read_text()}")
        try:
            runs = get_json(base, "/data/runs")
            tags = get_json(base, "/data/plugin/scalars/tags")
            if len(runs) >= count and all("val/loss" in tags.get(run, {}) for run in runs):
                return runs
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
            pass  # not listening yet, or still loading
        time.sleep(0.5)
    pytest.fail(f"tensorboard did not list {count} runs in time:\n{log.read_text()}")


def test_tensorboard_serves_both_runs_of_a_sweep(python, tiny_text_file, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_train(
        python,
        "-m",
        *WITH_HEATMAPS,
        "trainer.max_steps=10",
        "trainer.val_check_interval=5",
        "seed=1,2",
        f"data.path={tiny_text_file}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stderr

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "tensorboard.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [
                python,
                *("-m", "tensorboard.main", "--logdir", str(sweep)),
                *("--host", "127.0.0.1", "--port", str(port)),
                "--load_fast=false",  # the Python reader: no data-server binary needed
                *("--reload_interval", "1"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        runs = sorted(wait_for_runs(base, server, log, count=2))
        # One run per job, named after the job directory (hence its overrides).
        assert len(runs) == 2 and len(set(runs)) == 2
        assert runs[0].startswith("0_") and "seed-1" in runs[0]
        assert runs[1].startswith("1_") and "seed-2" in runs[1]

        scalar_tags = get_json(base, "/data/plugin/scalars/tags")
        image_tags = get_json(base, "/data/plugin/images/tags")
        text_tags = get_json(base, "/data/plugin/text/tags")
        for run in runs:
            tags = set(scalar_tags[run])
            assert tags >= SCALAR_TAGS, tags
            assert "train/lr" in tags, tags
            assert HEATMAP_TAG in image_tags[run]
            assert CONFIG_TAG in text_tags[run]

            # What the server serves is what the run logged (read here with TensorBoard's reader).
            served = get_json(base, "/data/plugin/scalars/scalars", run=run, tag="val/loss")
            logged = read_scalars(sweep / run)["val/loss"]
            assert [(step, value) for _, step, value in served] == logged
            assert [step for step, _ in logged] == [4, 9]

            images = get_json(base, "/data/plugin/images/images", run=run, tag=HEATMAP_TAG)
            assert [image["step"] for image in images] == [5, 10]
            png = get(base, "/data/plugin/images/individualImage?" + images[-1]["query"])
            assert png.startswith(PNG_MAGIC) and len(png) > 10_000

            texts = get_json(base, "/data/plugin/text/text", run=run, tag=CONFIG_TAG)
            seed = 1 if "seed-1" in run else 2
            assert f"seed: {seed}" in texts[0]["text"]

            # The run's PNG plots, written at the end of training from the same events.
            plots = (sweep / run).parent / "plots"
            assert {"loss.png", "val_ppl.png", "lr.png"} <= {p.name for p in plots.iterdir()}
            assert all(p.read_bytes().startswith(PNG_MAGIC) for p in plots.iterdir())

        # The two seeds trained differently, and TensorBoard shows it.
        losses = [
            get_json(base, "/data/plugin/scalars/scalars", run=r, tag="val/loss") for r in runs
        ]
        assert losses[0][-1][2] != losses[1][-1][2]
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
