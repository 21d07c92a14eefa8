"""The status websocket: the dashboard's rows and a sandbox page's panel, kept live.

A dashboard socket joins `team.<id>` for each team its user can see; a sandbox page's socket
joins `sandbox.<pk>`. Both join their user's group, so logging out closes them. Every message is
authorised again (the session may have ended, the user may have been disabled or removed from
the team since), and renders just the one row or panel it is about with the same partial the
page used.
"""

import contextlib
from urllib.parse import parse_qs

from asgiref.sync import async_to_sync
from channels.generic.websocket import WebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.template.loader import render_to_string

from hosts.selectors import host_count
from teams.models import Membership
from teams.permissions import Role, team_roles

from .. import live, selectors
from ..models import Sandbox
from ..rows import render_row, render_rows, row_for, rows_for
from . import access

CLOSE_UNAUTHORISED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TRY_LATER = 1013


class StatusConsumer(WebsocketConsumer):
    def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            self.close(code=CLOSE_UNAUTHORISED)
            return
        self.user_id = user.pk
        self.sandbox_id = self.scope["url_route"]["kwargs"].get("pk")
        query = parse_qs(self.scope.get("query_string", b"").decode())
        self.search = (query.get("q") or [""])[0]
        try:
            self.page_number = max(1, int((query.get("page") or ["1"])[0]))
        except ValueError:
            self.page_number = 1
        self.first_page = self.page_number == 1
        if self.sandbox_id is not None:
            if selectors.sandbox_get_visible(user=user, pk=self.sandbox_id) is None:
                self.close(code=CLOSE_FORBIDDEN)
                return
            groups = [live.sandbox_group(self.sandbox_id)]
        else:
            groups = [live.team_group(team_id) for team_id in team_roles(user=user)]
        self.session_key = self.scope["session"].session_key or ""
        self.groups_joined = [*groups, live.user_group(user.pk)]
        try:
            for group in self.groups_joined:
                async_to_sync(self.channel_layer.group_add)(group, self.channel_name)
        except Exception:  # noqa: BLE001 - Redis is down: the page's socket retries with backoff
            self.close(code=CLOSE_TRY_LATER)
            return
        self.accept()
        # The current state at once: what changed between the page render and this connection.
        if self.sandbox_id is not None:
            self.sandbox_status({"sandbox_id": self.sandbox_id, "created": False})
        else:
            self._send_page(user)

    def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            with contextlib.suppress(Exception):  # Redis away: the group expires by itself
                async_to_sync(self.channel_layer.group_discard)(group, self.channel_name)

    def session_ended(self, event):
        if event.get("session") not in (None, self.session_key):
            user = get_user_model().objects.filter(pk=self.user_id, is_active=True).first()
            if user is not None and access.session_is_valid(self.session_key, user):
                return  # another browser's session ended; this one's is still good
        self.close(code=CLOSE_UNAUTHORISED)

    def _csrf(self) -> str:
        # The action buttons are forms: they need the CSRF token a request would have given them.
        # The cookie's secret is a valid form token (Django accepts it unmasked).
        return self.scope.get("cookies", {}).get(settings.CSRF_COOKIE_NAME, "")

    def _context(self) -> dict:
        return {"oob": True}

    def _send_page(self, user) -> None:
        roles = team_roles(user=user)
        page = selectors.sandbox_page(user=user, roles=roles, search=self.search, page=self.page_number)
        context = {
            **self._context(),
            "page": page,
            "rows_html": render_rows(rows_for(page.object_list, roles, csrf=self._csrf())),
            "search": self.search,
        }
        self.send(text_data=render_to_string("sandboxes/_rows.html", context))

    def _role(self, user, team_id: int) -> str | None:
        if user.is_superuser:
            return Role.ADMIN
        return Membership.objects.filter(user_id=user.pk, team_id=team_id).values_list("role", flat=True).first()

    def access_changed(self, event):
        pass  # every status message is authorised again anyway

    def sandbox_status(self, event):
        """One sandbox changed: re-check the session and who may see the sandbox, then send its
        row or panel (four queries, however many sandboxes and sockets there are)."""
        user = get_user_model().objects.filter(pk=self.user_id, is_active=True).first()
        if user is None or not access.session_is_valid(self.session_key, user):
            self.close(code=CLOSE_UNAUTHORISED)
            return
        sandbox = Sandbox.objects.select_related("team", "host").annotate(host_count=host_count()).filter(pk=event["sandbox_id"]).first()
        role = self._role(user, sandbox.team_id) if sandbox is not None else None
        if self.sandbox_id is not None:
            if role is None or sandbox is None:
                self.close(code=CLOSE_FORBIDDEN)  # no longer visible to this user
                return
            context = {**self._context(), "sandbox": sandbox, "row": row_for(sandbox, role, csrf=self._csrf(), back_to_detail=True)}
            self.send(text_data=render_to_string("sandboxes/_panel.html", context))
            return
        if role is None or sandbox is None or sandbox.status == Sandbox.Status.DESTROYED:
            self.send(text_data=f'<tr id="sandbox-{int(event["sandbox_id"])}" hx-swap-oob="delete"></tr>')
            return
        insert = bool(event.get("created"))
        if insert and (not self.first_page or self.search.lower() not in sandbox.name):
            return  # a new sandbox, but not on the page this socket shows
        self.send(text_data=render_row(row_for(sandbox, role, csrf=self._csrf()), oob=True, insert=insert))
