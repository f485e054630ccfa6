"""Views used by the demo, health checks and benchmarks."""

import logging
import math
import os
import time

from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from .models import Note
from .version import COLOR, VERSION

log = logging.getLogger(__name__)

# the environment a release runs with, as `restart` applies it: a greeting /version shows, and a setting
# that makes the instance fail its health checks that many seconds after it started (a bad value)
GREETING = os.environ.get("EXAMPLE_GREETING", "")
FAIL_AFTER = float(os.environ.get("EXAMPLE_FAIL_AFTER") or "0")
STARTED = time.monotonic()

MAX_SLOW_SECONDS = 60.0


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    """Human-facing page showing which version and color answered."""
    return render(request, "index.html", {"version": VERSION, "color": COLOR})


@require_GET
def health(request: HttpRequest) -> HttpResponse:
    """Readiness probe: 200 only when the database is reachable."""
    if FAIL_AFTER and time.monotonic() - STARTED > FAIL_AFTER:
        return HttpResponse("broken by EXAMPLE_FAIL_AFTER", status=500, content_type="text/plain")
    try:
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        log.warning("health check: database unusable: %s", exc)
        return HttpResponse("db down", status=503, content_type="text/plain")
    return HttpResponse(f"ok {VERSION}", content_type="text/plain")


@require_GET
def version(request: HttpRequest) -> JsonResponse:
    """Machine-readable identity of this instance."""
    return JsonResponse({"version": VERSION, "color": COLOR, "greeting": GREETING})


@require_GET
def slow(request: HttpRequest) -> HttpResponse:
    """Hold the request open for ``seconds`` (max 60) to test graceful draining."""
    try:
        seconds = float(request.GET.get("seconds", "1"))
    except ValueError:
        return HttpResponseBadRequest("bad seconds", content_type="text/plain")
    if not math.isfinite(seconds):
        return HttpResponseBadRequest("bad seconds", content_type="text/plain")
    time.sleep(min(max(seconds, 0.0), MAX_SLOW_SECONDS))
    return HttpResponse("slow done", content_type="text/plain")


@require_GET
def notes(request: HttpRequest) -> JsonResponse:
    """List all notes, oldest first."""
    rows = [{"id": n.pk, "text": n.text, "created": n.created.isoformat()} for n in Note.objects.order_by("pk")]
    return JsonResponse({"notes": rows})
