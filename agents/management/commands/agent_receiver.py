"""Receive the agent activity of this host's sandboxes (agents.receiver): the Procfile's
`agents` line, on the panel's machine and on each host agent's. Needs root (it enters the
sandboxes' network namespaces to listen there)."""

import asyncio
import signal

from django.core.management.base import BaseCommand

from agents.receiver import Receiver


class Command(BaseCommand):
    help = "Receive Claude Code's OpenTelemetry export from every running sandbox of this host."

    def handle(self, *args, **opts):
        receiver = Receiver()

        def ready():
            self.stdout.write(f"receiving agent events on 127.0.0.1:{receiver.port} of each sandbox", ending="\n")
            self.stdout.flush()

        async def main() -> None:
            stop = asyncio.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):  # the supervisor's stop: close the listeners, say what was done
                asyncio.get_running_loop().add_signal_handler(signum, lambda: (stop.set(), receiver.wake and receiver.wake.set()))
            await receiver.run(stop, ready=ready)
            self.stdout.write(receiver.summary())

        asyncio.run(main())
