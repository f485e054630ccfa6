"""Webhooks on deploy start, success, failure and rollback: Slack-compatible JSON, never fatal.

A webhook that is down must not fail a deploy, so errors are logged and swallowed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from .config import App

EMOJI = {
    "start": ":rocket:",
    "success": ":white_check_mark:",
    "failure": ":x:",
    "rollback": ":leftwards_arrow_with_hook:",
}


def message(event: str, app: str, text: str, **fields: Any) -> dict[str, Any]:
    """The JSON body: ``text`` for Slack and compatible chats, the rest for machines."""
    return {
        "text": f"{EMOJI.get(event, '')} {text}".strip(),
        "username": "bluegreen",
        "event": event,
        "app": app,
        **fields,
    }


def announce(app: App, job: dict[str, Any], log: Callable[[str], None], event: str, text: str, **fields: Any) -> None:
    """Tell the app's webhooks (if any) about ``event`` of ``job``."""
    if app.deploy and app.deploy.webhooks:
        send(app.deploy.webhooks, message(event, app.name, text, job=job["id"], **fields), log)


def send(urls: tuple[str, ...], body: dict[str, Any], log: Callable[[str], None], timeout: float = 5.0) -> None:
    """POST ``body`` to every URL; a failure is logged, never raised."""
    for url in urls:
        try:
            resp = requests.post(url, json=body, timeout=timeout)
            if resp.status_code >= 400:
                log(f"webhook {url}: HTTP {resp.status_code}")
        except requests.RequestException as exc:
            log(f"webhook {url}: {type(exc).__name__}: {exc}")
