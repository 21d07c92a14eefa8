"""The decision stream's live tail as Daphne serves it (each step in a thread of its own, its
connection closed): a row written after the tail started arrives, and a client that goes away
frees its follow slot."""

import json
import time
import urllib.request

import pytest
from django.utils import timezone

from sandboxes.models import EgressDenial
from tests.api.helpers import member, token_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def test_the_tail_under_asgi_delivers_a_later_row(panel_server, make_sandbox, fake_engine, clean_workspace, team, django_user_model):
    box = make_sandbox("tailed")
    first = EgressDenial.objects.create(sandbox=box, at=timezone.now(), name="first.example", port=53, protocol="dns", kind="dns")
    token = token_for(member(django_user_model, "asgi-tail", team, "viewer"), "read")
    url = f"{panel_server}/api/v1/sandboxes/{box.pk}/decisions.jsonl?follow=1"
    ask = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310 - the test's own server
    with urllib.request.urlopen(ask, timeout=10) as answer:  # noqa: S310 - the test's own server on loopback
        assert answer.headers["Content-Type"] == "application/x-ndjson"
        assert json.loads(answer.readline())["id"] == first.pk
        started = time.monotonic()
        late = EgressDenial.objects.create(sandbox=box, at=timezone.now(), name="late.example", port=53, protocol="dns", kind="dns")
        got = json.loads(answer.readline())
        assert got["id"] == late.pk and got["name"] == "late.example" and time.monotonic() - started < 2
