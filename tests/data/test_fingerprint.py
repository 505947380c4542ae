import hashlib
from pathlib import Path

from tinygpt.data import download
from tinygpt.data.download import sha256_of


def test_fingerprint_is_the_sha256_of_the_bytes_across_chunk_boundaries(
    tmp_path: Path, monkeypatch
):
    monkeypatch.setattr(download, "CHUNK_BYTES", 7)  # many chunks, one partial at the end
    raw = "Första linjen\nsecond line, é and ü\n".encode() * 5
    path = tmp_path / "t.txt"
    path.write_bytes(raw)
    assert sha256_of(path) == hashlib.sha256(raw).hexdigest()
    assert sha256_of(str(path)) == sha256_of(path)


def test_fingerprint_follows_the_contents_not_the_name(tmp_path: Path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("hello\n")
    b.write_text("hello\n")
    assert sha256_of(a) == sha256_of(b)
    b.write_text("hellp\n")
    assert sha256_of(a) != sha256_of(b)
