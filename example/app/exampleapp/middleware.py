"""Middleware tagging every response with the serving color and version."""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .version import COLOR, VERSION


class BluegreenHeadersMiddleware:
    """Add X-Bluegreen-Color and X-App-Version so clients can tell who answered."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response["X-Bluegreen-Color"] = COLOR
        response["X-App-Version"] = VERSION
        return response
