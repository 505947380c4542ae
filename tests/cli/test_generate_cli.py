"""generate.py on a tiny checkpoint made here: one run in a subprocess, as a user types it; the
rest through tinygpt.cli.generate.main in this process (the same Hydra app, without 6 s of
imports a run)."""

import json
import os
from pathlib import Path

import pytest
import torch
from helpers import CreatesFile, one_error_line, run_generate, save_checkpoint

from tinygpt.analysis.generation_dashboard import METRICS
from tinygpt.analysis.plots import read_scalars
from tinygpt.analysis.sweep_summary import markdown
from tinygpt.checkpoint import load_model
from tinygpt.cli import generate as generate_cli
from tinygpt.cli.errors import USER_ERROR_EXIT_CODE
from tinygpt.cli.generate import read_prompt_file
from tinygpt.generation import generate, generate_greedy


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.ckpt")


def samples_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "samples.json").read_text())


@pytest.mark.slow
def test_single_run_streams_and_writes_samples(ckpt, tmp_path):
    overrides = [
        f"ckpt_path={ckpt}",
        "prompt=To be",
        "max_new_tokens=30",
        "decoder=nucleus",
        "decoder.top_p=0.9",
        "seed=1",
    ]
    run_dir = tmp_path / "run"
    result = run_generate(*overrides, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    record = json.loads((run_dir / "samples.json").read_text())
    [text] = record["samples"]
    assert text.startswith("To be") and len(text) == len("To be") + 30
    assert text in result.stdout  # streamed to the terminal
    assert record["decoder"] == {
        "name": "nucleus",
        "temperature": 1.0,
        "top_k": None,
        "top_p": 0.9,
        "min_p": None,
        "repetition_penalty": 1.0,
        "stop": [],
    }
    assert record["config"]["seed"] == 1
    assert (run_dir / "samples.txt").read_text() == text + "\n"
    assert (run_dir / ".hydra" / "config.yaml").is_file()

    again = run_generate(*overrides, f"hydra.run.dir={tmp_path / 'again'}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "again" / "samples.json").read_text())["samples"] == [text]


@pytest.mark.slow  # a compiled build
def test_compile_true_says_it_builds_and_decodes_the_same_text(ckpt, tmp_path, capsys):
    texts = []
    for compile in ("true", "false"):
        run_dir = tmp_path / compile
        generate_cli.main(
            [
                f"ckpt_path={ckpt}",
                "prompt=To be",
                "max_new_tokens=40",  # past the 16-token window: eager refills, compiled steps
                "decoder=greedy",
                f"compile={compile}",
                f"hydra.run.dir={run_dir}",
            ]
        )
        assert ("builds the step" in capsys.readouterr().err) == (compile == "true")
        texts.append(samples_of(run_dir)["samples"])
    assert texts[0] == texts[1]


def test_multirun_writes_one_directory_per_value_and_a_summary(ckpt, tmp_path):
    sweep_dir = tmp_path / "sweep"
    generate_cli.main(
        [
            "-m",
            f"ckpt_path={ckpt}",
            "decoder=temperature",
            "decoder.temperature=0.5,1.5",
            "max_new_tokens=12",
            "num_samples=2",
            f"hydra.sweep.dir={sweep_dir}",
        ]
    )
    common = "+decoder-temperature+max_new_tokens-12+num_samples-2"
    jobs = (f"0_decoder.temperature-0.5{common}", f"1_decoder.temperature-1.5{common}")
    assert [samples_of(sweep_dir / job)["decoder"]["temperature"] for job in jobs] == [0.5, 1.5]
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert [job["job_dir"] for job in summary] == list(jobs)
    assert all(len(job["samples"]) == 2 for job in summary)
    for job in summary:  # what each job logged to its tb/, read back
        logged = {
            tag: points[-1][1] for tag, points in read_scalars(sweep_dir / job["job_dir"]).items()
        }
        assert job["measures"] == {tag: logged[tag] for tag in METRICS if tag in logged}
        assert job["measures"]["samples/sampled_entropy"] > 0
    table = (sweep_dir / "summary.md").read_text()
    assert "| sampled entropy (nats/char) | self-similarity (char 4-grams) |" in table
    assert "decoder.temperature=0.5" in table and "decoder.temperature=1.5" in table


def test_without_ckpt_path_the_newest_runs_best_checkpoint_is_used_and_named(
    tmp_path, monkeypatch, capsys
):
    # Runs live under $TINYGPT_ROOT/outputs/, wherever generate.py is started from.
    outputs = tmp_path / "root" / "outputs"
    old = save_checkpoint(outputs / "runs" / "a" / "checkpoints" / "best.ckpt")
    best = save_checkpoint(outputs / "runs" / "b" / "checkpoints" / "best.ckpt")
    save_checkpoint(outputs / "runs" / "b" / "checkpoints" / "last.ckpt")  # the newest file
    os.utime(old, (1, 1))
    os.utime(best, (2, 2))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TINYGPT_ROOT", str(tmp_path / "root"))
    generate_cli.main(["decoder=greedy", "max_new_tokens=5"])
    # These checkpoints hold no Lightning state; tests/cli/test_paths.py reads a trained one's.
    assert f"using the newest run's best.ckpt (step unknown, no val loss recorded): {best}" in (
        capsys.readouterr().err
    )
    (run_dir,) = (outputs / "generate").iterdir()
    assert len(samples_of(run_dir)["samples"][0]) == 5
    assert list(cwd.iterdir()) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["ckpt_path={missing}"], "error: checkpoint not found"),
        (["ckpt_path={garbage}"], "error: "),
        (["ckpt_path={directory}"], "is a directory"),
        (["ckpt_path={crafted}"], "refusing to load"),
        (["ckpt_path={ckpt}", "max_new_tokens=-1"], "error: max_new_tokens must be"),
        (["ckpt_path={ckpt}", "prompt='Zé~'"], "'~', 'é'"),
        (["ckpt_path={ckpt}", "decoder.top_p=1.5"], "error: top_p must be a number in (0, 1]"),
        (["ckpt_path={ckpt}", "max_new_tokens=5000000"], "error: max_new_tokens must be"),
        (["ckpt_path={ckpt}", "decoder=greedy", "decoder.temperature=-1"], "temperature must"),
        (["ckpt_path={ckpt}", "+decoder.top_a=1"], "error: unknown decoder parameter(s): top_a"),
        (["ckpt_path={ckpt}", "decoder.name=bogus"], "error: decoder.name must be one of"),
        (["ckpt_path={ckpt}", "compile=maybe"], "error: compile and use_cache must be true or"),
        (["ckpt_path={ckpt}", "device=cuda:7"], "error: device 'cuda:7' requested but CUDA"),
    ],
    ids=[
        "missing",
        "unreadable",
        "directory",
        "crafted",
        "negative-tokens",
        "unknown-chars",
        "top_p",
        "max_new_tokens",
        "temperature",
        "unknown-key",
        "unknown-decoder",
        "compile",
        "device",
    ],
)
def test_bad_input_is_one_error_line_without_traceback(
    ckpt, tmp_path, capsys, monkeypatch, overrides, message
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    marker = tmp_path / "pwned"
    crafted = tmp_path / "crafted.ckpt"
    torch.save({"tinygpt": {}, "payload": CreatesFile(marker)}, crafted)
    paths = dict(
        ckpt=ckpt,
        missing=tmp_path / "missing.ckpt",
        garbage=garbage,
        directory=tmp_path,
        crafted=crafted,
    )
    overrides = [o.format(**paths) for o in overrides]
    with pytest.raises(SystemExit) as exit_info:
        generate_cli.main([*overrides, f"hydra.run.dir={tmp_path / 'run'}"])
    assert exit_info.value.code == USER_ERROR_EXIT_CODE
    assert message in one_error_line(capsys.readouterr().err)
    assert not marker.exists()  # the crafted pickle ran nothing
    assert not (tmp_path / "run" / "samples.json").exists()  # nothing half-written


def test_the_sweep_summary_table_shows_each_jobs_measures_and_n_a_where_none_was_logged():
    record = {
        "samples": ["To be |or\nnot"],
        "job_dir": "0",
        "overrides": ["decoder.temperature=0.5"],
        "measures": {"samples/nll_per_char": 2.5, "samples/tokens_per_second": 10.0},
    }
    row = markdown([record]).splitlines()[2]
    assert (
        row
        == "| 0 | decoder.temperature=0.5 | 2.500 | n/a | n/a | n/a | 10.000 | To be \\|or\\nnot |"
    )


def test_a_quoted_prompt_with_a_comma_and_a_stop_string_on_the_command_line(ckpt, tmp_path, capsys):
    prompt = "To be, or not"
    full = generate(load_model(ckpt), prompt, 30, top_p=0.9, seed=1)  # decoder=nucleus
    continuation = full[len(prompt) :]
    stop = next(continuation[i : i + 2] for i in range(3, 28) if continuation[i : i + 2].isalpha())
    expected = prompt + continuation[: continuation.index(stop) + len(stop)]
    assert len(expected) < len(full)
    run_dir = tmp_path / "run"
    generate_cli.main(
        [
            f"ckpt_path={ckpt}",
            "prompt='To be, or not'",  # the shell's "prompt='To be, or not'"
            "seed=1",
            f"decoder.stop={stop}",
            "max_new_tokens=30",
            f"hydra.run.dir={run_dir}",
        ]
    )
    record = samples_of(run_dir)
    assert record["samples"] == [expected]
    assert record["prompt"] == prompt and record["decoder"]["stop"] == [stop]
    assert capsys.readouterr().out == expected + "\n"  # streamed, ending with the stop string


def test_a_prompt_file_of_two_lines_is_the_whole_prompt(ckpt, tmp_path, capsys):
    prompt = "ROMEO:\nBut soft\n"  # the final line break is part of the prompt
    path = tmp_path / "speech.txt"
    path.write_text(prompt, encoding="utf-8")
    run_dir = tmp_path / "run"
    generate_cli.main(
        [
            f"ckpt_path={ckpt}",
            f"prompt_file={path}",
            "decoder=greedy",
            "max_new_tokens=12",
            f"hydra.run.dir={run_dir}",
        ]
    )
    record = samples_of(run_dir)
    assert record["prompt"] == prompt and record["config"]["prompt_file"] == str(path)
    assert record["samples"] == [generate_greedy(load_model(ckpt), prompt, 12)]
    assert capsys.readouterr().out == record["samples"][0] + "\n"


def test_a_prompt_file_drops_a_byte_order_mark_and_windows_line_breaks(tmp_path):
    path = tmp_path / "notepad.txt"
    path.write_bytes("\ufeffROMEO:\r\nBut soft\r\n".encode())
    assert read_prompt_file(path) == "ROMEO:\nBut soft\n"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["prompt_file={missing}"], "error: cannot read prompt_file {missing}: No such file"),
        (["prompt_file={tmp}"], "error: cannot read prompt_file {tmp}: Is a directory"),
        (["prompt_file={file}/x"], "error: cannot read prompt_file {file}/x: Not a directory"),
        (["prompt_file={empty}"], "error: prompt_file {empty} is empty; to start from a line"),
        (["prompt_file={latin1}"], "error: prompt_file {latin1} is not UTF-8 text: byte 0xe9 on "),
        (["prompt_file={file}", "prompt=Hi"], "error: give prompt or prompt_file, not both"),
        (["prompt=true"], "error: prompt must be text, got bool True: quote it for Hydra, e.g. "),
        (["decoder.stop=5"], "error: stop must be a string or a list of strings, got 5"),
        (["decoder.stop=''"], "error: stop strings must not be empty"),
        (["decoder.stop='\\n'"], "error: stop string '\\\\n' can never be generated: '\\\\' not"),
    ],
    ids=[
        "missing",
        "directory",
        "unreadable",
        "empty",
        "not-utf8",
        "both",
        "prompt-bool",
        "stop-int",
        "stop-empty",
        "stop-backslash",
    ],
)
def test_bad_prompt_file_or_stop_is_one_error_line_and_exit_2(
    ckpt, tmp_path, capsys, overrides, message
):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("ROMEO:\nSé".encode("latin-1"))
    (tmp_path / "file.txt").write_text("ROMEO:")
    paths = dict(
        tmp=tmp_path,
        missing=tmp_path / "missing.txt",
        empty=tmp_path / "empty.txt",
        latin1=tmp_path / "latin1.txt",
        file=tmp_path / "file.txt",
    )
    run_dir = tmp_path / "run"
    overrides = [o.format(**paths) for o in overrides]
    with pytest.raises(SystemExit) as exit_info:
        generate_cli.main(
            [f"ckpt_path={ckpt}", "max_new_tokens=5", *overrides, f"hydra.run.dir={run_dir}"]
        )
    assert exit_info.value.code == USER_ERROR_EXIT_CODE
    err = capsys.readouterr().err
    assert err.startswith(message.format(**paths)) and err.count("\n") == 1, err
    assert not (run_dir / "samples.json").exists()  # nothing written
