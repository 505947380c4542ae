"""A generate run logged to TensorBoard in-process: the samples as text, the session's decoder
hyperparameters and its metrics, checked against the project's own metric functions."""

import math

import pytest
import torch
from helpers import read_session, save_checkpoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tinygpt.analysis import generation_dashboard
from tinygpt.analysis.generation_dashboard import (
    generation_hparams,
    generation_metrics,
    log_generation_run,
)
from tinygpt.analysis.likelihood import mean_nll, sampled_entropy
from tinygpt.analysis.plots import read_scalars
from tinygpt.analysis.text_metrics import known_word_share, self_similarity, word_set
from tinygpt.checkpoint import load_model
from tinygpt.generation import generate, named_decoder

PROMPT = "To be"


@pytest.fixture
def ckpt(tmp_path, tiny_text_file):
    """A tiny checkpoint whose run config names its training text (for known-word share)."""
    return save_checkpoint(tmp_path / "last.ckpt", {"data": {"path": str(tiny_text_file)}})


def make_record(ckpt, samples, max_new_tokens=20):
    """What generate.py writes to samples.json for ``decoder=temperature`` at 0.7."""
    decoder = {"name": "temperature", "temperature": 0.7, "top_k": None, "top_p": None}
    decoder |= {"min_p": None, "repetition_penalty": 1.0, "stop": []}
    config = {
        "decoder": decoder,
        "ckpt_path": str(ckpt),
        "checkpoints_dir": "outputs",
        "prompt": PROMPT,
        "prompt_file": None,
        "max_new_tokens": max_new_tokens,
        "num_samples": len(samples),
        "seed": 5,
        "device": "cpu",
        "use_cache": True,
        "compile": False,
    }
    return {
        "ckpt_path": str(ckpt),
        "overrides": ["decoder=temperature", "decoder.temperature=0.7", "seed=5"],
        "decoder": decoder,
        "tokens_per_s": 1234.5,
        "config": config,
        "prompt": PROMPT,
        "samples": samples,
    }


def test_the_decoder_settings_are_the_hyperparameters(ckpt):
    hparams = generation_hparams(make_record(ckpt, ["To be or"]))
    assert hparams == {
        "kind": "generate",
        "ckpt_path": str(ckpt),
        "decoder": "temperature",
        "decoder.name": "temperature",
        "decoder.temperature": 0.7,
        "decoder.repetition_penalty": 1.0,
        "decoder.stop": "[]",
        "prompt": PROMPT,
        "max_new_tokens": 20,
        "num_samples": 1,
        "seed": 5,
        "use_cache": True,
        "compile": False,
    }


def test_a_generate_run_logs_its_samples_and_session(ckpt, tmp_path, tiny_text_file):
    model = load_model(ckpt)
    samples = [PROMPT + " Citizen, speak speak:\nall", PROMPT + "rather to die quux"]
    record = make_record(ckpt, samples)
    out_dir = tmp_path / "0_decoder.temperature=0.7"
    log_dir = log_generation_run(out_dir, record, model)
    assert log_dir == out_dir / "tb"

    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    events.Reload()
    [text] = events.Tensors("samples/text_summary")
    shown = text.tensor_proto.string_val[0].decode()
    assert shown.startswith("decoder **temperature** (temperature=0.7, top_k=None")
    assert "sample 2 of 2:\n\n    To berather to die quux" in shown
    assert "    To be Citizen, speak speak:\n    all" in shown  # one code line per text line

    start, _ = read_session(log_dir)
    assert start.hparams["decoder.temperature"].number_value == 0.7
    assert start.hparams["kind"].string_value == "generate"

    continuations = [" Citizen, speak speak:\nall", "rather to die quux"]
    nll = sum(mean_nll(model, c) for c in continuations) / 2
    known = known_word_share(continuations, word_set(tiny_text_file.read_text()))
    assert 0 < known < 1  # "speak", "all", "rather", ... are in the text; "quux" is not
    decoder = named_decoder("temperature", temperature=0.7)
    entropy = sum(sampled_entropy(model, c, decoder) for c in continuations) / 2
    expected = {
        "samples/nll_per_char": nll,
        "samples/sampled_entropy": entropy,
        "samples/self_similarity": self_similarity(continuations, 4, unit="char"),
        "samples/known_word_share": known,
        "samples/tokens_per_second": 1234.5,
    }
    scalars = read_scalars(log_dir)
    assert set(scalars) == set(expected)
    assert [p.parent for p in out_dir.rglob("events.out.tfevents.*")] == [log_dir]  # one run
    for tag, value in expected.items():
        [(step, logged)] = scalars[tag]
        assert step == 0 and logged == pytest.approx(value, rel=1e-6), tag


def test_without_its_training_text_the_known_word_share_is_left_out_with_a_note(
    ckpt, tmp_path, tiny_text_file, capsys
):
    tiny_text_file.unlink()
    log_dir = log_generation_run(tmp_path, make_record(ckpt, ["To be or not"]), load_model(ckpt))
    assert "note: known-word share not logged" in capsys.readouterr().err
    assert "samples/known_word_share" not in read_scalars(log_dir)


def test_empty_continuations_score_nan_which_sessions_leave_out(ckpt):
    record = make_record(ckpt, [PROMPT], max_new_tokens=0)
    metrics = generation_metrics(record, load_model(ckpt), vocabulary={"to", "be"})
    for tag in ("nll_per_char", "sampled_entropy", "self_similarity", "known_word_share"):
        assert math.isnan(metrics[f"samples/{tag}"]), tag


def test_the_nll_is_averaged_over_the_first_samples_only(ckpt, monkeypatch):
    monkeypatch.setattr(generation_dashboard, "SCORED_SAMPLES", 1)
    model = load_model(ckpt)
    record = make_record(ckpt, [PROMPT + " speak, speak", PROMPT + "zzzzqqqq xxx"])
    metrics = generation_metrics(record, model, vocabulary=None)
    assert metrics["samples/nll_per_char"] == pytest.approx(mean_nll(model, " speak, speak"))
    assert "samples/known_word_share" not in metrics


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny checkpoint's model after 150 steps on one repeated verse: enough for its
    distributions to be sharp where the verse is predictable."""
    ckpt = save_checkpoint(tmp_path_factory.mktemp("trained") / "last.ckpt")
    model = load_model(ckpt).train()
    ids = model.tokenizer.encode("But soft, what light through yonder window breaks?\n" * 20)
    windows = ids.unfold(0, 17, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(150):
        batch = windows[torch.randint(len(windows), (16,))].contiguous()
        _, loss = model(batch[:, :-1], batch[:, 1:].contiguous())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return ckpt, model.eval()


def test_nll_sampled_entropy_and_self_similarity_separate_temperatures_0_5_and_1_5(trained):
    ckpt, model = trained
    metrics = {}
    for temperature in (0.5, 1.5):
        samples = generate(model, [PROMPT] * 4, 60, temperature=temperature, seed=1)
        record = make_record(ckpt, samples)
        record["decoder"]["temperature"] = temperature
        metrics[temperature] = generation_metrics(record, model, vocabulary=None)
    cold, hot = metrics[0.5], metrics[1.5]
    assert cold["samples/nll_per_char"] < hot["samples/nll_per_char"]  # likelier text
    assert cold["samples/sampled_entropy"] < hot["samples/sampled_entropy"]  # less choice
    assert cold["samples/self_similarity"] > hot["samples/self_similarity"]  # samples alike
