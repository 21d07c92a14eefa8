"""Websocket for live pages: re-renders the same partials the pages render first."""

from asgiref.sync import async_to_sync
from channels.generic.websocket import WebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user_model
from django.template.loader import render_to_string

from teams.permissions import team_roles

from . import live, selectors


class SandboxesConsumer(WebsocketConsumer):
    """Pushes the dashboard rows (and, on a detail page, that sandbox's panel) on every change.

    It joins the group of its sign-in session too: logging out sends `session.ended` there,
    which closes every socket the session opened."""

    def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            self.close(code=4401)
            return
        self.sandbox_id = self.scope["url_route"]["kwargs"].get("pk")
        if self.sandbox_id is not None and selectors.sandbox_get_visible(user=user, pk=self.sandbox_id) is None:
            self.close(code=4403)
            return
        self.groups_joined = [live.GROUP, live.session_group(self.scope["session"].session_key or "")]
        for group in self.groups_joined:
            async_to_sync(self.channel_layer.group_add)(group, self.channel_name)
        self.accept()
        # Send the current state at once: anything that changed between the page render and
        # this connection would otherwise stay stale until the next change.
        self.sandbox_changed({"sandbox_id": self.sandbox_id})

    def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            async_to_sync(self.channel_layer.group_discard)(group, self.channel_name)

    def session_ended(self, event):
        self.close(code=4401)

    def sandbox_changed(self, event):
        # Authorise again on every event: the user may have been disabled since connecting.
        user = get_user_model().objects.filter(pk=self.scope["user"].pk, is_active=True).first()
        if user is None:
            self.close(code=4401)
            return
        # The action buttons are forms: they need the CSRF token a request would have given them.
        # The cookie's secret is a valid form token (Django accepts it unmasked).
        context = {"oob": True, "user": user, "csrf_token": self.scope.get("cookies", {}).get(settings.CSRF_COOKIE_NAME, ""),
                   "roles": team_roles(user=user)}
        if self.sandbox_id is None:
            context["sandboxes"] = selectors.sandbox_list_visible(user=user)
            self.send(text_data=render_to_string("sandboxes/_rows.html", context))
        elif event["sandbox_id"] in (None, self.sandbox_id):
            context["sandbox"] = selectors.sandbox_list_visible(user=user, include_destroyed=True).filter(pk=self.sandbox_id).first()
            if context["sandbox"] is None:
                self.close(code=4403)  # no longer visible to this user
                return
            self.send(text_data=render_to_string("sandboxes/_panel.html", context))
