"""How the API answers a refusal: DRF's own errors, plus the panel's (services' errors are
mapped in the views, where their meaning is known). Never a 500 for what a client sent."""

from django.core.exceptions import RequestDataTooBig
from rest_framework import exceptions
from rest_framework.views import exception_handler as drf_exception_handler

from .parsers import PayloadTooLarge


def exception_handler(exc, context):
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    if isinstance(exc, exceptions.UnsupportedMediaType):
        exc.detail = f"{exc.detail} Send application/json."
    return drf_exception_handler(exc, context)
