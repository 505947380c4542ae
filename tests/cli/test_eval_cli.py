"""eval.py: a checkpoint's loss on its val split equals its training run's, on any split or text,
and every refusal is one line; once as a user runs it (one JSON line on stdout)."""

import json
import math
from pathlib import Path

import pytest
from helpers import TINY_RUN, TINY_TEXT, compose_task, one_error_line, script

from tinygpt.cli import eval as eval_cli
from tinygpt.cli.train import train

RECORD_KEYS = {
    "loss",
    "perplexity",
    "bits_per_char",
    "tokens",
    "skipped_characters",
    "split",
    "text",
    "ckpt_path",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run (dense, block_size 16) on TINY_TEXT: its run directory."""
    root = tmp_path_factory.mktemp("trained")
    text = root / "tiny.txt"
    text.write_text(TINY_TEXT)
    run_dir = root / "run"
    overrides = [*TINY_RUN, f"data.path={text}", "callbacks.metric_plots=null"]
    train(compose_task("train", [*overrides, "callbacks.sample_text=null"], run_dir))
    return run_dir


def evaluate(run_dir: Path, out_dir: Path, *overrides: str) -> dict:
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    cfg = compose_task("eval", [f"ckpt_path={ckpt}", *overrides], out_dir)
    return eval_cli.evaluate(cfg)


def test_the_val_split_gives_the_training_runs_final_val_loss(trained, tmp_path, capsys):
    record = evaluate(trained, tmp_path)
    summary = json.loads((trained / "summary.json").read_text())
    assert abs(record["loss"] - summary["final_val_loss"]) < 1e-4
    assert set(record) == RECORD_KEYS
    assert record["perplexity"] == pytest.approx(math.exp(record["loss"]), rel=1e-4)
    assert record["bits_per_char"] == pytest.approx(record["loss"] / math.log(2), abs=1e-5)
    n_val = len(TINY_TEXT) - int(0.9 * len(TINY_TEXT))  # the training run's split
    assert record["tokens"] == (n_val - 1) // 16 * 16  # every whole window of 16
    assert record["skipped_characters"] == 0 and record["split"] == "val"
    assert json.loads((tmp_path / "eval.json").read_text()) == record
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == record


def test_a_run_on_the_texts_first_characters_is_evaluated_on_its_own_splits(tmp_path):
    # data.max_chars (the notebook's 100k setting): the vocabulary and the splits are those of
    # the text's first characters; the rest of the text holds characters the model never saw.
    assert set("@~").isdisjoint(TINY_TEXT)
    text = tmp_path / "text.txt"
    text.write_text(TINY_TEXT + "@~" * 200)
    run_dir = tmp_path / "run"
    overrides = [*TINY_RUN, f"data.path={text}", f"data.max_chars={len(TINY_TEXT)}"]
    train(compose_task("train", [*overrides, "callbacks.metric_plots=null"], run_dir))
    record = evaluate(run_dir, tmp_path / "eval")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert abs(record["loss"] - summary["final_val_loss"]) < 1e-4
    assert record["skipped_characters"] == 0


def test_the_train_split_and_the_whole_text(trained, tmp_path):
    val = evaluate(trained, tmp_path / "val")
    train_split = evaluate(trained, tmp_path / "train", "split=train")
    whole = evaluate(trained, tmp_path / "all", "split=all")
    assert train_split["tokens"] == (int(0.9 * len(TINY_TEXT)) - 1) // 16 * 16
    assert whole["tokens"] == (len(TINY_TEXT) - 1) // 16 * 16
    # The whole text's loss is the token-weighted mean of its two parts (up to the windows cut
    # at the split point and the ends).
    mixed = (train_split["loss"] * train_split["tokens"] + val["loss"] * val["tokens"]) / (
        train_split["tokens"] + val["tokens"]
    )
    assert whole["loss"] == pytest.approx(mixed, abs=0.02)


def test_another_text_with_unknown_characters_is_refused_or_evaluated_without_them(
    trained, tmp_path, capsys
):
    other = tmp_path / "other.txt"
    other.write_text("First Citizen: café, naïve!\n" * 20)  # é, ï and ! are not in TINY_TEXT
    argv = [f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}", f"data.path={other}"]
    with pytest.raises(SystemExit) as exit_info:
        eval_cli.main([*argv, f"hydra.run.dir={tmp_path / 'refused'}"])
    assert exit_info.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "3 character(s) not in the vocabulary: '!', 'é', 'ï'" in line
    assert "skip_unknown=true" in line
    assert not (tmp_path / "refused" / "eval.json").exists()

    record = evaluate(trained, tmp_path / "skipped", f"data.path={other}", "skip_unknown=true")
    assert record["skipped_characters"] == 3 * 20
    assert record["text"] == str(other) and math.isfinite(record["loss"])


def test_without_ckpt_path_the_newest_runs_best_ckpt_is_evaluated_and_named(
    trained, tmp_path, capsys
):
    cfg = compose_task("eval", [f"paths.log_dir={trained.parent}"], tmp_path)
    record = eval_cli.evaluate(cfg)
    best = trained / "checkpoints" / "best.ckpt"
    assert record["ckpt_path"] == str(best)
    err = capsys.readouterr().err
    assert "using the newest run's best.ckpt (step 20, val loss " in err
    assert err.rstrip().endswith(f": {best}")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["paths.log_dir=/no/such/dir"], "no ckpt_path given and no run under /no/such/dir/"),
        (["ckpt_path=@ckpt", "split=test"], "split must be one of val, train, all, got 'test'"),
        (["ckpt_path=@ckpt", "skip_unknown=maybe"], "skip_unknown must be true or false"),
        (["ckpt_path=@ckpt", "data.batch_size=0"], "data.batch_size must be an integer >= 1"),
        (["ckpt_path=@ckpt", "data.path=/no/such/text.txt"], "data file not found"),
        (["ckpt_path=/no/such/last.ckpt"], "checkpoint not found: /no/such/last.ckpt"),
        (["ckpt_path=@summary"], "summary.json is not a readable checkpoint"),
        (["ckpt_path=@ckpt", "trainer=ddp"], "eval.py evaluates on one device"),
        (["no_such_key=1"], "Could not override 'no_such_key'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(trained, tmp_path, capsys, overrides, message):
    paths = {"@ckpt": trained / "checkpoints" / "last.ckpt", "@summary": trained / "summary.json"}
    argv = [o.replace(k, str(v)) for o in overrides for k, v in paths.items() if k in o] + [
        o for o in overrides if "@" not in o
    ]
    with pytest.raises(SystemExit) as exit_info:
        eval_cli.main([*argv, f"hydra.run.dir={tmp_path / 'eval'}"])
    assert exit_info.value.code == 2
    assert message in one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "eval" / "eval.json").exists()


@pytest.mark.slow
def test_eval_py_prints_one_json_line(trained, tmp_path):
    ckpt = trained / "checkpoints" / "best.ckpt"
    result = script("eval.py", f"ckpt_path={ckpt}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = result.stdout.strip().splitlines()  # log messages went to stderr
    record = json.loads(line)
    assert record == json.loads((tmp_path / "eval" / "eval.json").read_text())
    best = json.loads((trained / "summary.json").read_text())["best_val_loss"]
    assert abs(record["loss"] - best) < 1e-4
    assert "GPU available" in (tmp_path / "eval" / "eval.log").read_text()
