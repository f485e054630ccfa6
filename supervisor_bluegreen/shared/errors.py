"""The one root of our exceptions: every error of ours is a BluegreenError. Standard library only.

Each says what went wrong in words meant for a person, and the code that ends a job, answers an RPC or
exits a command catches it as such (never a traceback). Errors that are also an OSError or a ValueError
(an unsafe path, a full disk, bad arguments) are both, so callers that expect those keep working.
"""

from __future__ import annotations


class BluegreenError(Exception):
    """Something of ours could not be done; ``str()`` is the reason, said to the user as is."""
