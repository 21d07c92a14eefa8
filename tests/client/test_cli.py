"""The `ccpanel` client (client/ccpanel_client), run from the repository's package as a user runs
it (`python -m ccpanel_client` in a subprocess, nothing installed), against the panel served on
loopback by pytest-django's live server (its WSGI app, in a thread of this process, the fake
engine behind it), or against a loopback server that answers 500, or against nobody."""

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from decimal import Decimal

import pytest
from ccpanel_client import cli

from sandboxes.models import Sandbox
from teams.models import Team
from tests.api.helpers import member, token_for
from tests.support.docker import TEST_IMAGE
from tests.support.paths import ROOT

pytestmark = pytest.mark.django_db(transaction=True)


def ccpanel(*args: str, url: str = "", token: str = "", stdin: str = "", config: str = "/nonexistent", **env: str):
    """Run the client; (exit code, stdout, stderr)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CCPANEL_")}
    environ.update(PYTHONPATH=str(ROOT / "client"), CCPANEL_CONFIG=config, **env)
    if url:
        environ["CCPANEL_URL"] = url
    if token:
        environ["CCPANEL_TOKEN"] = token
    done = subprocess.run(
        [sys.executable, "-m", "ccpanel_client", *args], env=environ, input=stdin, capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stdout, done.stderr


def row(team, name, **kwargs):
    fields = dict(image=TEST_IMAGE, memory_mb=256, cpus=Decimal("1"), pids_limit=100, status="running")
    fields.update(kwargs)
    return Sandbox.objects.create(name=name, team=team, **fields)


@pytest.fixture
def panel(live_server, django_user_model, team, fake_engine):
    """The live server's URL and a viewer's read token of the default team."""
    user = member(django_user_model, "dev", team, "viewer")
    return live_server.url, token_for(user, "read")


# --- argument parsing (in process) -----------------------------------------------------------


def test_arguments_parse_before_or_after_the_verb():
    parser = cli.build_parser()
    a = parser.parse_args(["--json", "sandbox", "list", "--status", "running", "-q", "web", "--team", "3"])
    assert (a.json, a.filter_status, a.filter_q, a.filter_team, a.func) == (True, "running", "web", "3", cli.cmd_list)
    b = parser.parse_args(["sandbox", "stop", "7", "--wait", "--timeout", "20", "--json"])
    assert (b.id, b.action, b.wait, b.timeout, b.json) == ("7", "stop", True, 20.0, True)
    c = parser.parse_args(["sandbox", "create", "web", "--team", "1", "--memory", "4g", "--cpus", "2", "--network", "allowlist"])
    assert (c.name, c.memory, c.network, c.preset, c.allow) == ("web", "4g", "allowlist", [], [])
    d = parser.parse_args(["sandbox", "logs", "web", "-f", "--tail", "10"])
    assert (d.follow, d.tail, d.timestamps) == (True, 10, False)
    assert cli.memory_mb("4g") == 4096 and cli.memory_mb("512") == 512 and cli.memory_mb("512MiB") == 512
    assert cli.mount("/srv/a:/mnt/a:ro") == {"host_path": "/srv/a", "container_path": "/mnt/a", "read_only": True}


def test_plain_http_to_another_machine_is_warned_of():
    assert cli.is_private("http://127.0.0.1:8000") and cli.is_private("http://localhost:8000/") and cli.is_private("https://panel.example")
    assert not cli.is_private("http://panel.example:8000") and not cli.is_private("http://198.18.0.5:8000")
    assert cli.is_private("http://127.0.0.2:8000") and cli.is_private("http://[::1]:8000")
    assert not cli.is_private("http://127.0.0.1.panel.example/") and not cli.is_private("http://127.panel.example:8000")
    # (A command refused before any call: nothing is sent anywhere.)
    code, _out, err = ccpanel("sandbox", "create", "x", "--team", "1", "--memory", "lots", url="http://panel.example", token="ccp_0_secret")
    assert code == 1 and "plain HTTP to another machine" in err and "--memory" in err and "secret" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["sandbox"],
        ["sandbox", "fly"],
        ["sandbox", "list", "--status", "sleeping"],
        ["sandbox", "create", "web"],  # no --team
        ["sandbox", "logs", "web", "--tail", "many"],
        ["sandbox", "create", "web", "--team", "1", "--network", "lan"],
    ],
)
def test_bad_arguments_exit_1_before_any_call(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(argv)
    assert exit_.value.code == 1  # 2 would say "the panel could not be reached"
    assert "error:" in capsys.readouterr().err


# --- configuration -------------------------------------------------------------------------


def test_a_config_file_others_may_read_is_refused(panel, tmp_path):
    url, token = panel
    config = tmp_path / "config"
    config.write_text(f"# the panel\nurl = {url}\ntoken = {token}\n")
    config.chmod(0o644)
    code, out, err = ccpanel("sandbox", "list", config=str(config))
    assert code == 1 and out == ""
    assert "mode is 0644" in err and "chmod 600" in err and token not in err
    config.chmod(0o640)
    assert ccpanel("sandbox", "list", config=str(config))[0] == 1
    config.chmod(0o600)
    row(Team.objects.get(slug="default"), "from-the-file")
    code, out, err = ccpanel("sandbox", "list", config=str(config))
    assert code == 0, err
    assert "from-the-file" in out


def test_the_command_line_and_environment_come_before_the_file(panel, tmp_path):
    url, token = panel
    config = tmp_path / "config"
    config.write_text("url = http://127.0.0.1:9\ntoken = ccp_00000000_wrong\n")
    config.chmod(0o600)
    assert ccpanel("sandbox", "list", url=url, token=token, config=str(config))[0] == 0
    assert ccpanel("--url", url, "--token", token, "sandbox", "list", config=str(config))[0] == 0
    code, _out, err = ccpanel("sandbox", "list", config=str(tmp_path / "none"))
    assert code == 1 and "No panel URL" in err


# --- what the panel answers ----------------------------------------------------------------


def test_list_and_show_as_a_table_and_as_json(panel):
    url, token = panel
    team = Team.objects.get(slug="default")
    web = row(team, "web-1")
    row(team, "db-1", status="stopped")
    row(Team.objects.create(name="Other", slug="other"), "theirs")
    code, out, err = ccpanel("sandbox", "list", url=url, token=token)
    assert code == 0, err
    header, *lines = out.splitlines()
    assert header.split()[:5] == ["ID", "NAME", "TEAM", "HOST", "STATUS"]
    assert [line.split()[1] for line in lines] == ["db-1", "web-1"]
    code, out, _ = ccpanel("sandbox", "list", "--status", "stopped", "--json", url=url, token=token)
    assert [s["name"] for s in json.loads(out)] == ["db-1"]
    code, out, _ = ccpanel("--json", "sandbox", "show", "web-1", url=url, token=token)
    assert code == 0 and json.loads(out)["id"] == web.pk and json.loads(out)["uuid"] == str(web.uuid)
    code, out, _ = ccpanel("sandbox", "show", str(web.pk), url=url, token=token)
    assert code == 0 and "memory_mb" in out and "web-1" in out and token not in out


def test_logs_print_the_containers_lines(panel, make_sandbox, fake_engine, clean_workspace):
    url, token = panel
    sandbox = make_sandbox("talker")
    fake_engine.containers[sandbox.container_id].log = [f"hello {i}\n" for i in range(5)]
    code, out, err = ccpanel("sandbox", "logs", "talker", "--tail", "2", url=url, token=token)
    assert (code, out) == (0, "hello 3\nhello 4\n"), err
    code, out, err = ccpanel("sandbox", "logs", str(sandbox.pk), "--tail", "1", "-t", url=url, token=token)
    assert out == "2026-01-01T00:00:04.000000000Z stdout hello 4\n", err


def test_refusals_exit_1_with_the_panels_message(panel, django_user_model):
    url, token = panel
    team = Team.objects.get(slug="default")
    sandbox = row(team, "web-1")
    code, out, err = ccpanel("sandbox", "show", "999999", url=url, token=token)
    assert (code, out) == (1, "") and "No such sandbox." in err
    code, _, err = ccpanel("sandbox", "stop", str(sandbox.pk), url=url, token=token)  # a read token
    assert code == 1 and "scope is read" in err
    code, _, err = ccpanel("sandbox", "list", url=url, token="ccp_00000000_" + "x" * 43)
    assert code == 1 and "Unknown token." in err
    operator = token_for(member(django_user_model, "op", team, "operator"), "operate")
    code, _, err = ccpanel("sandbox", "create", "Bad Name!", "--team", str(team.pk), url=url, token=operator)
    assert code == 1 and err.startswith("ccpanel: name:"), err
    assert not Sandbox.objects.filter(name__icontains="bad").exists()
    code, _, err = ccpanel("sandbox", "create", "x", "--team", "nosuchteam", url=url, token=operator)
    assert code == 1 and "give the team's id" in err


def test_the_panel_unreachable_exits_2():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    code, out, err = ccpanel("sandbox", "list", url=f"http://127.0.0.1:{port}", token="ccp_00000000_secret-never-shown")
    assert (code, out) == (2, "") and "Cannot reach the panel" in err and "secret-never-shown" not in err


class _Failing(http.server.BaseHTTPRequestHandler):
    """A panel that fails (500, JSON), or redirects elsewhere (302)."""

    seen: list[dict] = []

    def do_GET(self):
        _Failing.seen.append(dict(self.headers))
        if self.path.startswith("/api/v1/sandboxes/1/"):
            self.send_response(302)
            self.send_header("Location", "http://198.18.0.1/steal")
            self.end_headers()
            return
        body = json.dumps({"detail": "The database is down."}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_panel_failure_exits_3_and_a_redirect_is_not_followed():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        code, out, err = ccpanel("sandbox", "list", url=url, token="ccp_00000000_secret")
        assert (code, out) == (3, "") and "The database is down." in err
        _Failing.seen.clear()
        code, _, err = ccpanel("sandbox", "show", "1", url=url, token="ccp_00000000_secret")
        assert code == 1 and "redirect" in err
        assert len(_Failing.seen) == 1  # asked once; the token was not carried to the other address
        assert _Failing.seen[0]["Authorization"] == "Bearer ccp_00000000_secret"
    finally:
        server.shutdown()
        server.server_close()


ESCAPES = "\x1b]0;owned\x07\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\x9b8m\u202e"  # title, clipboard, clear, hide, reorder


def test_escape_sequences_in_a_log_are_shown_not_acted_on(panel, make_sandbox, fake_engine, clean_workspace):
    """The agent in a sandbox writes its log: sent raw to the user's terminal it could set the
    title, write the clipboard, clear the screen or hide text. Shown escaped unless --raw."""
    url, token = panel
    sandbox = make_sandbox("talker")
    fake_engine.containers[sandbox.container_id].log = [f"before{ESCAPES}after\tend\n"]
    code, out, err = ccpanel("sandbox", "logs", "talker", url=url, token=token)
    assert code == 0, err
    assert out == "before\\x1b]0;owned\\x07\\x1b]52;c;cm0gLXJmIH4=\\x07\\x1b[2J\\x9b8m\\u202eafter\tend\n"
    code, out, err = ccpanel("sandbox", "logs", "talker", "--raw", url=url, token=token)
    assert (code, out) == (0, f"before{ESCAPES}after\tend\n"), err  # asked for: the bytes as written


class _Hostile(http.server.BaseHTTPRequestHandler):
    """A panel (or whatever answers at its address) whose messages hold escape sequences."""

    def do_GET(self):
        if self.path.startswith("/api/v1/sandboxes/7/"):
            self.send_response(302)
            self.send_header("Location", "http://198.18.0.1/\x1b[2J")
            self.end_headers()
            return
        body = json.dumps({"detail": f"refused{ESCAPES}", "name": [f"bad{ESCAPES}"]}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_panels_messages_cannot_drive_the_terminal():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        code, out, err = ccpanel("sandbox", "list", url=url, token="ccp_00000000_secret")
        assert code == 1 and "refused\\x1b]0;owned" in err and "bad\\x1b" in err
        assert not any(c in err for c in "\x1b\x07\x9b\u202e"), repr(err)
        code, out, err = ccpanel("sandbox", "show", "7", url=url, token="ccp_00000000_secret")
        assert code == 1 and "redirect" in err and "\x1b" not in err
    finally:
        server.shutdown()
        server.server_close()


def test_a_number_that_is_one_sandboxs_id_and_anothers_name_is_refused(panel):
    """A sandbox may be named `42`: `ccpanel sandbox destroy 42 --yes` must not act on the
    sandbox whose id is 42 when its user meant the one named so."""
    url, token = panel
    team = Team.objects.get(slug="default")
    target = row(team, "web-1")
    decoy = row(team, str(target.pk))
    code, out, err = ccpanel("--json", "sandbox", "show", str(target.pk), url=url, token=token)
    assert (code, out) == (1, "") and "ambiguous" in err and f"id:{decoy.pk}" in err
    code, out, err = ccpanel("--json", "sandbox", "show", f"id:{target.pk}", url=url, token=token)
    assert code == 0 and json.loads(out)["name"] == "web-1", err
    code, out, err = ccpanel("--json", "sandbox", "show", f"id:{decoy.pk}", url=url, token=token)
    assert code == 0 and json.loads(out)["name"] == str(target.pk), err
    Sandbox.objects.filter(pk=target.pk).delete()  # the number is no id now: the name is found
    code, out, err = ccpanel("--json", "sandbox", "show", str(target.pk), url=url, token=token)
    assert code == 0 and json.loads(out)["id"] == decoy.pk, err
