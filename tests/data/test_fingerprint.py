import hashlib
from pathlib import Path

from tinygpt.data import fingerprint
from tinygpt.data.fingerprint import text_fingerprint


def test_fingerprint_is_the_sha256_of_the_bytes_across_chunk_boundaries(
    tmp_path: Path, monkeypatch
):
    monkeypatch.setattr(fingerprint, "CHUNK_BYTES", 7)  # many chunks, one partial at the end
    raw = "Första linjen\nsecond line, é and ü\n".encode() * 5
    path = tmp_path / "t.txt"
    path.write_bytes(raw)
    assert text_fingerprint(path) == hashlib.sha256(raw).hexdigest()
    assert text_fingerprint(str(path)) == text_fingerprint(path)


def test_fingerprint_follows_the_contents_not_the_name(tmp_path: Path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("hello\n")
    b.write_text("hello\n")
    assert text_fingerprint(a) == text_fingerprint(b)
    b.write_text("hellp\n")
    assert text_fingerprint(a) != text_fingerprint(b)
