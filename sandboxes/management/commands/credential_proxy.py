"""Run the credential proxy (sandboxes.network.proxy) on this host's bridges' gateways.

Its own Procfile line (`proxy`, in Procfile and Procfile.host): one process per host, beside the
events watcher that runs the resolver. The bridges are made first if they are missing (their
gateways are where it listens); when it cannot listen it exits, and the supervisor starts it again.
"""

import asyncio
import socket
import threading
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sandboxes import engine, network
from sandboxes.network import proxy


def listening(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1):
            return True
    except OSError:
        return False


class Command(BaseCommand):
    help = "Run the credential proxy on the sandbox bridges' gateways."

    def handle(self, *args, **opts):
        docker = engine.engine_for()
        for bridge in network.bridges_table():
            network.ensure_network_of(docker, bridge.mode)
        addresses, port = proxy.gateways(), settings.SANDBOX_PROXY_PORT
        holder: list = []
        started = threading.Event()

        def check():
            started.wait(10)
            time.sleep(1)
            missing = [a for a in addresses if not listening(a, port)]
            if missing and holder:
                self.stderr.write(f"the credential proxy could not listen on {', '.join(missing)}:{port}; stopping")
                holder[0].shutdown()

        threading.Thread(target=check, daemon=True).start()
        self.stdout.write(f"credential proxy on {', '.join(addresses)}, port {port}")
        asyncio.run(proxy.run(addresses, port, started=started, holder=holder))
        raise CommandError("the credential proxy stopped")
