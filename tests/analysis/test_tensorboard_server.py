"""A real TensorBoard server over a training sweep and a generate sweep, checked through its HTTP
data API as the dashboards read it: scalars, images, text, custom scalars and HParams."""

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from helpers import PNG_MAGIC, TINY_RUN, run_generate, run_train
from lightning.pytorch.loggers import TensorBoardLogger

from tinygpt.analysis.plots import read_scalars

# This test checks the heatmap images, so it keeps the callback the other tiny runs switch off
# (at every second validation: the pictures cost more than the training); not the MoE pictures.
WITH_HEATMAPS = [o for o in TINY_RUN if not o.startswith("callbacks.attention_heatmap")] + [
    "callbacks.attention_heatmap.every_n_validations=2",
    "callbacks.moe_dashboard=null",
]
SCALAR_TAGS = {"train/loss", "val/loss", "val/ppl", "attention/entropy/layer0_head0"}
HEATMAP_TAG = "attention/heatmaps"
# torch's SummaryWriter.add_text(tag, ...) appends "/text_summary".
CONFIG_TAG, SAMPLE_TAG, SAMPLES_TAG = (
    "config/text_summary",
    "sample/text_summary",
    "samples/text_summary",
)
TRAINING_METRICS = {
    "summary/best_val_loss",
    "summary/final_val_loss",
    "summary/train_tokens_per_second",
    "summary/wall_seconds",
    "summary/expert_load_min_over_max",
}
GENERATION_METRICS = {  # self_similarity needs two samples: these jobs write one
    "samples/sampled_entropy",
    "samples/known_word_share",
    "samples/nll_per_char",
    "samples/tokens_per_second",
}
ALL_STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


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


def post_json(base: str, route: str, body: dict):
    """POST a JSON request as TensorBoard's HParams frontend does (text/plain body)."""
    request = urllib.request.Request(
        f"{base}{route}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "text/plain"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def experiment(base: str) -> dict:
    body = {"experimentName": "", "hparamsLimit": 1000, "includeMetrics": True}
    return post_json(base, "/data/plugin/hparams/experiment", body)


def session_groups(base: str, exp: dict, **column_options: dict) -> list[dict]:
    """Every session group, with every hparam and metric column; ``column_options`` adds
    filters or a sort order to the named columns (``{"seed": {"order": "ORDER_ASC"}}``)."""
    columns = [{"hparam": h["name"]} for h in exp["hparamInfos"]]
    columns += [{"metric": m["name"]} for m in exp["metricInfos"]]
    for column in columns:
        name = column.get("hparam") or column["metric"]["tag"]
        column.update(includeInResult=True, **column_options.get(name, {}))
    body = {
        "experimentName": "",
        "allowedStatuses": ALL_STATUSES,
        "colParams": columns,
        "startIndex": 0,
        "sliceSize": 1000,
    }
    return post_json(base, "/data/plugin/hparams/session_groups", body)["sessionGroups"]


def metric_values(group: dict) -> dict[str, float]:
    return {m["name"]["tag"]: m["value"] for m in group["metricValues"]}


def wait_for_sessions(base: str, server: subprocess.Popen, log: Path, count: int) -> dict:
    """Poll until the server lists ``count`` HParams sessions, each with its metrics loaded;
    returns the experiment."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"tensorboard exited with {server.returncode}:\n{log.read_text()}")
        try:
            exp = experiment(base)
            groups = session_groups(base, exp) if exp.get("hparamInfos") else []
            expected = {"train": TRAINING_METRICS, "generate": GENERATION_METRICS}
            if len(groups) == count and all(
                set(metric_values(g)) >= expected[g["hparams"]["kind"]] for g in groups
            ):
                return exp
        except (urllib.error.URLError, ConnectionError, json.JSONDecodeError, KeyError):
            pass  # not listening yet, or still loading
        time.sleep(0.5)
    pytest.fail(f"tensorboard did not list {count} sessions in time:\n{log.read_text()}")


def jobs_of(sweep: Path, marker: str) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if (p / marker).is_file()), key=lambda p: p.name)


def job_overrides(job: Path) -> dict[str, str]:
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    return dict(o.split("=", 1) for o in overrides)


@pytest.fixture
def sweeps(tiny_text_file, tmp_path) -> tuple[Path, Path]:
    """``train.py -m model=moe model.num_experts=2,4 seed=1,2`` (tiny), then
    ``generate.py -m decoder=temperature decoder.temperature=0.5,1.0,1.5`` on its first job."""
    train = tmp_path / "logs" / "train"
    result = run_train(
        "-m",
        *WITH_HEATMAPS,
        "trainer.max_steps=10",
        "trainer.val_check_interval=5",
        "model=moe",
        "model.num_experts=2,4",
        "seed=1,2",
        f"data.path={tiny_text_file}",
        f"hydra.sweep.dir={train}",
    )
    assert result.returncode == 0, result.stderr
    # The job's own path, as train.py wrote it: job directory names paste back unquoted.
    ckpt = jobs_of(train, "summary.json")[0] / "checkpoints" / "best.ckpt"
    generate = tmp_path / "logs" / "generate"
    result = run_generate(
        "-m",
        f"ckpt_path={ckpt}",
        "decoder=temperature",
        "decoder.temperature=0.5,1.0,1.5",
        "max_new_tokens=60",
        "prompt=First",
        f"hydra.sweep.dir={generate}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return train, generate


@contextmanager
def tensorboard(python: str, logdir: Path, log: Path, load_fast: str = "false"):
    """A TensorBoard server over ``logdir``, as ``tensorboard --logdir ...`` serves it; its URL.
    ``load_fast``: false, the Python reader; true, the Rust data server (TensorBoard's default
    where it is installed, as here)."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                python,
                *("-m", "tensorboard.main", "--logdir", str(logdir)),
                *("--host", "127.0.0.1", "--port", str(port)),
                f"--load_fast={load_fast}",
                *("--reload_interval", "1"),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def server(sweeps, python, tmp_path):
    """A TensorBoard over both sweeps, with the Python reader (no data-server binary needed)."""
    log = tmp_path / "tensorboard.log"
    with tensorboard(python, tmp_path / "logs", log) as (base, process):
        yield base, process, log


@pytest.mark.slow
@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_a_resumed_runs_steps_are_served_once_by_both_readers(python, tmp_path, load_fast):
    # As train.py logs a run killed after its checkpoint at step 10, then resumed: each
    # attempt's events start with purge_step (0 for the first; the Python reader ignores a run's
    # first purge), and both of TensorBoard's readers then hide the killed attempt's 10..14.
    for purge_step, steps, value in ((0, range(15), 4.0), (10, range(10, 20), 3.0)):
        logger = TensorBoardLogger(tmp_path / "logs", name="", version="tb", purge_step=purge_step)
        for step in steps:
            logger.log_metrics({"train/loss": value}, step=step)
        logger.finalize("success")
        time.sleep(1.01 - time.time() % 1)  # the next attempt's event file is named later
    log = tmp_path / "tensorboard.log"
    with tensorboard(python, tmp_path / "logs", log, load_fast) as (base, process):
        deadline = time.monotonic() + 60
        served = []
        while not served and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            try:
                served = get_json(base, "/data/plugin/scalars/scalars", run="tb", tag="train/loss")
            except (urllib.error.URLError, ConnectionError, json.JSONDecodeError):
                time.sleep(0.5)
        time.sleep(2)  # another reload: both files are read
        served = get_json(base, "/data/plugin/scalars/scalars", run="tb", tag="train/loss")
    assert [(step, value) for _, step, value in served] == [
        (step, 4.0 if step < 10 else 3.0) for step in range(20)
    ]


@pytest.mark.slow
def test_tensorboard_serves_a_training_and_a_generate_sweep(sweeps, server):
    base, process, log = server
    train, generate = sweeps
    train_jobs = jobs_of(train, "summary.json")
    generate_jobs = jobs_of(generate, "samples.json")
    assert len(train_jobs) == 4 and len(generate_jobs) == 3
    exp = wait_for_sessions(base, process, log, count=7)
    plugins = get_json(base, "/data/plugins_listing")
    assert all(plugins[name]["enabled"] for name in ("hparams", "custom_scalars", "text"))

    # Each job is one run (its HParams session lives in its events), listed once.
    runs = get_json(base, "/data/runs")
    assert sorted(runs) == sorted(run_name(job) for job in train_jobs + generate_jobs)
    check_training_runs(base, train_jobs)
    check_hparams(base, exp, train_jobs, generate_jobs, generate)
    check_custom_scalars(base, train_jobs)
    check_generate_text(base, generate_jobs)


def run_name(job: Path) -> str:
    return f"{job.parent.name}/{job.name}/tb"


def check_training_runs(base: str, jobs: list[Path]) -> None:
    """Each training job is its own run with its scalars, heatmaps, config and samples."""
    scalar_tags = get_json(base, "/data/plugin/scalars/tags")
    image_tags = get_json(base, "/data/plugin/images/tags")
    text_tags = get_json(base, "/data/plugin/text/tags")
    losses = []
    for job in jobs:
        run = run_name(job)
        assert set(scalar_tags[run]) >= SCALAR_TAGS | {"train/lr/decay", "train/lr/no_decay"}
        assert HEATMAP_TAG in image_tags[run]
        assert {CONFIG_TAG, SAMPLE_TAG} <= set(text_tags[run])

        # What the server serves is what the run logged (read here with TensorBoard's reader).
        served = get_json(base, "/data/plugin/scalars/scalars", run=run, tag="val/loss")
        logged = read_scalars(job)["val/loss"]
        assert [(step, value) for _, step, value in served] == logged
        assert [step for step, _ in logged] == [4, 9]
        losses.append(logged[-1][1])

        images = get_json(base, "/data/plugin/images/images", run=run, tag=HEATMAP_TAG)
        assert [image["step"] for image in images] == [10]  # every second validation
        png = get(base, "/data/plugin/images/individualImage?" + images[-1]["query"])
        assert png.startswith(PNG_MAGIC) and len(png) > 10_000

        texts = get_json(base, "/data/plugin/text/text", run=run, tag=CONFIG_TAG)
        assert f"seed: {job_overrides(job)['seed']}" in texts[0]["text"]
        # The model's sample at each validation: the Text tab shows it learning.
        samples = get_json(base, "/data/plugin/text/text", run=run, tag=SAMPLE_TAG)
        assert [s["step"] for s in samples] == [5, 10]
        assert "step 10, temperature 0.8, seed 1:" in samples[-1]["text"]
        assert "First Citizen:" in samples[-1]["text"]

        # The run's PNG plots, written at the end of training from the same events.
        plots = job / "plots"
        assert {"loss.png", "val_ppl.png", "lr.png"} <= {p.name for p in plots.iterdir()}
        assert all(p.read_bytes().startswith(PNG_MAGIC) for p in plots.iterdir())
    assert len(set(losses)) == len(losses)  # the jobs trained differently, and it shows


def check_hparams(
    base: str, exp: dict, train_jobs: list[Path], generate_jobs: list[Path], generate: Path
) -> None:
    """One HParams table: a row per job, the swept values as typed columns, the metrics that
    summary.json and the generate sweep's summary hold, sortable and filterable."""
    infos = {h["name"]: h for h in exp["hparamInfos"]}
    for swept in ("model.num_experts", "seed", "decoder.temperature"):
        assert infos[swept]["type"] == "DATA_TYPE_FLOAT64" and infos[swept]["differs"], swept
    assert infos["model"]["domainDiscrete"] == ["moe"]  # the group choice, from model=moe
    assert sorted(infos["kind"]["domainDiscrete"]) == ["generate", "train"]
    assert infos["model.bias"]["type"] == "DATA_TYPE_BOOL"
    # The metric columns: every scalar of the runs (last value), summary.json's among them.
    metrics = {m["name"]["tag"] for m in exp["metricInfos"]}
    assert metrics >= TRAINING_METRICS | GENERATION_METRICS | {"val/loss", "train/loss"}
    assert all(m["name"]["group"] == "" for m in exp["metricInfos"])

    groups = session_groups(base, exp)
    # Each job is its own session, in its own group (row).
    sessions = [s["name"] for g in groups for s in g["sessions"]]
    expected = {run_name(job) for job in train_jobs + generate_jobs}
    assert len(sessions) == len(groups) == 7 and set(sessions) == expected
    by_session = {g["sessions"][0]["name"]: g for g in groups}

    for job in train_jobs:
        group = by_session[run_name(job)]
        overrides = job_overrides(job)
        assert group["hparams"]["model.num_experts"] == int(overrides["model.num_experts"])
        assert group["hparams"]["seed"] == int(overrides["seed"])
        assert group["hparams"]["model.n_layer"] == 2 and group["hparams"]["kind"] == "train"
        summary = json.loads((job / "summary.json").read_text())
        values = metric_values(group)
        for tag in TRAINING_METRICS:  # one source: what summary.json holds
            assert values[tag] == pytest.approx(summary[tag.split("/")[1]], rel=1e-6), tag
        assert 0 <= values["summary/expert_load_min_over_max"] <= 1

    summaries = {j["job_dir"]: j for j in json.loads((generate / "summary.json").read_text())}
    for job in generate_jobs:
        group = by_session[run_name(job)]
        record = json.loads((job / "samples.json").read_text())
        assert group["hparams"]["decoder.temperature"] == record["decoder"]["temperature"]
        assert group["hparams"]["decoder"] == "temperature"
        assert group["hparams"]["prompt"] == "First"
        values = metric_values(group)
        for tag, value in summaries[job.name]["measures"].items():  # as summary.md has them
            assert values[tag] == pytest.approx(value, rel=1e-6), tag
        assert 0 <= values["samples/known_word_share"] <= 1
        assert values["samples/nll_per_char"] > 0
    temperatures = sorted(
        by_session[run_name(j)]["hparams"]["decoder.temperature"] for j in generate_jobs
    )
    assert temperatures == [0.5, 1.0, 1.5]

    # Sorted by best val loss, training rows only: ascending, as the dashboard shows them.
    rows = session_groups(
        base,
        exp,
        kind={"filterDiscrete": ["train"]},
        **{"summary/best_val_loss": {"order": "ORDER_ASC"}},
    )
    best = [metric_values(g)["summary/best_val_loss"] for g in rows]
    assert len(best) == 4 and best == sorted(best)
    # Filtered on a swept value (rows without the column pass such a filter: hence kind too).
    rows = session_groups(
        base,
        exp,
        kind={"filterDiscrete": ["generate"]},
        **{"decoder.temperature": {"filterInterval": {"minValue": 0.9, "maxValue": 2}}},
    )
    assert sorted(g["hparams"]["decoder.temperature"] for g in rows) == [1.0, 1.5]


def check_custom_scalars(base: str, jobs: list[Path]) -> None:
    """One chart per layer gathers that layer's heads, and one its experts' loads."""
    layout = get_json(base, "/data/plugin/custom_scalars/layout")
    categories = {c["title"]: c["chart"] for c in layout["category"]}
    entropy = categories["attention entropy per head (nats)"]
    loads = categories["MoE expert load (share of tokens)"]
    assert [c["title"] for c in entropy] == [c["title"] for c in loads] == ["layer 0", "layer 1"]
    assert "attention distance per head (characters back)" in categories
    for job in jobs:
        experts = int(job_overrides(job)["model.num_experts"])
        for chart, expected in (
            (entropy[1], {f"attention/entropy/layer1_head{h}" for h in range(4)}),
            (loads[0], {f"moe/layer0/load/expert{e}" for e in range(experts)}),
        ):
            [regex] = chart["multiline"]["tag"]
            route = "/data/plugin/custom_scalars/scalars"
            served = get_json(base, route, run=run_name(job), tag=regex)
            assert served["regex_valid"] and set(served["tag_to_events"]) == expected


def check_generate_text(base: str, jobs: list[Path]) -> None:
    """Each generate job's samples in the Text tab, with its decoder."""
    text_tags = get_json(base, "/data/plugin/text/tags")
    for job in jobs:
        assert SAMPLES_TAG in text_tags[run_name(job)]
        [entry] = get_json(base, "/data/plugin/text/text", run=run_name(job), tag=SAMPLES_TAG)
        temperature = json.loads((job / "samples.json").read_text())["decoder"]["temperature"]
        assert f"temperature={temperature}" in entry["text"]
        assert "sample 1 of 1:" in entry["text"] and "First" in entry["text"]
