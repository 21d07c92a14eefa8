"""Middleware that must run before everything else, static files included."""

from django.http import HttpRequest, HttpResponse


class ValidHostMiddleware:
    """Refuse a request whose Host header is not one of ALLOWED_HOSTS (DNS rebinding) before any
    response is made: Django checks the host only when something asks for it, and the static
    files are served before anything does."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.get_host()  # raises DisallowedHost, which Django answers with 400
        return self.get_response(request)
