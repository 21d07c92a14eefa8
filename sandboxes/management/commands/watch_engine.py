"""Follow Docker's container events: keep every sandbox's status true, and write die, oom, kill
and destroy into the audit trail. It watches this machine's engine, its host's (PANEL_HOST:
"local" on the panel's machine, its own on a host agent's), and resyncs that host's sandboxes.

Runs beside the web server (the Procfile's `events` line). On start and after every reconnect it
resyncs all sandboxes, so events missed while it was not running are caught up; the Celery beat
resync every 30 s covers the rest.

Three services of sandboxes.network have no Procfile line of their own: they run inside this
process, each in a daemon thread started below, and stop with it (the supervisor starts the
whole process again):

- the allowlist bridge's resolver (network.resolver): while it is down, allowlist sandboxes
  resolve nothing new, and a start or a move into allowlist mode is refused;
- the decision log (network.decision_log): refusals are read from the kernel's log only while it
  runs;
- the egress rules' watch (network.watch): a rule changed by hand waits for the periodic check
  (every 30 s) while it is down;
- the host's heartbeat (hosts.heartbeat): every few seconds, this machine's host row gets the
  time, the engine's version and its error if it did not answer (the Hosts page shows them).
"""

import logging
import time

from django.conf import settings
from django.core.management.base import BaseCommand

from hosts import heartbeat
from sandboxes import engine, services
from sandboxes.network import decision_log, resolver, watch

log = logging.getLogger(__name__)
RELEVANT = {"start", "die", "oom", "kill", "stop", "pause", "unpause", "destroy", "restart"}
GRANTS_CHANGE = {"start", "die", "destroy"}  # an address on the allowlist bridge taken or freed


class Command(BaseCommand):
    help = "Follow Docker events and update sandbox statuses."

    def handle(self, *args, **opts):
        decision_log.start_thread()  # the decision log: refusals of the egress rules, per sandbox
        resolver.start_thread()  # the allowlist bridge's DNS, on its gateway
        watch.start_thread()  # the egress rules, repaired within a second of a change by hand
        heartbeat.start_thread()  # this machine's host: last seen, engine version, last error
        delay = 1.0
        while True:
            try:
                since = time.time()
                services.egress_repair()  # before any resync: after a dockerd restart too
                services.reconcile_all(host_name=settings.PANEL_HOST)  # its own host's: the engine it watches
                services.grants_repair()
                self.stdout.write("watching Docker events")
                for event in engine.engine_for().events(since=since):
                    # "health_status: unhealthy" and the like: the health check's state changed.
                    if event["action"] in RELEVANT or event["action"].startswith("health_status"):
                        services.sandbox_sync_container(container_id=event["id"])
                        if event["action"] in GRANTS_CHANGE:
                            services.grants_repair()
                    services.record_engine_event(event=event)
                    delay = 1.0
            except engine.EngineError as exc:
                log.warning("Docker events unavailable (%s); retrying in %.0fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
