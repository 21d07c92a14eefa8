from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from .selectors import audit_events_visible


def audit_list(request: HttpRequest) -> HttpResponse:
    """The audit trail, newest first, 100 to a page."""
    page = Paginator(audit_events_visible(user=request.user), 100).get_page(request.GET.get("page"))
    return render(request, "audit/list.html", {"page": page})
