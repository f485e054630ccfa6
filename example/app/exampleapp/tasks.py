"""Celery tasks for the demo."""

import time

from .celery import app
from .models import TaskRun
from .version import VERSION


@app.task(name="exampleapp.tasks.record_run")
def record_run(token: str, seconds: float = 0) -> str:
    """Sleep, then record that this checkout's version ran ``token``.

    Deliberately a plain create: running the same token twice raises
    IntegrityError, so lost or duplicated deliveries during a deploy show up.
    """
    if seconds > 0:
        time.sleep(seconds)
    TaskRun.objects.create(token=token, version=VERSION[:64])
    return token
