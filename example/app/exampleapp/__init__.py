"""Example Django app deployed blue/green by supervisor-bluegreen.

The Celery app is imported here so ``@shared_task`` and ``celery -A exampleapp``
bind to it, as the Celery/Django docs recommend.
"""

from .celery import app as celery_app

__all__ = ("celery_app",)
