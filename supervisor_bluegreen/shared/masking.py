"""Keep secrets out of logs and webhooks: URLs' paths and credentials, the app's secret environment values.

Standard library only (the store masks job log lines with it, inside supervisord's process too).
A Slack webhook's secret is its path; a database URL's is its password; either may sit in a config
value, a command line or an error message that ends up in a deploy log or a chat channel.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

MASK = "***"
URL_RE = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
USERINFO_RE = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"<>]*@")
# environment keys whose values are secrets: DJANGO_SECRET_KEY, DB_PASSWORD, API_TOKEN, SENTRY_DSN, ...
SECRET_KEY_RE = re.compile(r"PASS|SECRET|TOKEN|KEY|AUTH|CREDENTIAL|PRIVATE|DSN|COOKIE|SESSION", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``scheme://host[:port]/…``: no credentials, path, query or fragment (where webhook secrets live)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return f"{url.split(':', 1)[0]}://{MASK}" if "://" in url else MASK
    if not parts.scheme or not host:
        return MASK
    if ":" in host:  # IPv6
        host = f"[{host}]"
    rest = "/…" if (parts.path not in ("", "/") or parts.query or parts.fragment) else ""
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{rest}"


def mask_urls(text: str) -> str:
    """``text`` with every URL in it reduced by ``mask_url``."""
    return URL_RE.sub(lambda m: mask_url(m.group()), text)


def mask_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it replaced (paths kept: fine for logs)."""
    return USERINFO_RE.sub(lambda m: f"{m.group(1)}{MASK}@", text)


def secret_key(key: str) -> bool:
    """Whether an environment variable's name says its value is a secret."""
    return bool(SECRET_KEY_RE.search(key))


def mask_environment(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The environment as it may be logged: secret-named values masked, URLs without credentials."""
    return {key: MASK if secret_key(key) else mask_credentials(value) for key, value in pairs}
