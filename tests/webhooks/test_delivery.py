"""Deliveries against a receiver on loopback: signed, retried on 5xx/429/no answer with a backoff,
never retried on other 4xx, never sent to a private address unless an admin allowed it, and
judged again at every delivery."""

import json
import socket
import threading
import time

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from audit.models import AuditEvent
from sandboxes.secrets import vault
from sandboxes.services import InvalidInput
from webhooks import addresses, services, tasks
from webhooks.models import Delivery, Webhook

from .conftest import declare, superuser
from .helpers import Receiver, certificates

pytestmark = pytest.mark.django_db(transaction=True)
D = Delivery.Status


def hook_for(receiver, team, admin, events=("incident.declared",), allow_private=True):
    actor = superuser() if allow_private else admin  # private addresses: superusers only
    new = services.webhook_create(actor=actor, team=team, url=receiver.url, chosen_events=list(events), allow_private=allow_private)
    receiver.secret = new.secret
    return new.webhook


def run(queued):
    """Run every queued delivery task in this process, as a worker would; the ids run."""
    ids = [pk for pk, _ in queued]
    queued.clear()
    for pk in ids:
        tasks.delivery_task(pk)
    return ids


def test_a_delivery_is_signed_and_the_receiver_verifies_it(receiver, queued, team, team_admin):
    webhook = hook_for(receiver, team, team_admin)
    declare(team)
    [delivery_id] = run(queued)
    [got] = receiver.received
    assert got.verified, "the signature must hold under the webhook's secret"
    assert got.path == "/hook"
    assert got.headers["X-Ccpanel-Event"] == "incident.declared"
    assert got.headers["X-Ccpanel-Delivery"] == str(delivery_id)
    assert got.headers["Content-Type"] == "application/json"
    body = json.loads(got.body)
    assert body["event"] == "incident.declared"
    assert body["team"]["slug"] == team.slug and body["sandbox"]["name"] == "web-1"
    assert body["details"] == {"incident": 7, "severity": "high", "summary": "odd traffic"}
    delivery = Delivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.last_status_code, delivery.attempts, delivery.webhook_id) == (D.DELIVERED, 200, 1, webhook.pk)
    assert delivery.delivered_at is not None
    # The secret is kept sealed, never as plain text.
    stored = Webhook.objects.get(pk=webhook.pk).secret_sealed
    assert receiver.secret not in stored and vault.unseal(stored) == receiver.secret


def test_a_delivery_task_run_twice_sends_once(receiver, queued, team, team_admin):
    hook_for(receiver, team, team_admin)
    declare(team)
    [delivery_id] = [pk for pk, _ in queued]
    tasks.delivery_task(delivery_id)
    tasks.delivery_task(delivery_id)  # redelivered by the broker: the claim refuses it
    assert len(receiver.received) == 1


def test_a_receiver_answering_500_gets_the_retry(receiver, queued, team, team_admin):
    receiver.statuses = [500]
    hook_for(receiver, team, team_admin)
    declare(team)
    [delivery_id] = run(queued)
    delivery = Delivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (D.PENDING, 1, 500)
    assert "500" in delivery.last_error and "receiver says." in delivery.last_error
    assert queued == [(delivery_id, 0.0)], "the retry is queued with its backoff"
    run(queued)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (D.DELIVERED, 2, 200)
    assert [r.headers["X-Ccpanel-Delivery"] for r in receiver.received] == [str(delivery_id)] * 2
    assert all(r.verified for r in receiver.received)


def test_retries_back_off_and_give_up_after_the_last_attempt(receiver, queued, settings, team, team_admin):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 1
    receiver.statuses = [503] * 10
    hook_for(receiver, team, team_admin)
    declare(team)
    delivery_id = queued[0][0]
    waits = []
    for _ in range(5):
        Delivery.objects.filter(pk=delivery_id).update(next_attempt_at=timezone.now())  # the wait has passed
        queued.clear()
        tasks.delivery_task(delivery_id)
        waits += [countdown for _, countdown in queued]
    delivery = Delivery.objects.get(pk=delivery_id)
    assert waits == [1, 2, 4, 8], "each wait twice the last; none after the fifth attempt"
    assert (delivery.status, delivery.attempts) == (D.FAILED, 5)
    assert "gave up after 5 attempts" in delivery.last_error
    assert len(receiver.received) == 5


def test_a_delivery_not_due_yet_is_not_sent(receiver, queued, settings, team, team_admin):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 60
    receiver.statuses = [500]
    hook_for(receiver, team, team_admin)
    declare(team)
    [delivery_id] = run(queued)
    tasks.delivery_task(delivery_id)  # a task arriving before its time sends nothing
    assert len(receiver.received) == 1 and Delivery.objects.get(pk=delivery_id).attempts == 1


def test_a_4xx_is_not_retried_but_429_is(receiver, queued, team, team_admin):
    receiver.statuses = [429, 404]
    hook_for(receiver, team, team_admin)
    declare(team)
    [delivery_id] = run(queued)
    assert Delivery.objects.get(pk=delivery_id).status == D.PENDING
    run(queued)
    delivery = Delivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (D.FAILED, 2, 404)
    assert queued == []


def test_no_answer_is_retried(queued, team, team_admin):
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    services.webhook_create(
        actor=superuser(), team=team, url=f"http://127.0.0.1:{port}/", chosen_events=["incident.declared"], allow_private=True
    )
    declare(team)
    [delivery_id] = run(queued)
    delivery = Delivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.last_status_code) == (D.PENDING, None)
    assert "refused" in delivery.last_error.lower() or "connection" in delivery.last_error.lower()
    assert len(queued) == 1


def test_a_receiver_that_streams_forever_does_not_hold_the_worker(receiver, queued, settings, team, team_admin):
    settings.WEBHOOK_TOTAL_SECONDS = 1.5
    receiver.statuses = ["stream"]
    hook_for(receiver, team, team_admin)
    declare(team)
    started = timezone.now()
    [delivery_id] = run(queued)
    assert (timezone.now() - started).total_seconds() < 5
    delivery = Delivery.objects.get(pk=delivery_id)
    assert (delivery.status, delivery.last_status_code) == (D.PENDING, 500)


def test_a_receiver_that_never_answers_times_out(queued, settings, team, team_admin):
    settings.WEBHOOK_READ_SECONDS = 0.5
    with socket.socket() as silent:  # accepts (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        services.webhook_create(
            actor=superuser(), team=team, url=f"http://127.0.0.1:{port}/", chosen_events=["incident.declared"], allow_private=True
        )
        declare(team)
        [delivery_id] = run(queued)
    delivery = Delivery.objects.get(pk=delivery_id)
    assert delivery.status == D.PENDING and "timed out" in delivery.last_error.lower()


def _dripping_server(first: bytes, stop_after: float):
    """A receiver that reads the request, then sends `first` and one more header byte every 0.2 s
    (each read well within the read timeout), for `stop_after` seconds at most."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(first)
            ends = time.monotonic() + stop_after
            while time.monotonic() < ends:
                try:
                    conn.sendall(b"a")
                except OSError:
                    return
                time.sleep(0.2)

    threading.Thread(target=serve, daemon=True).start()
    return listener


@pytest.mark.parametrize("status", [b"200 OK", b"500 Oops"])
def test_a_receiver_dripping_its_headers_is_cut_off_at_the_total_time(status, queued, settings, team, team_admin):
    """Each read comes within WEBHOOK_READ_SECONDS, so only a deadline on the whole attempt
    stops a receiver that sends its headers a byte at a time (up to 100 lines of 64 KiB)."""
    settings.WEBHOOK_READ_SECONDS, settings.WEBHOOK_TOTAL_SECONDS = 1.0, 1.5
    listener = _dripping_server(b"HTTP/1.1 " + status + b"\r\nX-Slow: ", stop_after=12)
    with listener:
        port = listener.getsockname()[1]
        services.webhook_create(
            actor=superuser(), team=team, url=f"http://127.0.0.1:{port}/", chosen_events=["incident.declared"], allow_private=True
        )
        declare(team)
        started = time.monotonic()
        [delivery_id] = run(queued)
        took = time.monotonic() - started
    delivery = Delivery.objects.get(pk=delivery_id)
    assert took < 4, f"the attempt held the worker {took:.1f} s"
    assert (delivery.status, delivery.last_status_code) == (D.PENDING, None)
    assert "longer than 1.5 s" in delivery.last_error


# --- private addresses ----------------------------------------------------------------------------


def test_a_loopback_url_is_refused_unless_an_admin_allowed_it(receiver, queued, team, team_admin):
    with pytest.raises(InvalidInput) as refused:
        services.webhook_create(actor=team_admin, team=team, url=receiver.url, chosen_events=["incident.declared"])
    assert "127.0.0.0/8" in str(refused.value)
    assert not Webhook.objects.exists()
    webhook = hook_for(receiver, team, team_admin, allow_private=True)
    declare(team)
    run(queued)
    assert len(receiver.received) == 1
    # Allowed no longer: the next delivery is refused, judged again when it is sent.
    services.webhook_set_allow_private(actor=team_admin, webhook=webhook, allow=False)
    declare(team)
    [delivery_id] = run(queued)
    delivery = Delivery.objects.get(pk=delivery_id)
    assert delivery.status == D.REFUSED and "127.0.0.0/8" in delivery.last_error
    assert len(receiver.received) == 1 and queued == []


def test_a_team_admin_cannot_open_the_panels_own_machine(receiver, queued, team, team_admin):
    """A team admin choosing the URL and lifting the private-address rule could POST to the
    panel machine's own services (a Docker API on TCP: /containers/prune; the panel itself),
    with the path of their choosing, and read each answer's start back as the delivery's error.
    Lifting the rule is the panel's administrators' decision (superusers), as for sandboxes."""
    with pytest.raises(PermissionDenied, match="superusers"):
        services.webhook_create(
            actor=team_admin, team=team, url=f"{receiver.url}/containers/prune", chosen_events=["incident.declared"], allow_private=True
        )
    assert not Webhook.objects.exists()
    webhook = services.webhook_create(actor=team_admin, team=team, url="http://198.18.0.1/h", chosen_events=["incident.declared"]).webhook
    with pytest.raises(PermissionDenied, match="superusers"):
        services.webhook_set_allow_private(actor=team_admin, webhook=webhook, allow=True)
    assert not Webhook.objects.get(pk=webhook.pk).allow_private
    assert not AuditEvent.objects.filter(action="webhook.allow_private_set").exists()
    # A superuser may; a team admin may then refuse private addresses again (never widen).
    services.webhook_set_allow_private(actor=superuser(), webhook=webhook, allow=True)
    services.webhook_set_allow_private(actor=team_admin, webhook=webhook, allow=False)
    assert not Webhook.objects.get(pk=webhook.pk).allow_private
    declare(team)
    run(queued)
    assert receiver.received == []


def test_the_sandboxes_own_subnets_are_private_wherever_they_are(settings, team, team_admin):
    """SANDBOX_SUBNET may be set outside the blocked ranges (198.18.0.0/15 is open to the egress
    rules): a sandbox's address or gateway is still no receiver."""
    settings.SANDBOX_SUBNET, settings.SANDBOX_ALLOW_SUBNET = "198.18.240.0/24", "198.18.241.0/24"
    for address in ("198.18.240.1", "198.18.240.77", "198.18.241.9"):
        with pytest.raises(InvalidInput, match="the sandboxes' own network"):
            services.webhook_create(actor=team_admin, team=team, url=f"http://{address}/", chosen_events=["backup.failed"])
    assert not Webhook.objects.exists()
    services.webhook_create(actor=team_admin, team=team, url="http://198.18.242.1/", chosen_events=["backup.failed"])


def test_redeliveries_in_a_loop_queue_no_more_than_a_few_sends(queued, settings, team, team_admin):
    """Each redelivery is a send that may wait WEBHOOK_TOTAL_SECONDS on a slow receiver: a loop of
    them would keep the webhooks worker from every other team's deliveries."""
    settings.WEBHOOK_MAX_WAITING_REDELIVERIES = 3
    services.webhook_create(actor=team_admin, team=team, url="http://198.18.0.1/h", chosen_events=["incident.declared"])
    declare(team)
    first = Delivery.objects.get()
    made = [services.delivery_redeliver(actor=team_admin, delivery=first) for _ in range(2)]
    with pytest.raises(InvalidInput, match="still waiting"):
        services.delivery_redeliver(actor=team_admin, delivery=first)
    assert Delivery.objects.count() == 3 and len(queued) == 3
    Delivery.objects.filter(pk__in=[d.pk for d in made]).update(status=D.FAILED)
    services.delivery_redeliver(actor=team_admin, delivery=first)  # done: may be sent again
    assert Delivery.objects.count() == 4


def fake_dns(monkeypatch, answers: dict[str, list[str]]):
    """Names answered as `answers` says (the rest as the system would)."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port or 0)) for a in answers[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(addresses.socket, "getaddrinfo", getaddrinfo)


def test_a_name_that_resolves_to_a_private_address_is_refused(monkeypatch, team, team_admin):
    with pytest.raises(InvalidInput, match="127.0.0.0/8"):
        services.webhook_create(actor=team_admin, team=team, url="http://localhost:9/", chosen_events=["backup.failed"])
    fake_dns(monkeypatch, {"hooks.example.com": ["198.18.7.7", "10.1.2.3"]})
    with pytest.raises(InvalidInput, match="10.0.0.0/8"):  # one private address among public ones
        services.webhook_create(actor=team_admin, team=team, url="https://hooks.example.com/x", chosen_events=["backup.failed"])
    assert not Webhook.objects.exists()


def test_a_name_that_moves_to_a_private_address_is_refused_at_delivery(monkeypatch, receiver, queued, team, team_admin):
    fake_dns(monkeypatch, {"hooks.example.com": ["198.18.7.7"]})
    services.webhook_create(actor=team_admin, team=team, url="http://hooks.example.com/x", chosen_events=["incident.declared"])
    fake_dns(monkeypatch, {"hooks.example.com": ["127.0.0.1"]})  # rebinding after the save
    declare(team)
    [delivery_id] = run(queued)
    delivery = Delivery.objects.get(pk=delivery_id)
    assert delivery.status == D.REFUSED and "hooks.example.com is a private address" in delivery.last_error
    assert receiver.received == []


def test_the_delivery_connects_to_the_address_judged_with_the_name_as_host(monkeypatch, receiver, queued, team, team_admin):
    fake_dns(monkeypatch, {"receiver.test": ["127.0.0.1"]})
    new = services.webhook_create(
        actor=superuser(),
        team=team,
        url=f"http://receiver.test:{receiver.port}/in?x=1",
        chosen_events=["incident.declared"],
        allow_private=True,
    )
    receiver.secret = new.secret
    declare(team)
    run(queued)
    [got] = receiver.received
    assert got.headers["Host"] == f"receiver.test:{receiver.port}" and got.path == "/in?x=1" and got.verified


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("ftp://198.18.0.1/", "Only http:// and https://"),
        ("http://user:pw@198.18.0.1/", "No user name or password"),
        ("http://[::1]/", "IPv6"),
        ("http://198.18.0.1/#x", "fragment"),
        ("http://198.18.0.1/a b", "spaces or control characters"),
        ("http:///nohost", "names no host"),
        ("http://198.18.0.1:0/", "Port 0"),
    ],
)
def test_urls_the_rule_refuses(url, said, team, team_admin):
    with pytest.raises(InvalidInput, match=said):
        services.webhook_create(actor=superuser(), team=team, url=url, chosen_events=["backup.failed"], allow_private=True)
    assert not Webhook.objects.exists()


def test_a_disabled_webhook_gets_nothing(receiver, queued, team, team_admin):
    webhook = hook_for(receiver, team, team_admin)
    declare(team)
    services.webhook_set_enabled(actor=team_admin, webhook=webhook, enabled=False)
    [delivery_id] = run(queued)  # made while it was enabled, sent after
    assert Delivery.objects.get(pk=delivery_id).status == D.REFUSED
    declare(team)
    assert queued == [] and receiver.received == []


@pytest.fixture
def tls_receiver(tmp_path):
    ca, cert, key = certificates(tmp_path, "receiver.test")
    made = Receiver(tls=(str(cert), str(key)))
    made.ca = str(ca)
    yield made
    made.close()


def test_https_is_verified_against_the_urls_name_not_the_address(monkeypatch, tls_receiver, queued, settings, team, team_admin):
    """The connection goes to the judged address, and TLS checks the certificate against the
    URL's host name (the server name sent): the receiver's own name passes, another fails."""
    settings.WEBHOOK_CA_FILE = tls_receiver.ca
    fake_dns(monkeypatch, {"receiver.test": ["127.0.0.1"], "impostor.test": ["127.0.0.1"]})
    good = services.webhook_create(
        actor=superuser(),
        team=team,
        url=f"https://receiver.test:{tls_receiver.port}/in",
        chosen_events=["incident.declared"],
        allow_private=True,
    )
    tls_receiver.secret = good.secret
    declare(team)
    [delivered] = run(queued)
    assert Delivery.objects.get(pk=delivered).status == D.DELIVERED
    assert [r.verified for r in tls_receiver.received] == [True]
    services.webhook_delete(actor=team_admin, webhook=good.webhook)
    services.webhook_create(
        actor=superuser(),
        team=team,
        url=f"https://impostor.test:{tls_receiver.port}/in",
        chosen_events=["incident.declared"],
        allow_private=True,
    )
    declare(team)
    [refused] = run(queued)
    delivery = Delivery.objects.get(pk=refused)
    assert delivery.status == D.PENDING and "doesn't match 'receiver.test'" in delivery.last_error, delivery.last_error
    assert len(tls_receiver.received) == 1, "nothing is sent to a server whose certificate is not the URL's name's"
    settings.WEBHOOK_CA_FILE = ""  # the system's trust store does not know the test's CA
    Delivery.objects.filter(pk=refused).update(next_attempt_at=timezone.now())
    tasks.delivery_task(refused)
    assert "unable to get local issuer certificate" in Delivery.objects.get(pk=refused).last_error


@pytest.mark.parametrize("url", ["http://2130706433/", "http://0x7f.1/", "http://127.1/", "http://LOCALHOST./"])
def test_other_spellings_of_loopback_are_judged_by_their_address(url, team, team_admin):
    with pytest.raises(InvalidInput, match="127.0.0.0/8"):
        services.webhook_create(actor=team_admin, team=team, url=url, chosen_events=["backup.failed"])


def test_a_path_outside_ascii_is_sent_escaped(receiver, queued, team, team_admin):
    new = services.webhook_create(
        actor=superuser(), team=team, url=f"{receiver.url}/caf\u00e9?q=\u00fc%20x", chosen_events=["incident.declared"], allow_private=True
    )
    receiver.secret = new.secret
    declare(team)
    run(queued)
    [got] = receiver.received
    assert got.path == "/hook/caf%C3%A9?q=%C3%BC%20x" and got.verified
