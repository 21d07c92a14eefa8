"""The start's egress gate holds when Docker acts, not only when it was first read: the rules are
read in a thread while the start is prepared (actions._egress_gate), so a change made between
that reading and `docker start` (rules deleted, a chain put before ours) must still refuse the
start. Found by review: the reading was taken from the start of the run, before provision and
the folders' walk, and the start went ahead on it whatever happened to the rules meanwhile.
"""

import subprocess
import threading

import pytest
from django.conf import settings

from audit.models import AuditEvent
from sandboxes import network, policy
from tests.sandboxes.network.helpers import act, fetch, gateway, sh
from tests.support.docker import docker_cli

pytestmark = [pytest.mark.docker, pytest.mark.django_db]


def _after_the_gate_was_read(monkeypatch, change) -> threading.Event:
    """Make `change` happen after the start's gate has read the rules and before Docker starts
    the container: at the folders' check, which runs between the two."""
    judged = threading.Event()
    may_join, check = network.may_join, policy.check

    def reading(*args, **kwargs):
        try:
            return may_join(*args, **kwargs)
        finally:
            judged.set()

    def checking(*args, **kwargs):
        if judged.wait(10):  # the reading is done: what it saw is the rules as they were
            change()
        return check(*args, **kwargs)

    monkeypatch.setattr(network, "may_join", reading)
    monkeypatch.setattr(policy, "check", checking)
    return judged


def _running(container_id: str) -> bool:
    return docker_cli("inspect", "-f", "{{.State.Running}}", container_id, check=False).stdout.strip() == "true"


def test_rules_deleted_while_the_start_is_prepared_refuse_it(make_sandbox, clean_docker, host_listener, rules_back, monkeypatch):
    s = make_sandbox("gate-window")
    assert s.status == "running", s.status_detail
    s = act(s, "stop")
    c = network.chains()
    judged = _after_the_gate_was_read(monkeypatch, lambda: sh("iptables", "-D", "INPUT", "-i", c.bridge, "-j", c.input))
    s = act(s, "start")
    assert judged.is_set()
    assert s.status == "error", "started while the host was open to it"
    assert "not in place" in s.status_detail and "jump from INPUT" in s.status_detail
    assert not _running(s.container_id)
    assert AuditEvent.objects.filter(action="egress.refused_start", target=s.name).exists()


def test_a_rule_put_before_ours_while_a_new_container_is_made_refuses_its_start(
    make_sandbox, clean_docker, host_listener, rules_back, monkeypatch
):
    s = make_sandbox("gate-window-new")
    s = act(s, "reset")  # the next start makes a new container
    bridge = network.chains().bridge
    judged = _after_the_gate_was_read(monkeypatch, lambda: sh("iptables", "-I", "INPUT", "1", "-i", bridge, "-j", "ACCEPT"))
    try:
        s = act(s, "start")
        assert judged.is_set()
        assert s.status == "error", "started while a rule before ours let it reach the host"
        assert "comes before ours" in s.status_detail
        assert not s.container_id or not _running(s.container_id)
    finally:
        while _delete_accept(bridge):
            pass
    network.apply()
    monkeypatch.undo()
    s = act(s, "start")
    assert s.status == "running", s.status_detail
    assert fetch(s, gateway(), host_listener) == ""


def _delete_accept(bridge: str) -> bool:
    return subprocess.run(["iptables", "-D", "INPUT", "-i", bridge, "-j", "ACCEPT"], capture_output=True).returncode == 0


def test_the_gate_still_lets_a_start_through_when_the_rules_hold(make_sandbox, clean_docker, host_listener, rules_back, monkeypatch):
    """The control: with nothing changed meanwhile, the same start runs."""
    s = make_sandbox("gate-window-ok")
    s = act(s, "stop")
    judged = _after_the_gate_was_read(monkeypatch, lambda: None)
    s = act(s, "start")
    assert judged.is_set()
    assert s.status == "running", s.status_detail
    assert fetch(s, gateway(), host_listener) == ""
    assert settings.SANDBOX_EGRESS_RULES


def test_unpause_is_refused_while_the_rules_are_not_in_place(make_sandbox, clean_docker, host_listener, rules_back):
    """Found by review: a Start of a paused container passes the gate, the Unpause action did
    not, and resumed a sandbox on its network with the host open to it."""
    s = make_sandbox("gate-unpause")
    s = act(s, "pause")
    assert s.status == "paused", s.status_detail
    c = network.chains()
    sh("iptables", "-D", "INPUT", "-i", c.bridge, "-j", c.input)
    s = act(s, "unpause")
    assert s.status == "error", "resumed while the host was open to it"
    assert "not in place" in s.status_detail
    assert docker_cli("inspect", "-f", "{{.State.Status}}", s.container_id).stdout.strip() == "paused"
    network.apply()
    s = act(s, "start")  # from error: the start unpauses it, through the gate
    assert s.status == "running", s.status_detail
    assert fetch(s, gateway(), host_listener) == ""
