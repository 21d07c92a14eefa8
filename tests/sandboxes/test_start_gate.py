"""The start's egress gate, fast (the in-memory engine; the real rules are in
tests/sandboxes/network/test_start_gate_window.py): the decision is asked again once the container
runs, and a reading that fails there is never taken for a yes."""

import pytest

from sandboxes import network
from sandboxes.models import Sandbox
from tests.support.sandboxes import act

pytestmark = pytest.mark.django_db

REFUSED = network.Decision(False, False, "The egress rules for ccpx are not in place (x).", ("x",))


@pytest.fixture
def fake(fake_engine, clean_workspace):
    return fake_engine


def _answers(monkeypatch, *answers) -> list[str]:
    """network.may_join answering `answers` in turn (an exception is raised), the real one after."""
    asked: list[str] = []
    real, queue = network.may_join, list(answers)

    def may_join(mode, **kwargs):
        asked.append(mode)
        if not queue:
            return real(mode, **kwargs)
        answer = queue.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    monkeypatch.setattr(network, "may_join", may_join)
    return asked


@pytest.mark.parametrize("second", [REFUSED, OSError("ip: cannot read the routes")])
def test_a_start_whose_rules_are_gone_once_it_runs_is_stopped(make_sandbox, fake, monkeypatch, second):
    s = act(make_sandbox("gate-fast"), "stop")
    allowed = network.Decision(True, True, "in place")
    asked = _answers(monkeypatch, allowed, second)
    s = act(s, "start")
    assert asked == ["internet", "internet"]  # before Docker's start, and once it ran
    assert s.status == "error"
    assert fake.container_state(s.container_id).status == "exited"
    if isinstance(second, network.Decision):
        assert "not in place" in s.status_detail and "was stopped" in s.status_detail


def test_a_sandbox_without_network_is_not_asked(make_sandbox, fake, monkeypatch):
    asked = _answers(monkeypatch, REFUSED, REFUSED)
    s = make_sandbox("gate-none", network_mode="none")
    assert s.status == "running" and asked == []


def test_unpause_asks_the_gate(make_sandbox, fake, monkeypatch):
    s = act(make_sandbox("gate-unpause-fast"), "pause")
    _answers(monkeypatch, REFUSED)
    s = act(s, "unpause")
    assert s.status == "error" and "not in place" in s.status_detail
    assert fake.container_state(s.container_id).status == "paused"
    s = act(s, "start")  # the real gate again: filtering is off in the fast tier, so it may run
    assert s.status == "running"
    assert Sandbox.objects.get(pk=s.pk).status == "running"
