"""Generation requests too big for memory are refused in one line, before any buffer exists."""

import tracemalloc
from pathlib import Path

import pytest
import torch
from helpers import one_error_line, save_checkpoint
from omegaconf import OmegaConf

from tinygpt.checkpoint import load_model
from tinygpt.cli import generate as generate_cli
from tinygpt.cli.errors import USER_ERROR_EXIT_CODE
from tinygpt.data import CharTokenizer
from tinygpt.errors import ConfigError
from tinygpt.generation import Decoder, generate, generate_ids, memory, stream_generate
from tinygpt.generation.memory import GenerationMemoryError, parse_bytes
from tinygpt.models import TinyGPT, TinyGPTConfig

GB = 1 << 30


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.ckpt")


@pytest.fixture
def machine_with_24_gb(monkeypatch):
    """The bound as on a machine with 24 GB available, whatever this one has."""
    monkeypatch.delenv(memory.MEMORY_ENV, raising=False)
    monkeypatch.setattr(memory, "available_memory", lambda: 24 * GB)


def test_the_request_that_died_allocating_80_gb_is_one_line(
    ckpt, tmp_path, capsys, machine_with_24_gb
):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        generate_cli.main(
            [
                f"ckpt_path={ckpt}",
                "max_new_tokens=1000000",
                "num_samples=10000",
                f"hydra.run.dir={run_dir}",
            ]
        )
    assert exit_info.value.code == USER_ERROR_EXIT_CODE
    out, err = capsys.readouterr()
    assert one_error_line(err) == (
        "error: this generation would need about 521.8 GB (10000 sequences of 1000001 tokens), "
        "more than the 19.2 GB it may use (80% of the 24.0 GB available); ask for fewer samples "
        "or tokens, or set TINYGPT_GENERATION_MEMORY (bytes, e.g. 64G) to allow more"
    )
    assert out == ""  # refused before the first character was streamed
    assert not (run_dir / "samples.json").exists()


def test_every_api_entry_refuses_it_before_allocating(ckpt, machine_with_24_gb, monkeypatch):
    model = load_model(ckpt)
    prompts = torch.zeros(10_000, 1, dtype=torch.long)
    allocations = []
    monkeypatch.setattr(torch, "empty", lambda *a, **k: allocations.append(a))
    monkeypatch.setattr(torch, "zeros", lambda *a, **k: allocations.append(a))
    for call in (
        lambda: generate(model, "To be", 1_000_000, num_samples=10_000),
        lambda: stream_generate(model, "To be", 1_000_000, num_samples=10_000),
        lambda: generate(model, ["To be", "Or not"], 1_000_000, num_samples=5_000),
        lambda: generate_ids(model, prompts, 1_000_000),
    ):
        with pytest.raises(GenerationMemoryError, match="would need about"):
            call()
    assert allocations == []


def test_the_largest_request_within_the_bound_runs_and_one_more_sample_is_refused(
    ckpt, monkeypatch
):
    model = load_model(ckpt)
    prompt, new = "To be", 100
    columns = len(prompt) + new
    per_row = memory.device_bytes(model.config, 1, columns, 4) + columns * 48  # ASCII
    monkeypatch.setenv(memory.MEMORY_ENV, str(per_row * 12))
    texts = generate(model, prompt, new, num_samples=12, seed=1)
    assert len(texts) == 12 and all(len(t) == columns for t in texts)
    with pytest.raises(GenerationMemoryError) as refused:
        generate(model, prompt, new, num_samples=13, seed=1)
    assert "(13 sequences of 105 tokens)" in str(refused.value)
    assert f"({memory.MEMORY_ENV})" in str(refused.value)


def test_generate_py_keeps_wide_characters_within_the_estimate(capsys):
    # Characters outside Latin-1 are objects of their own when held one by one (about 80 bytes
    # each): generate.py must gather the streamed samples without keeping them so.
    chars = "\n" + "".join(chr(0x1F600 + i) for i in range(40))
    torch.manual_seed(0)
    model = TinyGPT(TinyGPTConfig(vocab_size=41, block_size=16, n_layer=1, n_embd=16)).eval()
    model.tokenizer = CharTokenizer(chars)
    rows, new = 50, 1000
    cfg = OmegaConf.create(
        {"max_new_tokens": new, "seed": 1, "num_samples": rows, "use_cache": True, "compile": False}
    )
    tracemalloc.start()
    try:
        texts = generate_cli.stream_to_terminal(model, cfg, "", Decoder())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [len(text) for text in texts] == [new] * rows
    assert peak < rows * new * memory.text_bytes(chars) / 2  # half: the results take the rest
    assert capsys.readouterr().out.startswith("--- sample 1/50 ---")


@pytest.mark.parametrize(
    ("chars", "per_char"), [("\n ab", 48), ("aé", 80), ("aж", 80), ("a🙂", 80)]
)
def test_text_outside_ascii_counts_more_bytes_a_character(chars: str, per_char: int):
    assert memory.text_bytes(chars) == per_char


def test_an_unknown_amount_of_memory_bounds_nothing(ckpt, monkeypatch):
    monkeypatch.delenv(memory.MEMORY_ENV, raising=False)
    monkeypatch.setattr(memory, "available_memory", lambda: None)
    assert len(generate(load_model(ckpt), "To be", 3, num_samples=2, seed=1)) == 2


def test_available_memory_is_what_the_os_reports():
    available = memory.available_memory()
    assert available is not None and 0 < available


@pytest.mark.parametrize(
    ("text", "count"),
    [("1000", 1000), ("512M", 512 << 20), ("4G", 4 << 30), ("1.5g", 3 << 29), ("2 GiB", 2 << 30)],
)
def test_the_setting_reads_byte_counts(text: str, count: int):
    assert parse_bytes(text) == count


@pytest.mark.parametrize("text", ["lots", "-1G", "4X", ""])
def test_a_bad_setting_is_one_clear_error(ckpt, monkeypatch, text: str):
    monkeypatch.setenv(memory.MEMORY_ENV, text or " ")
    with pytest.raises(ConfigError, match="TINYGPT_GENERATION_MEMORY must be a number of bytes"):
        generate(load_model(ckpt), "To be", 3)
