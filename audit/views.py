from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from teams.permissions import teams_visible

from . import export
from .selectors import audit_events_filtered, shows_positions


def audit_list(request: HttpRequest) -> HttpResponse:
    """The audit trail, newest first, 100 to a page, narrowed by the filters in the query."""
    events, applied, problems = audit_events_filtered(user=request.user, params=request.GET)
    page = Paginator(events, 100).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "page": page,
        "applied": applied,
        "problems": problems,
        "query": query.urlencode(),
        "teams": teams_visible(user=request.user),
        "show_seq": shows_positions(request.user),
    }
    return render(request, "audit/list.html", context)


def audit_export(request: HttpRequest, fmt: str) -> HttpResponse | StreamingHttpResponse:
    """The filtered events as CSV or JSON Lines, streamed a chunk at a time (flat memory), ending
    with a digest that `manage.py audit verify --file` checks."""
    events, applied, problems = audit_events_filtered(user=request.user, params=request.GET)
    if problems:
        return HttpResponse(" ".join(problems) + "\n", status=400, content_type="text/plain; charset=utf-8")
    lines = export.export_for(request.user, events, fmt=fmt, filters=applied)
    content_type = "application/x-ndjson" if fmt == "jsonl" else "text/csv; charset=utf-8"
    response = StreamingHttpResponse((line.encode() for line in lines), content_type=content_type)
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.{fmt}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response
