"""The decision log is bounded for the whole panel, not only per sandbox: many sandboxes each
within their own limit cannot together flood the database, and what is turned away is counted
and summed up in the log, never silently lost."""

import time

import pytest

from sandboxes.models import EgressDenial, Sandbox
from sandboxes.network import decision_budget, decision_log, resolver

pytestmark = pytest.mark.django_db


@pytest.fixture
def budget(monkeypatch, settings):
    settings.DECISION_LOG_ROWS_A_SECOND = 10
    monkeypatch.setattr(decision_budget, "_budget", None)
    return decision_budget.budget()


@pytest.fixture
def crowd(team):
    return [Sandbox.objects.create(name=f"noisy{i}", team=team, image="x", memory_mb=256, cpus=1, pids_limit=64) for i in range(30)]


def total(sandbox_ids) -> int:
    return sum(EgressDenial.objects.filter(sandbox_id__in=sandbox_ids).values_list("count", flat=True))


def test_many_sandboxes_together_get_no_more_than_the_panel_wide_rate(budget, crowd):
    """30 sandboxes, each well within the resolver's 20 rows a second of its own, refused 10
    names each at once: 300 refusals, at most the burst (twice the rate) of rows."""
    denials = resolver.Denials()
    for i in range(10):
        for s in crowd:
            denials.record(s.pk, f"name{i}.elsewhere.test")
    ids = [s.pk for s in crowd]
    itemised = EgressDenial.objects.filter(sandbox_id__in=ids).exclude(protocol="unlogged").count()
    assert itemised <= 2 * 10 + 1  # the burst, and what refilled meanwhile
    assert total(ids) + budget.pending() == 300  # nothing lost: the rest is counted


def test_what_was_turned_away_is_summed_up_one_row_a_second(budget, crowd):
    recorder = decision_log.Recorder()
    for s in crowd:
        recorder.pending[(s.pk, "198.18.0.9", 443, "tcp")] = [decision_budget.timezone.now(), 5]
    recorder.flush()
    ids = [s.pk for s in crowd]
    assert EgressDenial.objects.filter(sandbox_id__in=ids).count() == 20  # the burst
    assert budget.pending() == 10 * 5
    first = budget.flush()
    assert first is not None and first.protocol == decision_budget.UNLOGGED and first.count == 5
    assert budget.flush() is None  # one summary a second, whatever is waiting
    budget.summarised_at -= 1.0
    second = budget.flush()
    assert second is not None and second.sandbox_id != first.sandbox_id
    assert total(ids) + budget.pending() == 30 * 5


def test_the_bucket_refills_with_time(budget, crowd):
    for _ in range(20):
        assert budget.take(crowd[0].pk)
    assert not budget.take(crowd[0].pk)
    budget.at -= 0.5  # half a second later: five more
    assert [budget.take(crowd[1].pk) for _ in range(6)] == [True] * 5 + [False]
    assert budget.dropped == {crowd[0].pk: 1, crowd[1].pk: 1}


def test_a_summary_for_a_sandbox_gone_meanwhile_is_dropped_quietly(budget, team):
    gone = Sandbox.objects.create(name="gone", team=team, image="x", memory_mb=256, cpus=1, pids_limit=64)
    budget.tokens = 0
    assert not budget.take(gone.pk, 7)
    gone.delete()
    assert budget.flush() is None and budget.pending() == 0


def test_the_summary_row_says_what_it_is(client, admin_user, budget, team):
    sandbox = Sandbox.objects.create(name="summed", team=team, image="x", memory_mb=256, cpus=1, pids_limit=64)
    budget.tokens = 0
    budget.take(sandbox.pk, 42)
    budget.flush()
    client.force_login(admin_user)
    page = client.get(f"/sandboxes/{sandbox.pk}/refused/").content.decode()
    assert "not itemised: the panel-wide limit of the decision log was reached" in page and "<td>42</td>" in page


def test_it_is_fast_enough_for_the_watcher(budget, crowd):
    started = time.perf_counter()
    for _ in range(10_000):
        budget.take(crowd[0].pk)
    assert time.perf_counter() - started < 0.5
