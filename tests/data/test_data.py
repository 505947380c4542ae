from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf, ValidationError

from tinygpt.data import CharDataModule, CharTokenizer, UnknownCharactersError, read_text
from tinygpt.data.datamodule import DataConfig
from tinygpt.data.text import code_point_chunks
from tinygpt.data.windows import RandomWindows, ValidationBatches
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
    val = torch.from_numpy(make_datamodule(tiny_text_file, block_size=8).val_data.astype(np.int64))
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
@pytest.mark.parametrize(
    "reader", [read_text, lambda p: list(code_point_chunks(p)), make_datamodule]
)
def test_bad_data_files_are_refused(tmp_path: Path, content, message, reader):
    path = tmp_path / "data.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        reader(path)
    assert [p.name for p in tmp_path.iterdir()] == ([] if content is None else ["data.txt"])


@pytest.mark.parametrize(
    "reader", [read_text, lambda p: list(code_point_chunks(p)), make_datamodule]
)
def test_data_path_that_is_a_directory_is_refused(tmp_path: Path, reader):
    with pytest.raises(DataError, match="not a file"):
        reader(tmp_path)


def test_streamed_characters_are_the_text_across_chunk_boundaries(tmp_path: Path):
    text = "plain ascii, then é, 日本語 and 🙂 split across chunks\n" * 7
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    for chunk_bytes in (1, 2, 3, 5, 64, 1 << 20):
        chunks = list(code_point_chunks(path, chunk_bytes))
        # ASCII chunks as bytes (their own code points), others as uint32 code points.
        assert all(isinstance(c, bytes) or c.dtype == np.uint32 for c in chunks)
        assert any(isinstance(c, bytes) for c in chunks)
        points = np.concatenate(
            [np.frombuffer(c, np.uint8) if isinstance(c, bytes) else c for c in chunks]
        )
        assert "".join(map(chr, points.tolist())) == text


@pytest.mark.parametrize("chunk_bytes", [1, 4, 9, 1 << 20])
def test_a_bad_utf8_byte_is_named_by_its_offset_in_the_file(tmp_path: Path, chunk_bytes):
    path = tmp_path / "t.txt"
    path.write_bytes("ab é ".encode() + b"\xff" + b" cd")  # the bad byte is byte 6
    with pytest.raises(DataError, match=r"not UTF-8 text: .* \(byte 6\)"):
        list(code_point_chunks(path, chunk_bytes))
    with pytest.raises(DataError, match=r"\(byte 6\)"):
        read_text(path)
    path.write_bytes(b"ab " + "é".encode()[:1])  # cut inside the last character
    with pytest.raises(DataError, match=r"\(byte 3\)"):
        list(code_point_chunks(path, chunk_bytes))


@pytest.mark.parametrize("world", [1, 2, 3])
def test_validation_batches_of_all_ranks_hold_every_window_once(world: int):
    data = np.arange(103, dtype=np.uint8)  # 12 windows of 8 (the last 6 ids fill no window)
    seen = []
    for rank in range(world):
        batches = ValidationBatches(data, block_size=8, batch_size=5, rank=rank, world=world)
        for x, y in (batches[i] for i in range(len(batches))):
            assert x.dtype == y.dtype == torch.int64 and len(x) <= 5
            assert torch.equal(y, x + 1)
            seen += x[:, 0].tolist()
        with pytest.raises(IndexError):
            batches[len(batches)]
    assert sorted(seen) == list(range(0, 96, 8))


@pytest.mark.parametrize(("name", "key"), [("batch_size", "data"), ("block_size", "model")])
def test_sizes_below_one_are_refused(name, key):
    with pytest.raises(ConfigError, match=f"{key}.{name} must be an integer >= 1"):
        CharDataModule(**{name: 0})


def test_a_fixed_tokenizer_serves_each_split_as_evaluation_windows(tmp_path: Path):
    path = tmp_path / "text.txt"
    path.write_text("abcd" * 30)  # 120 characters: 108 train, 12 val
    tokenizer = CharTokenizer("abcdefg")  # a checkpoint's: more characters than the text holds
    windows = {}
    for split in ("val", "train", "all"):
        dm = make_datamodule(path, block_size=4, tokenizer=tokenizer, test_split=split)
        assert dm.tokenizer is tokenizer
        batches = list(dm.test_dataloader())
        inputs = torch.cat([x for x, _ in batches]).flatten()
        targets = torch.cat([y for _, y in batches]).flatten()
        tokens = torch.from_numpy(np.asarray(dm.split(split), dtype=np.int64))
        n = (len(tokens) - 1) // 4 * 4
        assert torch.equal(inputs, tokens[:n]) and torch.equal(targets, tokens[1 : n + 1])
        windows[split] = len(inputs) // 4
    assert windows == {"val": 2, "train": 26, "all": 29}
    val_data = make_datamodule(path, block_size=4, tokenizer=tokenizer).val_data
    assert torch.equal(torch.from_numpy(val_data[:4]), tokenizer.encode("abcd"))


def test_characters_outside_a_fixed_tokenizer_are_refused_or_skipped(tmp_path: Path):
    path = tmp_path / "text.txt"
    path.write_text("abcxd" * 30)
    tokenizer = CharTokenizer("abcd")
    with pytest.raises(UnknownCharactersError, match=f"{path}: .*1 character.*'x'"):
        make_datamodule(path, block_size=4, tokenizer=tokenizer)
    dm = make_datamodule(path, block_size=4, tokenizer=tokenizer, skip_unknown=True)
    assert dm.skipped == 30
    assert tokenizer.decode(dm.data) == "abcd" * 30


def test_only_the_splits_a_stage_uses_need_a_window(tmp_path: Path):
    path = tmp_path / "text.txt"
    path.write_text("abcd" * 10)  # 40 characters: 36 train, 4 val, shorter than a window of 8
    dm = CharDataModule(path=str(path), block_size=8, test_split="train")
    dm.setup("test")  # the train split is long enough to evaluate
    with pytest.raises(DataError, match="the validation split has 4 characters"):
        dm.setup("fit")
    with pytest.raises(ConfigError, match="split must be one of val, train, all, got 'test'"):
        CharDataModule(test_split="test")


def test_max_chars_keeps_the_texts_start_split_as_usual(shakespeare_cache: Path):
    dm = make_datamodule(cache_dir=shakespeare_cache, max_chars=100_000)
    assert (len(dm.train_data), len(dm.val_data)) == (90_000, 10_000)
    text = (shakespeare_cache / "tinyshakespeare.txt").read_text()
    assert dm.tokenizer.decode(dm.val_data) == text[90_000:100_000]
    assert set(dm.tokenizer.chars) == set(text[:100_000])  # the vocabulary of what it reads


@pytest.mark.parametrize("value", [0, -5])
def test_bad_max_chars_are_refused(value):
    with pytest.raises(ConfigError, match="data.max_chars must be null or an integer >= 1"):
        CharDataModule(max_chars=value)


@pytest.mark.parametrize("value", [1.5, True, "many"])
def test_max_chars_of_another_type_is_refused_by_the_schema(value):
    # Types are OmegaConf's, against the dataclass, as Hydra composes the config.
    with pytest.raises(ValidationError, match="max_chars"):
        OmegaConf.merge(OmegaConf.structured(DataConfig), {"max_chars": value})
