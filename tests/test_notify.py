"""Webhooks: Slack-compatible JSON reaches a real HTTP server; a dead webhook never raises."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from example.stack import free_port
from supervisor_bluegreen import notify


class Recorder(BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def do_POST(self) -> None:
        Recorder.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(500 if self.path == "/broken" else 200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_message_is_slack_compatible() -> None:
    body = notify.message("success", "abiapp", "abiapp: green live at 3f2c1a9 in 41.8 s", commit="3f2c1a9")
    assert body["text"] == ":white_check_mark: abiapp: green live at 3f2c1a9 in 41.8 s"
    assert body["event"] == "success" and body["app"] == "abiapp" and body["commit"] == "3f2c1a9"


def test_send_posts_json_and_logs_failures_without_raising(server: str) -> None:
    Recorder.bodies.clear()
    log: list[str] = []
    dead = f"http://127.0.0.1:{free_port()}/hook"
    notify.send((f"{server}/hook", f"{server}/broken", dead), notify.message("start", "abiapp", "x"), log.append, 2)
    assert [b["event"] for b in Recorder.bodies] == ["start", "start"]
    assert log[0] == f"webhook {server}/broken: HTTP 500"
    assert log[1].startswith(f"webhook {dead}: ConnectionError")
