from pathlib import Path

import pytest
import torch

from tinygpt.data import CharDataModule, read_text
from tinygpt.data.windows import RandomWindows
from tinygpt.errors import ConfigError, DataError


def make_datamodule(path=None, cache_dir="data", **kwargs) -> CharDataModule:
    dm = CharDataModule(
        path=None if path is None else str(path), cache_dir=str(cache_dir), **kwargs
    )
    dm.prepare_data()
    dm.setup()
    return dm


def test_split_sizes_on_the_real_file(shakespeare_cache: Path):
    dm = make_datamodule(cache_dir=shakespeare_cache)
    assert dm.tokenizer.vocab_size == 65
    assert len(dm.train_data) == 1_003_854
    assert len(dm.val_data) == 111_540
    # The split is positional: the val split continues exactly where train stops.
    text = (shakespeare_cache / "tinyshakespeare.txt").read_text()
    assert dm.tokenizer.decode(dm.val_data[:20]) == text[1_003_854 : 1_003_854 + 20]


def test_validation_batches_cover_the_split_in_order_and_repeat(tiny_text_file: Path):
    first = [b for b in make_datamodule(tiny_text_file, block_size=8).val_dataloader()]
    second = [b for b in make_datamodule(tiny_text_file, block_size=8).val_dataloader()]
    assert len(first) == len(second)
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    val = make_datamodule(tiny_text_file, block_size=8).val_data
    inputs = torch.cat([x for x, _ in first])
    targets = torch.cat([y for _, y in first])
    n = (len(val) - 1) // 8
    assert inputs.shape == (n, 8)
    assert torch.equal(inputs.flatten(), val[: n * 8])  # non-overlapping, in order
    assert torch.equal(targets.flatten(), val[1 : n * 8 + 1])


def test_training_batches_are_a_function_of_seed_step_and_rank():
    data = torch.arange(1000)
    stream = RandomWindows(data, block_size=16, batch_size=8, seed=7, rank=0, start=0)
    x, y = stream.batch(3)
    assert x.shape == y.shape == (8, 16)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    assert torch.equal(y[:, -1], x[:, -1] + 1)
    same = RandomWindows(data, block_size=16, batch_size=8, seed=7, rank=0, start=0).batch(3)
    assert torch.equal(x, same[0])
    assert not torch.equal(x, stream.batch(4)[0])
    other_rank = RandomWindows(data, block_size=16, batch_size=8, seed=7, rank=1, start=0)
    assert not torch.equal(x, other_rank.batch(3)[0])
    other_seed = RandomWindows(data, block_size=16, batch_size=8, seed=8, rank=0, start=0)
    assert not torch.equal(x, other_seed.batch(3)[0])


def test_a_resumed_stream_continues_the_same_sequence():
    data = torch.arange(500)
    full = iter(RandomWindows(data, block_size=4, batch_size=2, seed=1, rank=0, start=0))
    batches = [next(full)[0] for _ in range(6)]
    resumed = iter(RandomWindows(data, block_size=4, batch_size=2, seed=1, rank=0, start=4))
    assert torch.equal(next(resumed)[0], batches[4])
    assert torch.equal(next(resumed)[0], batches[5])


def test_training_batches_do_not_depend_on_global_rng(tiny_text_file: Path):
    dm = make_datamodule(tiny_text_file, block_size=8, batch_size=4)
    torch.manual_seed(123)
    a = next(iter(dm.train_dataloader()))[0]
    torch.manual_seed(456)
    b = next(iter(dm.train_dataloader()))[0]
    assert torch.equal(a, b)


def test_text_shorter_than_one_window_is_refused(tmp_path: Path):
    path = tmp_path / "short.txt"
    path.write_text("abcdefghij" * 5)
    with pytest.raises(DataError, match="fewer than one window"):
        make_datamodule(path, block_size=32)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "not found"), (b"", "empty"), (b"ab\x00cd", "binary"), (b"\xff\xfe\xfa", "not UTF-8")],
)
def test_bad_data_files_are_refused(tmp_path: Path, content, message):
    path = tmp_path / "data.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_text(path)


def test_data_path_that_is_a_directory_is_refused(tmp_path: Path):
    with pytest.raises(DataError, match="not a file"):
        read_text(tmp_path)


@pytest.mark.parametrize(("name", "key"), [("batch_size", "data"), ("block_size", "model")])
def test_sizes_below_one_are_refused(name, key):
    with pytest.raises(ConfigError, match=f"{key}.{name} must be an integer >= 1"):
        CharDataModule(**{name: 0})


def test_max_chars_keeps_the_texts_start_split_as_usual(shakespeare_cache: Path):
    dm = make_datamodule(cache_dir=shakespeare_cache, max_chars=100_000)
    assert (len(dm.train_data), len(dm.val_data)) == (90_000, 10_000)
    text = (shakespeare_cache / "tinyshakespeare.txt").read_text()
    assert dm.tokenizer.decode(dm.val_data) == text[90_000:100_000]
    assert set(dm.tokenizer.chars) == set(text[:100_000])  # the vocabulary of what it reads


@pytest.mark.parametrize("value", [0, -5, 1.5, True, "100"])
def test_bad_max_chars_are_refused(value):
    with pytest.raises(ConfigError, match="data.max_chars must be null or an integer >= 1"):
        CharDataModule(max_chars=value)
