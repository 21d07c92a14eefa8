"""The URLs a join records (`host join --docker-url/--panel-url`): judged before anything is
made, in the service as in the command. A panel URL is tcp://ADDRESS:PORT and nothing else: it
is shown on pages, audited and put in error messages, so a password in it would leak; a path,
a space or a line break is no engine's address."""

import pytest
from django.core.management import CommandError, call_command

from hosts import join
from hosts import services as host_services

BAD_PANEL_URLS = [
    "tcp://user:secret@198.18.0.1:2376",  # credentials: audited and shown
    "tcp://198.18.0.1:2376/v1.40/containers",  # a path
    "tcp://198.18.0.1:2376?x=1",
    "tcp://198.18.0.1",  # no port
    "tcp://:2376",  # no address
    "tcp://198.18.0.1:99999",
    "tcp://198.18.0.1:2376 ",
    "tcp://198.18.0.1:2376\n",
    "tcp://198.18.0.1:2376\u2028",
    "unix:///var/run/docker.sock",
    "tcp://198.18.0.1:" + "1" * 300,
]
BAD_DOCKER_URLS = [
    "unix:///var/run/docker.sock x",  # a space (str.isprintable takes it)
    "unix://run/docker.sock",  # relative: the cwd's
    "unix:///" + "a" * 300,  # longer than the column: PostgreSQL raises, not a message
    "tcp://user:secret@198.18.0.1:2376",
]


@pytest.mark.parametrize("url", BAD_PANEL_URLS)
def test_a_bad_panel_url_is_refused_with_a_message(url):
    assert host_services.panel_url_errors(url)
    with pytest.raises(join.JoinError, match="Panel URL"):
        join.host_join(payload={"host": "two", "secret": "x" * 43}, panel_url=url)


@pytest.mark.parametrize("url", BAD_DOCKER_URLS)
def test_a_bad_docker_url_is_refused_with_a_message(url):
    assert host_services.docker_url_errors(url)
    with pytest.raises(join.JoinError, match="Docker URL"):
        join.host_join(payload={"host": "two", "secret": "x" * 43}, docker_url=url)


@pytest.mark.parametrize("url", ["", "tcp://198.18.0.1:2376", "tcp://engine-two.example:2376", "tcp://[fd00::1]:2376"])
def test_good_panel_urls_pass(url):
    assert host_services.panel_url_errors(url) == []


@pytest.mark.parametrize("url", ["", "unix:///run/two/docker.sock", "tcp://198.18.0.1:2376", "ssh://admin@two"])
def test_good_docker_urls_pass(url):
    assert host_services.docker_url_errors(url) == []


COMMAND_CASES = [("--panel-url", u) for u in BAD_PANEL_URLS[:4]] + [("--docker-url", u) for u in BAD_DOCKER_URLS]


@pytest.mark.parametrize(("option", "url"), COMMAND_CASES)
def test_the_join_command_refuses_them_before_reading_the_token(option, url):
    with pytest.raises(CommandError, match=option):
        call_command("host", "join", "not-a-token", option, url)
