"""The agent's HTTP client against a real local server: retries what is worth retrying (5xx,
429, network errors) with backoff, returns other answers, and streams downloads."""

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
from reprolab_agent import client as client_module
from reprolab_agent.client import Client, GaveUp

BODY = b"x" * (3 * 1024 * 1024 + 5)


class Handler(http.server.BaseHTTPRequestHandler):
    failures_left = 0

    def do_GET(self) -> None:
        if self.path == "/missing":
            self.send_response(404)
            self.end_headers()
            self.wfile.write(b'{"detail": "no"}')
            return
        if Handler.failures_left > 0:
            Handler.failures_left -= 1
            self.send_response(503)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(client_module.time, "sleep", lambda seconds: None)  # backoff without waiting
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Client(f"http://127.0.0.1:{httpd.server_port}", "rln_test", timeout=5)
    httpd.shutdown()
    Handler.failures_left = 0


def test_5xx_is_retried_until_it_answers(server):
    Handler.failures_left = 2
    reply = server.call("GET", "/data")
    assert reply.status == 200
    assert reply.body == BODY
    assert Handler.failures_left == 0


def test_other_errors_are_returned_not_retried(server):
    reply = server.call("GET", "/missing")
    assert reply.status == 404
    assert reply.json() == {"detail": "no"}


def test_it_gives_up_after_retry_for(server):
    Handler.failures_left = 10_000
    with pytest.raises(GaveUp, match="HTTP 503"):
        server.call("GET", "/data", retry_for=0)


def test_download_streams_to_disk_and_returns_the_sha256(server, tmp_path: Path):
    Handler.failures_left = 1
    target = tmp_path / "blob"
    assert server.download("/data", target) == hashlib.sha256(BODY).hexdigest()
    assert target.read_bytes() == BODY
    with pytest.raises(RuntimeError, match="HTTP 404"):
        server.download("/missing", tmp_path / "other")
