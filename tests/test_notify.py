"""Webhooks: Slack-compatible JSON reaches a real HTTP server; a dead webhook never raises."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from example.stack import free_port
from supervisor_bluegreen.host import notify


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
    assert log[0] == f"webhook {server}/…: HTTP 500"  # the path (a Slack webhook's secret) is never logged
    assert log[1].startswith(f"webhook {dead.rsplit('/', 1)[0]}/…: ConnectionError")
    assert "/hook" not in log[1]


def test_webhook_secrets_never_reach_logs(server: str) -> None:
    """A Slack URL's path, a token in the query and user:password never appear in what is logged."""
    log: list[str] = []
    port = free_port()
    secret = f"http://bot:hunter2@127.0.0.1:{port}/services/T000/B000/XXXXSECRET?token=abc123"
    notify.send((secret,), notify.message("start", "abiapp", "x"), log.append, 2)
    assert len(log) == 1 and log[0].startswith(f"webhook http://127.0.0.1:{port}/…: ConnectionError")
    for leak in ("XXXXSECRET", "abc123", "hunter2", "services"):
        assert leak not in log[0]


def test_webhook_text_is_the_first_line_only() -> None:
    """A failed health gate's stderr tail (the lines under the reason) stays in the deploy log."""
    text = (
        "abiapp: deploy of 3f2c1a9 failed: blue is not healthy: HTTP 500\n"
        "--- abiapp_blue stderr (errors, then the last lines) ---\n"
        "django.db.OperationalError: (1045, \"Access denied for user 'abiapp' using password: s3cret\")"
    )
    body = notify.message("failure", "abiapp", text)
    assert body["text"] == ":x: abiapp: deploy of 3f2c1a9 failed: blue is not healthy: HTTP 500"
    assert "s3cret" not in json.dumps(body)
    masked = notify.message("failure", "abiapp", "fetch https://deploy:tok3n@git.example.org/app.git failed")
    assert "tok3n" not in masked["text"] and "https://***@git.example.org/app.git" in masked["text"]
