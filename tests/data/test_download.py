import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from tinygpt.data.download import fetch_verified
from tinygpt.errors import DataError

PAYLOAD = b"To be, or not to be, that is the question.\n" * 200


@pytest.fixture
def server():
    """Serve PAYLOAD at /input.txt from 127.0.0.1 on a free port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/input.txt"
    httpd.shutdown()
    httpd.server_close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_and_writes(server, tmp_path: Path):
    dest = tmp_path / "cache" / "input.txt"
    fetch_verified(server, dest, len(PAYLOAD), sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert list(dest.parent.iterdir()) == [dest]  # no temporary file left


def test_checksum_mismatch_leaves_nothing(server, tmp_path: Path):
    dest = tmp_path / "input.txt"
    with pytest.raises(DataError, match="failed verification"):
        fetch_verified(server, dest, len(PAYLOAD), sha(b"other"), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_server_down_is_a_clear_error(tmp_path: Path):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "input.txt"
    with pytest.raises(DataError, match="could not download"):
        fetch_verified(f"http://127.0.0.1:{port}/x", dest, 10, sha(b""), timeout=5, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_verified_cache_works_offline(tmp_path: Path):
    dest = tmp_path / "input.txt"
    dest.write_bytes(PAYLOAD)
    url = "http://127.0.0.1:9/unreachable"
    assert fetch_verified(url, dest, len(PAYLOAD), sha(PAYLOAD), progress=False) == dest


def test_corrupt_cache_is_downloaded_again(server, tmp_path: Path):
    dest = tmp_path / "input.txt"
    dest.write_bytes(b"corrupted")
    fetch_verified(server, dest, len(PAYLOAD), sha(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
