"""The decision stream: every row as a JSON line (the page's download and the API), filtered,
bounded and resumable; the live tail delivers a row written after it started; only those who
see the sandbox read it."""

import json
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from sandboxes import decisions
from sandboxes.models import EgressDenial
from teams.models import Team
from tests.api.helpers import auth, member, token_for

pytestmark = pytest.mark.django_db


def _rows(box, n: int = 5) -> list[EgressDenial]:
    now = timezone.now()
    made = []
    for i in range(n):
        made.append(
            EgressDenial.objects.create(
                sandbox=box,
                at=now - timedelta(minutes=n - i),
                destination=None if i % 2 else f"198.18.0.{i + 1}",
                name=f"n{i}.example" if i % 2 else "",
                port=53 if i % 2 else 443,
                protocol="dns" if i % 2 else "tcp",
                kind="dns" if i % 2 else "connection",
                allowed=i == 4,
                method="GET" if i == 4 else "",
                path="/x" if i == 4 else "",
                reason="listed" if i == 4 else "",
            )
        )
    return made


@pytest.fixture
def box(make_sandbox, fake_engine, clean_workspace):
    return make_sandbox("streamed")


def _lines(body: bytes) -> list[dict]:
    return [json.loads(line) for line in body.decode().splitlines()]


def test_the_download_holds_every_row_as_one_json_line(box, logged_in):
    made = _rows(box)
    answer = logged_in.get(f"/sandboxes/{box.pk}/decisions.jsonl")
    body = b"".join(answer.streaming_content)
    assert answer["Content-Type"] == "application/x-ndjson" and "attachment" in answer["Content-Disposition"]
    lines = _lines(body)
    assert [line["id"] for line in lines] == [r.pk for r in made]
    assert body == b"".join(decisions.as_line({**r.__dict__, "id": r.pk}, box.name) for r in made)
    assert list(lines[0]) == [name for name, _type, _meaning in decisions.FIELDS]
    assert lines[4] == {**lines[4], "kind": "connection", "allowed": True, "method": "GET", "path": "/x", "reason": "listed"}
    assert lines[1]["name"] == "n1.example" and lines[1]["destination"] is None and lines[0]["at"].endswith("Z")
    only = logged_in.get(f"/sandboxes/{box.pk}/decisions.jsonl?allowed=true&kind=connection")
    assert [line["id"] for line in _lines(b"".join(only.streaming_content))] == [made[4].pk]
    assert logged_in.get(f"/sandboxes/{box.pk}/decisions.jsonl?limit=0").status_code == 400
    assert f"/sandboxes/{box.pk}/decisions.jsonl" in logged_in.get(f"/sandboxes/{box.pk}/").content.decode()


def test_filters_bounds_and_resuming(box, client, team, django_user_model):
    made = _rows(box)
    token = token_for(member(django_user_model, "v", team, "viewer"), "read")
    url = f"/api/v1/sandboxes/{box.pk}/decisions.jsonl"

    def ids(query: str) -> list[int]:
        answer = client.get(f"{url}?{query}", **auth(token))
        assert answer.status_code == 200, answer.content
        return [line["id"] for line in _lines(b"".join(answer.streaming_content))]

    assert ids("") == [r.pk for r in made]
    assert ids("kind=dns") == [made[1].pk, made[3].pk]
    assert ids("allowed=true") == [made[4].pk]
    assert ids("allowed=false&kind=connection") == [made[0].pk, made[2].pk]
    assert ids(f"since={(made[3].at - timedelta(seconds=1)).isoformat().replace('+00:00', 'Z')}") == [made[3].pk, made[4].pk]
    assert ids("limit=2") == [made[0].pk, made[1].pk]
    assert ids(f"after={made[1].pk}&limit=2") == [made[2].pk, made[3].pk]
    for bad in ("kind=smtp", "limit=0", f"limit={decisions.MAX_ROWS + 1}", "since=yesterday", "colour=red"):
        assert client.get(f"{url}?{bad}", **auth(token)).status_code == 400, bad


def test_a_viewer_of_another_team_gets_a_404(box, client, django_user_model):
    _rows(box)
    other = Team.objects.create(slug="other", name="Other")
    stranger = member(django_user_model, "stranger", other, "admin")
    assert client.get(f"/api/v1/sandboxes/{box.pk}/decisions.jsonl", **auth(token_for(stranger))).status_code == 404
    client.force_login(stranger)
    assert client.get(f"/sandboxes/{box.pk}/decisions.jsonl").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_the_live_tail_delivers_a_row_written_after_it_started_and_ends_when_dropped(box, client, team, django_user_model, settings):
    settings.API_LOG_FOLLOWS_PER_USER = 1
    first = _rows(box, 1)[0]
    viewer = member(django_user_model, "tail", team, "viewer")
    token = token_for(viewer, "read")
    url = f"/api/v1/sandboxes/{box.pk}/decisions.jsonl?follow=1"
    answer = client.get(url, **auth(token))
    assert answer.status_code == 200 and answer["X-Accel-Buffering"] == "no"
    assert client.get(url, **auth(token)).status_code == 429  # the follow holds this user's one slot
    stream = iter(answer.streaming_content)
    assert json.loads(next(stream))["id"] == first.pk
    written: list[EgressDenial] = []

    def write_later() -> None:
        time.sleep(0.3)
        written.append(
            EgressDenial.objects.create(sandbox=box, at=timezone.now(), name="late.example", port=53, protocol="dns", kind="dns")
        )

    started = time.monotonic()
    threading.Thread(target=write_later).start()
    late = json.loads(next(stream))
    assert late["id"] == written[0].pk and late["name"] == "late.example" and time.monotonic() - started < 2
    answer.close()  # the client goes: the slot is given back
    assert client.get(url.replace("follow=1", "limit=1"), **auth(token)).status_code == 200
    again = client.get(url, **auth(token))
    assert again.status_code == 200
    again.close()
