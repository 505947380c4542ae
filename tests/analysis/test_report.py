"""The decoding comparison and the dense-vs-MoE report: aggregation on hand-made runs, the
decoding report on a tiny checkpoint, the README rewrite, and the command end to end."""

import json
import math
from pathlib import Path

import pytest
import yaml
from helpers import save_checkpoint
from torch.utils.tensorboard import SummaryWriter

from tinygpt.analysis import report
from tinygpt.analysis.decoding import (
    METRICS,
    NOTEBOOK_TABLE,
    compare_decoding,
    decoding_table,
    write_decoding_report,
)
from tinygpt.analysis.runs import find_runs, load_run, logged_expert_load, training_text
from tinygpt.analysis.verdicts import Stat
from tinygpt.analysis.writing import replace_section
from tinygpt.cli import commands
from tinygpt.errors import DataError

TINY_RUN = [
    "trainer=cpu",
    "trainer.max_steps=10",
    "trainer.val_check_interval=5",
    "trainer.log_every_n_steps=5",
    "model.block_size=16",
    "data.batch_size=8",
]


def make_run(path: Path, ffn: str, seed: int, overrides=(), **summary) -> Path:
    """A run directory with summary.json and the .hydra files a Hydra job writes."""
    (path / ".hydra").mkdir(parents=True)
    values = {
        "best_val_loss": 2.0,
        "final_val_loss": 2.1,
        "steps": 10,
        "tokens_seen": 100,
        "wall_seconds": 10.0,
        "train_tokens_per_second": 1000,
        "parameters": 5000,
    }
    values.update(summary)
    (path / "summary.json").write_text(json.dumps(values))
    config = {"seed": seed, "model": {"ffn": ffn, "n_layer": 2}, "data": {"path": None}}
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    task = [*overrides, f"seed={seed}", "data.path=/x.txt"]
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(task))
    return path


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    # MoE jobs first and job 10 after job 2: groups and jobs must still come out in order.
    make_run(
        sweep / "0_model=moe,seed=1",
        "moe",
        1,
        ["model=moe"],
        best_val_loss=1.5,
        final_val_loss=1.6,
        wall_seconds=30.0,
        train_tokens_per_second=600,
        parameters=9000,
    )
    make_run(
        sweep / "1_model=moe,seed=2",
        "moe",
        2,
        ["model=moe"],
        best_val_loss=2.5,
        final_val_loss=2.6,
        wall_seconds=30.0,
        train_tokens_per_second=600,
        parameters=9000,
    )
    for job, seed, loss, wall in ((2, 1, 1.0, 10.0), (10, 3, 3.0, 30.0), (3, 2, 2.0, 20.0)):
        make_run(
            sweep / f"{job}_model=dense,seed={seed}",
            "dense",
            seed,
            ["model=dense"],
            best_val_loss=loss,
            final_val_loss=loss + 0.5,
            wall_seconds=wall,
        )
    (sweep / "multirun.yaml").write_text("{}\n")
    return sweep


def test_groups_and_statistics_over_seeds(sweep):
    runs = find_runs([sweep])
    assert [r.dir.name.split("_")[0] for r in runs] == ["0", "1", "2", "3", "10"]
    dense, moe = report.group_runs(runs)
    assert (dense.label, moe.label) == ("dense", "moe")
    assert [r.seed for r in dense.runs] == [1, 2, 3]
    assert dense.stat("best_val_loss") == Stat(2.0, 1.0, 3)
    assert dense.stat("final_val_loss") == Stat(2.5, 1.0, 3)
    assert dense.stat("wall_seconds") == Stat(20.0, 10.0, 3)
    assert moe.stat("best_val_loss").std == pytest.approx(math.sqrt(0.5))
    assert moe.stat("train_tokens_per_second") == Stat(600.0, 0.0, 2)
    table = report.runs_table([dense, moe])
    assert (
        "| dense | 3 (1, 2, 3) | 10 | 2.000 ± 1.000 | 2.500 ± 1.000 | 20.0 ± 10.0 | 1.00 |" in table
    )
    # Ratios to the first group: wall 30 / 20, tokens/s 600 / 1000.
    assert "| 1.50 |" in table and "| 0.60 |" in table and "| 9000 |" in table


def test_one_seed_has_no_std_and_groups_without_kinds_use_overrides(tmp_path):
    runs = [
        load_run(make_run(tmp_path / "a", "dense", 1, ["model.n_layer=2", "x=1"])),
        # Where a run read and wrote (paths.*) does not make it another group.
        load_run(
            make_run(tmp_path / "b", "dense", 2, ["model.n_layer=2", "x=1", "paths.data_dir=/d"])
        ),
        load_run(make_run(tmp_path / "c", "dense", 1, ["model.n_layer=4", "x=1"])),
    ]
    groups = report.group_runs(runs)
    assert [g.label for g in groups] == ["model.n_layer=2", "model.n_layer=4"]
    assert [len(g.runs) for g in groups] == [2, 1]
    assert "| model.n_layer=4 | 1 (1) | 10 | 2.000 | 2.100 | 10.0 |" in report.runs_table(groups)
    # Kinds and other overrides both differ: the kind, then the overrides besides model=.
    mixed = [
        make_run(tmp_path / f"m{i}", ffn, 1, [f"model={ffn}", f"model.n_layer={n}"])
        for i, (ffn, n) in enumerate((("moe", 2), ("dense", 2), ("dense", 4)))
    ]
    groups = report.group_runs([load_run(p) for p in mixed])
    labels = ["dense model.n_layer=2", "dense model.n_layer=4", "moe model.n_layer=2"]
    assert [g.label for g in groups] == labels


def test_expert_load_is_read_from_events_and_absent_for_dense(tmp_path):
    moe = make_run(tmp_path / "moe", "moe", 1)
    writer = SummaryWriter(str(moe / "tb"))
    for step, shares in ((10, (0.9, 0.1)), (20, (0.6, 0.4))):
        for expert, share in enumerate(shares):
            writer.add_scalar(f"moe/layer0/load/expert{expert}", share, step)
            writer.add_scalar(f"moe/layer1/load/expert{expert}", 0.5, step)
    writer.add_scalar("val/loss", 2.0, 20)
    writer.close()
    dense = make_run(tmp_path / "dense", "dense", 1)
    load = logged_expert_load(load_run(moe))
    assert load == {0: {0: pytest.approx(0.6), 1: pytest.approx(0.4)}, 1: {0: 0.5, 1: 0.5}}
    assert logged_expert_load(load_run(dense)) == {}
    groups = [report.Group("dense", []), report.Group("moe", [], expert_load=load)]
    section = report.expert_load_section(groups)
    assert "**moe**" in section and "| 0 | 0.600 | 0.400 | 1.50 |" in section
    assert "dense" not in section
    assert report.expert_load_section(groups[:1]) == ""


def test_readme_section_is_replaced_between_markers_only():
    text = "# T\n\nintro\n<!-- results:start -->\nold\nstuff\n<!-- results:end -->\n\n## After\n"
    new = replace_section(text, "## Results\n\nnew\n")
    assert (
        new == "# T\n\nintro\n<!-- results:start -->\n## Results\n\nnew\n<!-- results:end -->"
        "\n\n## After\n"
    )
    assert replace_section(new, "again") == text.replace("old\nstuff", "again")
    with pytest.raises(DataError, match="results:start"):
        replace_section("# no markers\n", "x")
    with pytest.raises(DataError):
        replace_section("<!-- results:end -->\n<!-- results:start -->\n", "x")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    text = root / "train.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20)
    return save_checkpoint(root / "best.ckpt", {"data": {"path": str(text)}}, n_head=2)


def test_decoding_report_scores_continuations_per_cell_and_writes_outputs(tiny_ckpt, tmp_path):
    from tinygpt.checkpoint import load_checkpoint, load_model

    model = load_model(tiny_ckpt)
    text = training_text(load_checkpoint(tiny_ckpt)["tinygpt"]["config"])
    assert text.startswith("First Citizen:")
    models = [("seed 1", model), ("seed 2", model)]
    results = compare_decoding(models, text, num_samples=3, max_new_tokens=24)
    assert [r.row.name for r in results] == [row.name for row in NOTEBOOK_TABLE]
    for r in results:
        assert len(r.cells) == 2 * 3  # models x prompts
        assert len(r.samples) == 2 * 3 * 3  # ... x samples
        assert all(len(s["text"]) == 24 for s in r.samples)  # the continuation only
        assert set(r.metrics) == set(METRICS)
        assert r.metrics["nll"] > 0
        cell = r.cells[0]
        assert (cell["model"], cell["prompt"]) == ("seed 1", "ROMEO:\n")
        first = [s for s in r.samples if s["model"] == "seed 1" and s["prompt"] == cell["prompt"]]
        assert cell["entropy"] == pytest.approx(sum(s["entropy"] for s in first) / 3)
    greedy = results[0]
    assert greedy.metrics["entropy"] == 0.0 and greedy.metrics["self_similarity"] == 1.0
    assert greedy.stat("self_similarity").std == 0.0
    hot = results[2]  # temperature 1.5: the most choice at each step, samples unlike each other
    assert hot.metrics["entropy"] > results[1].metrics["entropy"] > 0
    assert hot.metrics["self_similarity"] < 1.0
    table = decoding_table(results)
    assert len(table.strip().splitlines()) == 2 + len(NOTEBOOK_TABLE)
    assert "| greedy | high / low | 0.000 ± 0.000 | 1.000 ± 0.000 |" in table
    assert "| temperature 0.5 | high / medium |" in table
    paths = write_decoding_report(results, tmp_path / "out", tmp_path / "tb")
    assert paths["plot"].stat().st_size > 10_000
    saved = json.loads(paths["samples"].read_text())
    assert saved[5]["settings"] == {"temperature": 0.8, "top_k": 10, "top_p": 0.9}
    assert saved[5]["notebook_label"] == "combined (T 0.8, top-k 10, top-p 0.9)"
    assert saved[0]["metrics"]["entropy"] == {"mean": 0.0, "std": 0.0}
    assert len(saved[0]["cells"]) == 6 and len(saved[0]["samples"]) == 18
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_run_trains_the_sweep_in_this_process_then_writes_the_pages(
    tiny_text_file, tmp_path, capsys
):
    sweep = tmp_path / "sweep"
    readme = tmp_path / "README.md"
    readme.write_text("# X\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\n## Tail\n")
    out, page = tmp_path / "docs" / "results", tmp_path / "docs" / "results.md"
    overrides = " ".join([*TINY_RUN, "seed=1,2", f"data.path={tiny_text_file}"])
    args = [
        "report",
        "--sweep",
        str(sweep),
        "--run",
        overrides,
        "--out",
        str(out),
        "--readme",
        str(readme),
    ]
    args += ["--results", str(page), "--max-new-tokens", "24", "--tb-dir", str(tmp_path / "tb")]
    assert commands.main(args) == 0
    assert "running: python train.py -m trainer=cpu " in capsys.readouterr().out
    assert [p.parent.name for p in sorted(sweep.glob("*/summary.json"))] == ["0_seed-1", "1_seed-2"]
    for name in (
        "report.md",
        "val_loss.png",
        "decoding.png",
        "decoding.md",
        "decoding_samples.json",
    ):
        assert (out / name).is_file(), name
    text = (out / "report.md").read_text()
    assert "| dense | 2 (1, 2) | 10 |" in text and "Expert load" not in text
    assert "| dense | 0 | " in text  # the attention table, layer 0
    assert "python -m tinygpt claims" in text  # where the notebook's claims are
    new = readme.read_text()
    assert new.startswith(
        "# X\n\n<!-- results:start -->\nRegenerate with `python -m tinygpt report"
    )
    assert "\nold\n" not in new and "### Runs" in new
    assert new.endswith("<!-- results:end -->\n\n## Tail\n")
    assert "](docs/results/val_loss.png)" in new
    # The results page: its own regenerate command, its sections, the pictures beside it.
    results = page.read_text()
    assert results.startswith(
        f"# Results\n\nRegenerate with `python -m tinygpt report --sweep {sweep}"
    )
    assert f"--results {page}`" in results and "\n## Runs\n" in results
    assert "](results/val_loss.png)" in results and "](results/decoding.png)" in results


def in_process(capfd, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        commands.main(["report", *args])
    return exit_info.value.code, capfd.readouterr().err  # the file descriptor: train.py's too


@pytest.mark.parametrize(
    "case", ["missing", "empty", "not_a_checkpoint", "readme", "run_without_sweep", "run_fails"]
)
def test_bad_input_is_one_error_line_and_exit_2(case, tmp_path, capfd):
    out = str(tmp_path / "out")
    if case == "missing":
        args, message = [str(tmp_path / "nope")], "not found"
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        args, message = ["--sweep", str(tmp_path / "empty")], "holds no runs"
    elif case == "not_a_checkpoint":
        run = make_run(tmp_path / "run", "dense", 1)
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "best.ckpt").write_text("not a checkpoint")
        args, message = [str(run)], "not a readable checkpoint"
    elif case == "run_without_sweep":
        args, message = [str(tmp_path), "--run", "seed=1,2"], "--run needs --sweep"
    elif case == "run_fails":
        # train.py refuses the override with its own error line; the report adds none. (The
        # sweep directory's '=' reaches train.py quoted, or Hydra would complain of it first.)
        args = ["--sweep", str(tmp_path / "a=b" / "sweep"), "--run", "model=no_such_model"]
        message = "no_such_model"
    else:
        make_run(tmp_path / "sweep" / "0_seed=1", "dense", 1)
        (tmp_path / "README.md").write_text("# no markers\n")
        args = ["--sweep", str(tmp_path / "sweep"), "--readme", str(tmp_path / "nope.md")]
        message = "README not found"
    code, err = in_process(capfd, *args, "--out", out)
    assert code == 2
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_decoding_command_on_a_checkpoint_and_on_a_bad_one(tiny_ckpt, tmp_path, capfd):
    out = tmp_path / "out"
    args = ["decoding-report", str(tiny_ckpt), "--out", str(out), "--max-new-tokens", "8"]
    assert commands.main(args) == 0
    assert "| combined | high / high |" in capfd.readouterr().out
    assert (out / "decoding.png").is_file()
    bad = tmp_path / "bad.ckpt"
    bad.write_text("no")
    for args in ([str(bad)], [str(tiny_ckpt), "--max-new-tokens", "1"]):
        with pytest.raises(SystemExit) as exit_info:
            commands.main(["decoding-report", *args, "--out", str(out)])
        err = capfd.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
