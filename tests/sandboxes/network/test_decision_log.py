"""The decision log (sandboxes.network.decision_log): refusals read from the kernel's log."""

import threading
import time

import pytest

from tests.sandboxes.network.helpers import address_of, fetch, gateway

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


@pytest.mark.django_db(transaction=True)
def test_denied_attempts_appear_in_the_decision_log(make_sandbox, clean_docker, host_listener, client, admin_user):
    from sandboxes.models import EgressDenial
    from sandboxes.network import decision_log

    s = make_sandbox("egress-logged")
    other = make_sandbox("egress-other")
    stop, ready = threading.Event(), threading.Event()
    reader = threading.Thread(target=decision_log.follow, args=(stop,), kwargs={"ready": ready}, daemon=True)
    reader.start()
    try:
        assert ready.wait(10), "the kernel's log could not be read"
        assert fetch(s, gateway(), host_listener) == ""  # the host
        assert fetch(s, address_of(other), 4444) == ""  # another sandbox
        wanted = {(gateway(), host_listener), (address_of(other), 4444)}
        deadline = time.monotonic() + 15
        while not {(d.destination, d.port) for d in EgressDenial.objects.filter(sandbox=s)} >= wanted:
            assert time.monotonic() < deadline, list(EgressDenial.objects.values())
            time.sleep(0.2)
    finally:
        stop.set()
        reader.join(5)
    row = EgressDenial.objects.filter(sandbox=s, port=4444).first()
    assert row.protocol == "tcp" and row.count >= 1
    client.force_login(admin_user)
    page = client.get(f"/sandboxes/{s.pk}/refused/").content.decode()
    assert address_of(other) in page and "4444" in page
