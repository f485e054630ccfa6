"""Celery app, configured from Django settings keys prefixed with CELERY_."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exampleapp.settings")

app = Celery("exampleapp", include=["exampleapp.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
