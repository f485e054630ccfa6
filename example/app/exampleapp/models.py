"""Models the demo uses to show DB reads/writes and task execution across deploys."""

from django.db import models


class Note(models.Model):
    """A line of text; lets the demo show data surviving a color switch."""

    text = models.CharField(max_length=200)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.text


class TaskRun(models.Model):
    """One execution of ``record_run``; the unique token exposes duplicate runs."""

    token = models.CharField(max_length=64, unique=True)
    version = models.CharField(max_length=64)
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.token}@{self.version}"
