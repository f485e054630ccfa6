"""URL routes (no trailing slashes: probes and benchmarks hit them verbatim)."""

from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="index"),
    path("health", views.health, name="health"),
    path("version", views.version, name="version"),
    path("slow", views.slow, name="slow"),
    path("notes", views.notes, name="notes"),
]
