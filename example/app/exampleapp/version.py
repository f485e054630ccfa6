"""Identity of this checkout: its version and deploy color.

Computed once at import so every response and task run can cheaply report
which copy (blue or green) of which release served it.
"""

import os
import subprocess
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def read_version(checkout: Path) -> str:
    """Return the checkout's version: VERSION file, else short git HEAD, else "unknown".

    Only the first line of VERSION is used, since the value goes into an
    HTTP header and a stray newline would break every response.
    """
    try:
        text = (checkout / "VERSION").read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    if text:
        return text.splitlines()[0].strip()
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return proc.stdout.strip() or "unknown"


VERSION: str = read_version(BASE_DIR)
COLOR: str = os.environ.get("BLUEGREEN_COLOR", "")
