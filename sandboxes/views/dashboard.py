"""The dashboard (every sandbox the user may see, a page at a time) and the New sandbox form."""

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render

from controlpanel.http import client_ip
from teams.permissions import Role, request_roles

from .. import policy, selectors, services
from ..forms import SandboxCreateForm
from ..models import Sandbox
from ..rows import render_rows, rows_for


def dashboard(request: HttpRequest) -> HttpResponse:
    roles = request_roles(request)
    search = request.GET.get("q", "").strip()[:100]
    page = selectors.sandbox_page(user=request.user, roles=roles, search=search, page=request.GET.get("page"))
    csrf = get_token(request)  # each call masks the token anew, with 32 random characters
    context = {
        "page": page,
        "rows_html": render_rows(rows_for(page.object_list, roles, csrf=csrf)),
        "search": search,
        "csrf": csrf,
        "can_create": any(r != Role.VIEWER for r in roles.values()),
    }
    return render(request, "sandboxes/dashboard.html", context)


def sandbox_create(request: HttpRequest) -> HttpResponse:
    form = SandboxCreateForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            services.sandbox_create(
                actor=request.user,
                team=data["team"],
                name=data["name"],
                image=data["image"],
                memory_mb=data["memory_mb"],
                cpus=data["cpus"],
                network_mode=data["network_mode"],
                extra_mounts=data["extra_mounts"],
                writable_root=data["writable_root"],
                low_ports_and_ping=data["low_ports_and_ping"],
                runtime=data.get("runtime") or Sandbox.Runtime.RUNC,
                selinux_level=(data.get("selinux_level") or "").strip(),
                egress_presets=data.get("egress_presets") or [],
                egress_allow=data.get("egress_allow") or "",
                disk_mb=data.get("disk_mb"),
                host=data.get("host") or None,
                source_ip=client_ip(request),
            )
        except services.NotQueued as exc:
            messages.error(request, f"{data['name']} was recorded, but not started: {exc.reason}. Start it when the queue is back.")
            return redirect("dashboard")
        except services.InvalidInput as exc:
            for field, problems in exc.errors.items():
                form.add_error(field if field in form.fields else None, problems)
        except policy.PolicyViolation as exc:
            form.add_error("extra_mounts" if data["extra_mounts"] else None, exc.problems)
        else:
            messages.success(request, f"Creating {data['name']}…")
            return redirect("dashboard")
    return render(request, "sandboxes/create.html", {"form": form}, status=400 if form.errors else 200)
