import logging
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tinygpt.data import CharDataModule, CharTokenizer
from tinygpt.data import token_cache as tc
from tinygpt.data.download import sha256_of
from tinygpt.errors import DataError, WriteError

MIXED = "To be, or not to be: é, ß, 日本語, 🙂.\n" * 50


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def cached_ids(cache: tc.TokenCache) -> list[int]:
    return cache.tokens.tolist()


def reference_ids(text: str) -> list[int]:
    """What the in-RAM tokenizer makes of the whole text: the cache must hold exactly this."""
    return CharTokenizer.from_text(text).encode(text).tolist()


def test_a_text_is_encoded_once_beside_it_and_mapped(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("tinygpt.data.text.CHUNK_BYTES", 5)  # characters split across chunks
    text = write(tmp_path / "corpus.txt", MIXED)
    cache = tc.load_or_build(text, tmp_path / "data")
    assert cache.path == tmp_path / "corpus.txt.tokens"
    assert cache.chars == "".join(sorted(set(MIXED)))
    assert cache.fingerprint == sha256_of(text)
    assert isinstance(cache.tokens, np.memmap) and cache.tokens.dtype == np.uint8
    assert cached_ids(cache) == reference_ids(MIXED)
    assert not (tmp_path / "data").exists()  # the fallback place is left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "corpus.txt.tokens"]


def test_the_second_load_maps_the_cache_without_reading_the_text(tmp_path: Path, monkeypatch):
    text = write(tmp_path / "corpus.txt", MIXED)
    built = tc.load_or_build(text, tmp_path)
    monkeypatch.setattr(tc, "code_point_chunks", pytest.fail)  # any decoding would fail
    again = tc.load_or_build(text, tmp_path)
    assert again.path == built.path and again.chars == built.chars
    assert cached_ids(again) == reference_ids(MIXED)


@pytest.mark.parametrize(
    ("vocab_size", "dtype"),
    [(1, "u1"), (256, "u1"), (257, "<u2"), (65536, "<u2"), (65537, "<i4"), (0x110000, "<i4")],
)
def test_ids_take_the_smallest_dtype_that_holds_the_vocabulary(vocab_size: int, dtype: str):
    assert tc.token_dtype(vocab_size) == np.dtype(dtype)


@pytest.mark.parametrize("chunk_bytes", [5, 1 << 22])  # ASCII chunks among others; one chunk
def test_a_vocabulary_over_256_characters_is_stored_as_uint16(
    tmp_path: Path, monkeypatch, chunk_bytes: int
):
    monkeypatch.setattr("tinygpt.data.text.CHUNK_BYTES", chunk_bytes)
    content = "".join(chr(0x400 + i) for i in range(300)) + "\n" + "ab" * 100
    text = write(tmp_path / "wide.txt", content)
    cache = tc.load_or_build(text, tmp_path)
    assert cache.tokens.dtype == np.dtype("<u2") and len(cache.chars) == 303
    assert cached_ids(cache) == reference_ids(content)
    header_and_ids = cache.path.stat().st_size
    assert header_and_ids % 64 == len(content) * 2 % 64  # ids start on a 64-byte boundary


def test_a_changed_text_is_tokenized_again(tmp_path: Path, caplog):
    text = write(tmp_path / "corpus.txt", MIXED)
    tc.load_or_build(text, tmp_path)
    write(text, MIXED.replace("To be", "XYZ be"))
    with caplog.at_level(logging.INFO, logger=tc.__name__):
        cache = tc.load_or_build(text, tmp_path)
    assert "of another text (the text changed): rebuilding it" in caplog.text
    assert "X" in cache.chars
    assert cached_ids(cache) == reference_ids(text.read_text())


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


def overwrite_header(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[20:30] = b"#" * 10
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (truncate, "incomplete or corrupt"),
        (overwrite_header, "unreadable"),
        (lambda p: p.write_bytes(b"garbage"), "not a token cache"),
        (lambda p: p.write_bytes(b""), "not a token cache"),
        (lambda p: p.write_bytes(tc.MAGIC + b"{" * 100), "unreadable"),  # no header line
    ],
)
def test_a_corrupt_or_partial_cache_is_rebuilt(tmp_path: Path, caplog, damage, reason):
    text = write(tmp_path / "corpus.txt", MIXED)
    damage(tc.load_or_build(text, tmp_path).path)
    with caplog.at_level(logging.INFO, logger=tc.__name__):
        cache = tc.load_or_build(text, tmp_path)
    assert f"is {reason}" in caplog.text
    assert cached_ids(cache) == reference_ids(MIXED)


def test_a_failed_build_leaves_no_file_and_a_killed_one_is_cleaned_up(tmp_path: Path, monkeypatch):
    text = write(tmp_path / "corpus.txt", MIXED)
    killed = tmp_path / ".c.tokens.abc123.part"  # what a killed build leaves
    killed.write_bytes(b"half")

    def interrupted(path, chunk_bytes=None, on_bytes=None):
        yield b"To"
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tc, "code_point_chunks", interrupted)
    monkeypatch.setattr(tc, "scan_vocabulary", lambda path, progress: ("Tbo", 2))
    monkeypatch.setattr(tc, "cache_locations", lambda text, cache_dir: [text.with_name("c.tokens")])
    with pytest.raises(WriteError, match="No space left on device"):
        tc.load_or_build(text, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]


@pytest.mark.parametrize("chunk_bytes", [5, 1 << 22])  # ASCII chunks among others; one chunk
def test_a_text_that_changes_while_being_tokenized_is_refused(
    tmp_path: Path, monkeypatch, chunk_bytes: int
):
    monkeypatch.setattr("tinygpt.data.text.CHUNK_BYTES", chunk_bytes)
    text = write(tmp_path / "corpus.txt", MIXED)
    monkeypatch.setattr(tc, "scan_vocabulary", lambda path, progress: ("To", len(MIXED)))
    with pytest.raises(DataError, match="changed while it was being tokenized"):
        tc.load_or_build(text, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt"]


def refuse_writes_in(monkeypatch, *dirs: Path) -> None:
    """Writes in ``dirs`` fail as in a read-only directory (tests run as root: chmod would not)."""
    mkstemp = tempfile.mkstemp

    def guarded(*args, dir=None, **kwargs):
        if Path(dir) in dirs:
            raise PermissionError(13, "Permission denied")
        return mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tc.tempfile, "mkstemp", guarded)


def test_a_read_only_text_directory_falls_back_to_the_data_cache(
    tmp_path: Path, monkeypatch, caplog
):
    corpora, data = tmp_path / "corpora", tmp_path / "data"
    corpora.mkdir()
    text = write(corpora / "corpus.txt", MIXED)
    refuse_writes_in(monkeypatch, corpora)
    with caplog.at_level(logging.WARNING, logger=tc.__name__):
        cache = tc.load_or_build(text, data)
    assert cache.path.parent == data / "tokens"
    assert cache.path.name.startswith("corpus.txt.") and cache.path.suffix == ".tokens"
    (line,) = caplog.messages
    assert line == (
        f"token cache: cannot write beside the text ({corpora}: Permission denied); "
        f"using {cache.path}"
    )
    assert cached_ids(cache) == reference_ids(MIXED)
    caplog.clear()
    assert tc.load_or_build(text, data).path == cache.path  # found there next time
    assert not caplog.messages


def test_no_writable_place_for_the_cache_is_one_error_naming_both(tmp_path: Path, monkeypatch):
    text = write(tmp_path / "corpus.txt", MIXED)
    refuse_writes_in(monkeypatch, tmp_path, tmp_path / "data" / "tokens")
    with pytest.raises(WriteError) as refused:
        tc.load_or_build(text, tmp_path / "data")
    assert str(refused.value) == (
        f"cannot write {tmp_path}: Permission denied; nor {tmp_path / 'data' / 'tokens'}: "
        f"Permission denied (the token cache of {text}); set data.cache_dir to a writable directory"
    )


def test_a_big_text_shows_progress_over_all_its_bytes(tmp_path: Path, monkeypatch):
    text = write(tmp_path / "corpus.txt", MIXED)
    bars = []

    class Recorder:
        def __init__(self, enabled: bool) -> None:
            self.enabled, self.tasks = enabled, {}
            bars.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def add_task(self, description: str, total: int) -> str:
            self.tasks[description] = [total, 0]
            return description

        def advance(self, task: str, n: int) -> None:
            self.tasks[task][1] += n

    monkeypatch.setattr(tc, "byte_progress", Recorder)
    monkeypatch.setattr(tc, "PROGRESS_FROM_BYTES", len(MIXED.encode()))
    tc.load_or_build(text, tmp_path)
    size = text.stat().st_size
    assert [(b.enabled, b.tasks) for b in bars] == [
        (True, {"scanning corpus.txt": [size, size]}),
        (True, {"tokenizing corpus.txt": [size, size]}),
    ]
    monkeypatch.setattr(tc, "PROGRESS_FROM_BYTES", size + 1)
    bars.clear()
    write(text, MIXED[1:])  # a text below the threshold shows none
    tc.load_or_build(text, tmp_path)
    assert [b.enabled for b in bars] == [False, False]


def test_the_data_module_trains_from_the_map_without_loading_the_split(tmp_path: Path):
    text = write(tmp_path / "corpus.txt", MIXED)
    dm = CharDataModule(path=str(text), cache_dir=str(tmp_path / "data"), block_size=8)
    dm.setup()
    cache = tmp_path / "corpus.txt.tokens"
    for split in (dm.train_data, dm.val_data):
        # A view of the mapped file: no copy of the ids in this process's memory.
        assert isinstance(split, np.memmap) and Path(split.filename) == cache
        assert not split.flags.owndata and not split.flags.writeable
    assert dm.fingerprint == sha256_of(text)
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == y.dtype == torch.int64 and x.shape == (dm.batch_size, 8)
    assert dm.tokenizer.decode(dm.val_data[:10]) == MIXED[len(dm.train_data) :][:10]
