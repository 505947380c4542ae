"""``python -m tinygpt claims`` end to end on a tiny text (in this process): both sweeps trained,
every claim measured with a verdict its own numbers give, the page written; a second call keeps
the finished sweeps, one with a job undone resumes with ``ckpt_path=last``; bad input refused."""

import json
from pathlib import Path

import pytest

from tinygpt.analysis.verdicts import AGREES, DISAGREES, WITHIN_NOISE, Stat, compare
from tinygpt.cli import commands

# Two seeds (the fewest the command accepts) of a tiny model on the tiny text: the text's first
# 1,500 characters give 1,350 training characters, an epoch of 11 steps of 8 x 16.
TINY = (
    "model.block_size=16 model.n_layer=1 model.n_head=2 model.n_embd=16 data.batch_size=8 "
    "data.max_chars=1500 trainer.log_every_n_steps=5"
)


def claims_args(tmp_path: Path, text: Path) -> list[str]:
    return [
        "claims",
        "--sweeps",
        str(tmp_path / "sweeps"),
        "--out",
        str(tmp_path / "docs" / "results"),
        "--results",
        str(tmp_path / "docs" / "results.md"),
        "--seeds",
        "1,2",
        "--epochs",
        "3",
        "--steps",
        "10",
        "--num-samples",
        "2",
        "--max-new-tokens",
        "12",
        "--overrides",
        f"{TINY} data.path={text}",
    ]


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory):
    """One tiny regeneration, shared by the tests that read what it wrote."""
    tmp_path = tmp_path_factory.mktemp("claims")
    text = tmp_path / "tiny.txt"
    text.write_text(("ROMEO:\nBut soft, what light through yonder window breaks?\n\n") * 40)
    args = claims_args(tmp_path, text)
    assert commands.main(args) == 0
    return tmp_path, args


def test_both_settings_are_trained_and_every_claim_has_a_verdict_its_numbers_give(regenerated):
    tmp_path, _ = regenerated
    sweeps = tmp_path / "sweeps"
    for name in ("full", "notebook_100k"):
        jobs = sorted(p.parent.name for p in (sweeps / name).glob("*/summary.json"))
        assert jobs == [
            "0_model-dense+seed-1",
            "1_model-dense+seed-2",
            "2_model-moe+seed-1",
            "3_model-moe+seed-2",
        ]
    numbers = json.loads((tmp_path / "docs" / "results" / "claims.json").read_text())
    keys = [c["key"] for c in numbers["claims"]]
    for key in ("converges", "overfits", "moe_loss", "moe_heads", "moe_time"):
        assert key in keys
    assert {"dense_uniform", "dense_adjacent"} <= set(keys)
    for claim in numbers["claims"]:
        assert claim["verdict"] in (AGREES, DISAGREES, WITHIN_NOISE)
        if claim["key"] == "moe_loss":  # MoE lower than dense, by the stated rule
            moe, dense = Stat(**claim["numbers"]["moe"]), Stat(**claim["numbers"]["dense"])
            assert claim["verdict"] == compare(moe, dense, "lower")
    # The 100k setting logged a loss per epoch: 3 epochs of 11 steps, for every run.
    for run in numbers["runs"]["notebook_100k"]["dense"]:
        assert run["summary"]["steps"] == 33 and run["epochs"]["epochs"] == [1, 2, 3]
        assert 1 <= run["epochs"]["best_epoch"] <= 3
    for run in numbers["runs"]["full"]["moe"]:  # attention per layer and head, (1, 2)
        assert [len(row) for row in run["attention"]["previous_3"]] == [2]
    # Each measure judges the 11 pairs the notebook rates differently on its axis
    # (coherence 3 high / 2 medium / 1 low; diversity 1 / 2 / 3).
    judged = {row["measure"]: row for row in numbers["decoding"]}
    assert set(judged) == {"known_words", "nll", "entropy", "self_similarity"}
    for row in judged.values():
        assert sum(len(row[v]) for v in ("concordant", "discordant", WITHIN_NOISE)) == 11


def test_the_page_quotes_the_notebook_and_links_its_pictures(regenerated):
    tmp_path, args = regenerated
    page = (tmp_path / "docs" / "results.md").read_text()
    assert "| top-k (k=5) | medium | medium | general balance |" in page
    assert "| combined (T 0.8, top-k 10, top-p 0.9) | high | high | best balance observed |" in page
    assert "| temperature 0.5 | high / medium |" in page  # the verdict table's claim column
    assert "Regenerate with `python -m tinygpt claims --sweeps " in page and "--seeds 1,2" in page
    out = tmp_path / "docs" / "results"
    for picture in ("epochs.png", "val_loss.png", "attention.png", "decoding.png"):
        assert f"](results/{picture})" in page
        assert (out / picture).read_bytes().startswith(b"\x89PNG")
    assert page.count("<!-- results:start -->") == 1 and page.count("<!-- results:end -->") == 1


def test_a_second_call_keeps_finished_sweeps_and_resumes_an_undone_one(
    regenerated, monkeypatch, capsys
):
    tmp_path, args = regenerated
    trained = []
    monkeypatch.setattr(commands, "train_sweep", lambda sweep, o: trained.append(o) or 0.0)
    assert commands.main(args) == 0
    assert trained == []  # nothing to train: every job of both sweeps finished
    assert capsys.readouterr().out.count("all 4 runs finished, kept") == 2
    # One job stopped before it wrote its summary: only its sweep reruns, with ckpt_path=last
    # (the stand-in for training puts the summary back, as the resumed job would).
    summary = tmp_path / "sweeps" / "full" / "3_model-moe+seed-2" / "summary.json"
    kept = summary.read_text()
    summary.unlink()

    def resume(sweep, overrides):
        trained.append((sweep.name, overrides))
        summary.write_text(kept)
        return 0.0

    monkeypatch.setattr(commands, "train_sweep", resume)
    assert commands.main(args) == 0
    assert capsys.readouterr().out.count("all 4 runs finished, kept") == 1
    [(sweep, overrides)] = trained
    assert sweep == "full" and overrides[:2] == ["model=dense,moe", "seed=1,2"]
    assert overrides[-1] == "ckpt_path=last"
    assert "trainer.max_steps=10" in overrides and "experiment=notebook_100k" not in overrides


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "1"], "at least two different seeds"),
        (["--seeds", "1,x"], "integers like 1,2,3"),
        (["--epochs", "0"], "must be an integer >= 1"),
        (["--no-such-option"], "unrecognized arguments"),
    ],
)
def test_bad_arguments_are_one_error_line_and_exit_2(extra, message, capfd):
    with pytest.raises(SystemExit) as exit_info:
        commands.main(["claims", *extra])
    err = capfd.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_a_page_without_the_markers_is_refused_before_training(tmp_path, capfd):
    page = tmp_path / "results.md"
    page.write_text("# mine\n")
    with pytest.raises(SystemExit) as exit_info:
        commands.main(["claims", "--results", str(page), "--sweeps", str(tmp_path / "s")])
    assert (
        exit_info.value.code == 2 and "has no <!-- results:start --> line" in capfd.readouterr().err
    )
    assert page.read_text() == "# mine\n" and not (tmp_path / "s").exists()


def test_smoke_sets_tiny_defaults_that_explicit_values_override(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYGPT_ROOT", str(tmp_path))
    trained, written = {}, []

    def train(sweep, overrides):
        trained[sweep.name] = overrides
        return 0.0

    monkeypatch.setattr(commands, "train_sweep", train)
    monkeypatch.setattr(commands, "write_results", lambda *args: written.append(args) or {})
    assert commands.main(["claims", "--smoke", "--epochs", "5"]) == 0
    [(settings, out, page, command, _, _, num_samples, max_new_tokens)] = written
    assert (num_samples, max_new_tokens) == (2, 40) and "epochs=5" in trained["notebook_100k"]
    assert "trainer.max_steps=20" in trained["full"]
    assert "trainer.val_check_interval=3" in trained["full"]
    assert not any("trainer" in o for o in trained["notebook_100k"])
    # Never over the committed page or into the real sweeps, unless asked to.
    scratch = tmp_path / "outputs" / "claims-smoke"
    assert settings["full"][0] == scratch / "full" and out == scratch / "results"
    assert page == scratch / "results.md"
    assert command == "python -m tinygpt claims --smoke --epochs 5"
