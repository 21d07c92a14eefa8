"""The join-token flow on a PostgreSQL database of a test's own, run in subprocesses
(`manage.py shell -c`), as tests/support/panel_db.py is for the database move: the suite itself
may be on SQLite, where tokens are refused. Each function prints one JSON line."""

import json
import re
import threading

from django.contrib.auth import get_user_model
from django.test import Client

from audit.models import AuditEvent
from hosts import join
from hosts.models import Host, JoinToken


def _say(value) -> None:
    print(json.dumps(value, default=str))


def page_token(name: str, labels: str = "") -> None:
    """A superuser makes a token on the Hosts page: the command it shows, and whether a second
    look at the page shows it again."""
    User = get_user_model()
    admin = User.objects.filter(username="root").first() or User.objects.create_superuser("root", password="pw-root-123")
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(admin)
    made = client.post("/hosts/tokens/new/", {"name": name, "labels": labels})
    page = made.content.decode()
    found = re.search(r'<code id="join-token">(ccpj1\.[A-Za-z0-9_-]+)</code>', page)
    again = client.get("/hosts/").content.decode()
    errors = re.findall(r'<ul class="errorlist[^"]*">(.*?)</ul>', page, re.S)
    _say(
        {
            "status": made.status_code,
            "token": found.group(1) if found else "",
            "shown_again": bool(found) and found.group(1) in again,
            "no_store": made.get("Cache-Control") == "no-store",
            "errors": " ".join(re.sub(r"<[^>]+>", "", e) for e in errors),
        }
    )


def state() -> None:
    """Every host, token and audit event about hosts, as plain values."""
    _say(
        {
            "hosts": list(Host.objects.order_by("name").values("name", "agent", "enabled", "labels", "docker_url")),
            "tokens": list(JoinToken.objects.order_by("pk").values("pk", "name", "secret_sha256", "used_at", "revoked_at", "host__name")),
            "audit": list(
                AuditEvent.objects.filter(action__startswith="host.").order_by("pk").values("action", "target", "details", "actor_name")
            ),
        }
    )


def expire(name: str) -> None:
    JoinToken.objects.filter(name=name).update(expires_at="2000-01-01T00:00:00Z")


def revoke(name: str) -> None:
    from teams.permissions import SystemActor

    for token in JoinToken.objects.filter(name=name):
        join.token_revoke(actor=SystemActor("test"), token=token)


def race(text: str, threads: int = 2) -> None:
    """`threads` joins with one token at the same moment (each its own connection)."""
    from django.db import connection

    payload = join.decode(text)
    start = threading.Barrier(threads)
    outcomes: list[str] = []

    def one():
        start.wait()
        try:
            join.host_join(payload=payload)
            outcomes.append("joined")
        except join.JoinError as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    workers = [threading.Thread(target=one) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    _say(sorted(outcomes))
