"""python -m tinygpt export: transformers loads the directory with no custom code and computes
what TinyGPT computes (logits, greedy text, token ids); bad inputs are one line, nothing left."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from helpers import CHARS, TINY_TEXT, one_error_line, save_checkpoint
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel, pipeline

from tinygpt import export as export_module
from tinygpt.checkpoint import checkpoint_entry
from tinygpt.cli.commands import main
from tinygpt.data import CharTokenizer
from tinygpt.export import export, tokenizer_files
from tinygpt.generation import generate_greedy
from tinygpt.models import TinyGPT, TinyGPTConfig

BLOCK_SIZE = 24
TOLERANCE = 1e-4  # on logits


def spread_checkpoint(path: Path, bias: bool = True) -> TinyGPT:
    """A two-layer model whose weights are spread well beyond their initial scale (so exact and
    tanh GELU, or a missing bias, differ by far more than the tolerance), saved as a training
    checkpoint; returns the model."""
    torch.manual_seed(0)
    tokenizer = CharTokenizer(CHARS)
    config = TinyGPTConfig(
        vocab_size=tokenizer.vocab_size, block_size=BLOCK_SIZE, n_embd=32, bias=bias
    )
    model = TinyGPT(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(torch.randn_like(param) * (0.5 if name.endswith("bias") else 0.8))
    model.tokenizer = tokenizer
    state = {"model." + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "tinygpt": checkpoint_entry(config, tokenizer, {})}, path)
    return model


def windows(tokenizer: CharTokenizer, n: int = 8) -> torch.Tensor:
    ids = tokenizer.encode(TINY_TEXT[:2000])
    starts = torch.linspace(0, len(ids) - BLOCK_SIZE - 1, n).long()
    return torch.stack([ids[s : s + BLOCK_SIZE] for s in starts.tolist()])


@pytest.mark.parametrize("bias", [True, False])
def test_the_exported_model_gives_our_logits(tmp_path, bias):
    ours = spread_checkpoint(tmp_path / "model.ckpt", bias)
    out = export(tmp_path / "model.ckpt", tmp_path / "hf")
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(hf) is GPT2LMHeadModel
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # tied
    batch = windows(ours.tokenizer)
    with torch.no_grad():
        expected, _ = ours(batch)
        difference = (hf(batch).logits - expected).abs().max().item()
        # The check can fail: with GPT-2's default activation (tanh GELU) it would.
        tanh = AutoModelForCausalLM.from_pretrained(out, activation_function="gelu_new").eval()
        tanh_difference = (tanh(batch).logits - expected).abs().max().item()
    assert difference < TOLERANCE
    assert tanh_difference > 5 * TOLERANCE


def test_transformers_greedy_generate_gives_our_greedy_text(tmp_path):
    ours = spread_checkpoint(tmp_path / "model.ckpt")
    out = export(tmp_path / "model.ckpt", tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    for prompt in ("First Citizen:\n", "A", "speak, speak.\n\nAll: "):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        new = BLOCK_SIZE - ids.size(1)  # GPT-2 stops at n_positions: the whole window
        generated = hf.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, do_sample=False
        )
        text = tokenizer.decode(generated[0])
        assert len(text) == BLOCK_SIZE
        assert text == generate_greedy(ours, prompt, new)


def test_a_default_pipeline_call_stops_at_the_window_with_our_greedy_text(tmp_path):
    ours = spread_checkpoint(tmp_path / "model.ckpt")
    out = export(tmp_path / "model.ckpt", tmp_path / "hf")
    generate = pipeline("text-generation", model=str(out))  # its default length: no setting
    sampled = generate("To be")[0]["generated_text"]
    assert len(sampled) == BLOCK_SIZE and sampled.startswith("To be")
    greedy = generate("To be", do_sample=False)[0]["generated_text"]
    assert greedy == generate_greedy(ours, "To be", BLOCK_SIZE - len("To be"))


@pytest.mark.parametrize(
    "vocabulary",
    ["tinyshakespeare", "unusual"],
)
def test_the_tokenizer_gives_our_ids(tmp_path, vocabulary, request):
    if vocabulary == "tinyshakespeare":
        cache = request.getfixturevalue("shakespeare_cache")
        text = (cache / "tinyshakespeare.txt").read_text()
        passage = text[:3000] + text[-3000:]  # speakers, verse, blank lines
    else:  # tabs, carriage returns, Unicode line breaks, combining marks, astral characters
        text = "a\tb\r\nc \u00a0\u2028\u2029e\u0301 é 😀 中 \x00 \\ \" ' <unk> [UNK] ##"
        passage = text * 3
    ours = CharTokenizer.from_text(text)
    for name, content in tokenizer_files(ours, 64).items():
        (tmp_path / name).write_text(json.dumps(content))
    theirs = AutoTokenizer.from_pretrained(tmp_path)

    assert theirs.encode(ours.chars) == list(range(ours.vocab_size))  # every character, in order
    assert theirs.convert_ids_to_tokens(list(range(ours.vocab_size))) == list(ours.chars)
    assert theirs(passage)["input_ids"] == ours.encode(passage).tolist()
    assert theirs.decode(ours.encode(passage).tolist()) == passage
    assert theirs.encode("\n \n") == ours.encode("\n \n").tolist()
    with pytest.raises(Exception, match="Missing"):
        theirs.encode("\u2603")  # a character outside the vocabulary, refused as ours refuses


def test_a_moe_checkpoint_is_refused(tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "moe.ckpt", ffn="moe")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(ckpt), str(tmp_path / "hf")])
    assert exit_info.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert "cannot export a mixture-of-experts model: no stock transformers architecture" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["moe.ckpt"]


def bad_input(tmp_path: Path, case: str) -> tuple[list[str], str]:
    ckpt = save_checkpoint(tmp_path / "model.ckpt")
    out = tmp_path / "hf"
    if case == "missing checkpoint":
        return [str(tmp_path / "nope.ckpt"), str(out)], "checkpoint not found"
    if case == "foreign file":
        (tmp_path / "notes.txt").write_text("not a checkpoint")
        return [str(tmp_path / "notes.txt"), str(out)], "is not a readable checkpoint"
    if case == "foreign checkpoint":
        torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
        return [str(tmp_path / "other.ckpt"), str(out)], "is not a TinyGPT checkpoint"
    if case == "out_dir not empty":
        out.mkdir()
        (out / "config.json").write_text("{}")
        return [str(ckpt), str(out)], "exists and is not empty; add --force to replace it"
    if case == "out_dir of other files":
        out.mkdir()
        (out / "thesis.tex").write_text("mine")
        return [str(ckpt), str(out), "--force"], "no config.json: not a model directory"
    if case == "out_dir a file":
        out.write_text("a file")
        return [str(ckpt), str(out)], "exists and is not a directory"
    return [str(ckpt)], "the following arguments are required: out_dir (usage: python -m tinygpt"


@pytest.mark.parametrize(
    "case",
    [
        "missing checkpoint",
        "foreign file",
        "foreign checkpoint",
        "out_dir not empty",
        "out_dir of other files",
        "out_dir a file",
        "missing argument",
    ],
)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, case):
    argv, message = bad_input(tmp_path, case)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(SystemExit) as exit_info:
        main(["export", *argv])
    assert exit_info.value.code == 2
    assert message in one_error_line(capsys.readouterr().err)
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing replaced


def test_force_replaces_an_earlier_export_whole(tmp_path, capsys):
    spread_checkpoint(tmp_path / "a.ckpt")
    assert main(["export", str(tmp_path / "a.ckpt"), str(tmp_path / "hf")]) == 0
    assert capsys.readouterr().out.startswith(f"exported {tmp_path / 'a.ckpt'} to ")
    (tmp_path / "hf" / "stale.bin").write_bytes(b"from before")
    save_checkpoint(tmp_path / "b.ckpt", n_embd=48)
    assert main(["export", str(tmp_path / "b.ckpt"), str(tmp_path / "hf"), "--force"]) == 0
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["n_embd"] == 48 and not (tmp_path / "hf" / "stale.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt", "b.ckpt", "hf"]


def test_a_failed_export_leaves_the_earlier_one_and_nothing_else(tmp_path, monkeypatch, capsys):
    spread_checkpoint(tmp_path / "a.ckpt")
    export(tmp_path / "a.ckpt", tmp_path / "hf")
    earlier = {p.name: p.read_bytes() for p in (tmp_path / "hf").iterdir()}

    def disk_full(out_dir, *args):
        (out_dir / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "write_model_dir", disk_full)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "a.ckpt"), str(tmp_path / "hf"), "--force"])
    assert exit_info.value.code == 1
    error = one_error_line(capsys.readouterr().err)
    assert error == f"error: cannot write {tmp_path / 'hf'}: No space left on device"
    assert {p.name: p.read_bytes() for p in (tmp_path / "hf").iterdir()} == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt", "hf"]  # no staging left


def test_force_over_an_export_that_cannot_be_removed_still_puts_the_new_one_in_whole(tmp_path):
    # The old directory is moved aside whole before the new one takes its place, so a file in it
    # that cannot be deleted (chattr +i) costs a leftover, never a half-deleted export.
    spread_checkpoint(tmp_path / "a.ckpt")
    export(tmp_path / "a.ckpt", tmp_path / "hf")
    stuck = tmp_path / "hf" / "stuck.bin"
    stuck.write_bytes(b"from before")
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode:
        pytest.skip("chattr +i is refused here")
    try:
        save_checkpoint(tmp_path / "b.ckpt", n_embd=48)
        assert main(["export", str(tmp_path / "b.ckpt"), str(tmp_path / "hf"), "--force"]) == 0
        assert json.loads((tmp_path / "hf" / "config.json").read_text())["n_embd"] == 48
        assert not (tmp_path / "hf" / "stuck.bin").exists()
    finally:
        for path in tmp_path.glob("**/stuck.bin"):
            subprocess.run(["chattr", "-i", str(path)])
