"""Webhooks on deploy start, success, failure and rollback: Slack-compatible JSON, never fatal.

A webhook that is down must not fail a deploy, so errors are logged and swallowed. A webhook URL's
path is its secret (Slack's ``/services/T…/B…/…``): logs show only ``scheme://host/…``. A chat gets the
outcome's first line, never the detail under it (a failed health gate's stderr tail stays in the log).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests

from supervisor_bluegreen.shared.config import App
from supervisor_bluegreen.shared.masking import mask_credentials, mask_url, mask_urls

EMOJI = {
    "start": ":rocket:",
    "success": ":white_check_mark:",
    "failure": ":x:",
    "rollback": ":leftwards_arrow_with_hook:",
}


def message(event: str, app: str, text: str, **fields: Any) -> dict[str, Any]:
    """The JSON body: ``text`` for Slack and compatible chats, the rest for machines.

    Only the first line of ``text`` is sent (what happened), with no credentials in it: the lines under
    it (a stderr tail, the app's output) may hold secrets and belong in the deploy log only.
    """
    first = mask_credentials(text.split("\n", 1)[0].strip())
    return {
        "text": f"{EMOJI.get(event, '')} {first}".strip(),
        "username": "bluegreen",
        "event": event,
        "app": app,
        **fields,
    }


def announce(app: App, job_id: int, log: Callable[[str], None], event: str, text: str, **fields: Any) -> None:
    """Tell the app's webhooks (if any) about ``event`` of job ``job_id``."""
    if app.deploy and app.deploy.webhooks:
        send(app.deploy.webhooks, message(event, app.name, text, job=job_id, **fields), log)


def send(urls: tuple[str, ...], body: dict[str, Any], log: Callable[[str], None], timeout: float = 5.0) -> None:
    """POST ``body`` to every URL; a failure is logged, never raised."""
    for url in urls:
        try:
            resp = requests.post(url, json=body, timeout=timeout)
            if resp.status_code >= 400:
                log(f"webhook {mask_url(url)}: HTTP {resp.status_code}")
        except requests.RequestException as exc:  # its text repeats the URL: masked too
            log(f"webhook {mask_url(url)}: {type(exc).__name__}: {_without(url, str(exc))}")


def _without(url: str, text: str) -> str:
    """An error's text without the URL's secrets: requests repeats the URL, or its path alone ("with url: /…")."""
    text = mask_urls(text)
    parts = urlsplit(url)
    for secret in (f"{parts.path}?{parts.query}", parts.path, parts.query):
        if secret.strip("/?"):
            text = text.replace(secret, "/…")
    return text
