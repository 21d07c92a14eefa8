"""Receive the agent activity of this host's sandboxes (agents.receiver): the Procfile's
`agents` line, on the panel's machine and on each host agent's. Needs root (it enters the
sandboxes' network namespaces to listen there)."""

import asyncio

from django.core.management.base import BaseCommand

from agents.receiver import Receiver


class Command(BaseCommand):
    help = "Receive Claude Code's OpenTelemetry export from every running sandbox of this host."

    def handle(self, *args, **opts):
        receiver = Receiver()

        def ready():
            self.stdout.write(f"receiving agent events on 127.0.0.1:{receiver.port} of each sandbox", ending="\n")
            self.stdout.flush()

        asyncio.run(receiver.run(ready=ready))
