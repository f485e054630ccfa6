#!/usr/bin/env python
"""Django's command-line entry point for the example app (migrate, collectstatic, ...)."""

import os
import sys


def main() -> None:
    """Run a management command with this checkout's settings."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exampleapp.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
