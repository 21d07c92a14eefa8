"""Join tokens on PostgreSQL, end to end: made on the Hosts page (shown once, only its hash
kept), `manage.py host join` on "the new machine" (a subprocess with a var/ of its own), and every
way a token is refused, each changing nothing; two joins with one token at once make one host.

The panel is a database the test makes on the tests' PostgreSQL cluster, whatever database the
suite runs on; everything runs as subprocesses, as in tests/test_database_move.py."""

import hashlib
import json
import secrets
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hosts import join
from tests.support.paths import ROOT
from tests.support.processes import subprocess_env

pytestmark = pytest.mark.postgres
AGENT_REDIS = "rediss://:agent-pw@127.0.0.1:6390/0"  # handed to the agent, never contacted here


def as_postgres(port: int, sql: str) -> None:
    """SQL as the cluster's superuser (peer authentication, as scripts/postgres.sh does)."""
    done = subprocess.run(
        ["su", "postgres", "-c", f"psql -q -p {port} -d postgres -v ON_ERROR_STOP=1"], input=sql, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def panel(postgres_cluster, tmp_path_factory):
    """A migrated panel database on PostgreSQL, owned by a role of its own (another run's
    `scripts/postgres.sh start` resets the shared role's password), and its environment (the
    agents' URLs set)."""
    port = urlsplit(postgres_cluster).port or 5432
    name, password = f"ccpanel_join_{secrets.token_hex(6)}", secrets.token_hex(16)
    as_postgres(port, f"CREATE ROLE {name} LOGIN PASSWORD '{password}';\nCREATE DATABASE {name} OWNER {name};")
    url = f"postgres://{name}:{password}@127.0.0.1:{port}/{name}"
    var = tmp_path_factory.mktemp("panel-var")
    env = {"PANEL_TEST_DATABASE_URL": url, "PANEL_VAR_DIR": str(var), "PANEL_AGENT_REDIS_URL": AGENT_REDIS, "PANEL_AGENT_DATABASE_URL": url}
    try:
        done = manage("migrate", "-v", "0", env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        yield {"url": url, "env": env}
    finally:
        as_postgres(port, f"DROP DATABASE IF EXISTS {name} WITH (FORCE);\nDROP ROLE IF EXISTS {name};")


def manage(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    full = subprocess_env()
    full.pop("PANEL_AGENT_REDIS_URL", None)
    full.pop("PANEL_AGENT_DATABASE_URL", None)
    full.update(env)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=full, capture_output=True, text=True, timeout=timeout)


def flow(panel, call: str, **env: str):
    done = manage("shell", "--no-imports", "-c", f"from tests.support import join_flow; join_flow.{call}", env={**panel["env"], **env})
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout.strip().splitlines()
    return json.loads(said[-1]) if said else None


def new_machine(tmp_path: Path, panel) -> dict:
    """The environment of `host join` on another machine: no database of the panel's configured
    (its settings name a SQLite file of its own), a var/ of its own."""
    var = tmp_path / "machine-var"
    var.mkdir(exist_ok=True)
    return {"PANEL_TEST_DATABASE_URL": f"sqlite:///{var / 'own.sqlite3'}", "PANEL_VAR_DIR": str(var)}


def test_a_token_made_on_the_hosts_page_is_shown_once_and_only_its_hash_is_kept(panel):
    made = flow(panel, 'page_token("shown-once", "gpu fast")')
    assert made["status"] == 200 and made["token"].startswith("ccpj1.") and made["no_store"], made
    assert not made["shown_again"]
    payload = join.decode(made["token"])
    assert (payload["host"], payload["redis"], payload["database"]) == ("shown-once", AGENT_REDIS, panel["url"])
    found = flow(panel, "state()")
    token = next(t for t in found["tokens"] if t["name"] == "shown-once")
    assert token["secret_sha256"] == hashlib.sha256(payload["secret"].encode()).hexdigest()
    assert payload["secret"] not in json.dumps(found)  # not in any row: the tokens, the hosts, the audit trail
    created = [e for e in found["audit"] if e["action"] == "host.token_created" and e["target"] == "host shown-once"]
    assert len(created) == 1 and created[0]["actor_name"] == "root" and created[0]["details"]["labels"] == ["fast", "gpu"]


@pytest.mark.parametrize(
    ("redis", "database", "says"),
    [
        ("", None, "Set PANEL_AGENT_REDIS_URL"),
        ("redis://:pw@127.0.0.1:6379/0", None, "TLS and a password"),
        ("rediss://127.0.0.1:6379/0", None, "TLS and a password"),
        (AGENT_REDIS, "", "Set PANEL_AGENT_DATABASE_URL"),
        (AGENT_REDIS, "sqlite:////tmp/x.sqlite3", "must be a postgres://"),
    ],
)
def test_no_token_while_the_agents_urls_are_unset_or_unsafe(panel, redis, database, says):
    env = {"PANEL_AGENT_REDIS_URL": redis}
    if database is not None:
        env["PANEL_AGENT_DATABASE_URL"] = database
    before = flow(panel, "state()")
    made = flow(panel, 'page_token("refused-urls")', **env)
    assert made["status"] == 400 and not made["token"] and says in made["errors"], made
    assert flow(panel, "state()") == before


def test_host_join_makes_the_agents_host_and_writes_its_settings_0600(panel, tmp_path):
    text = flow(panel, 'page_token("joined", "gpu")')["token"]
    machine = new_machine(tmp_path, panel)
    done = manage("host", "join", text, "--docker-url", "unix:///var/run/docker.sock", env=machine)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "joined the panel as host joined" in done.stdout
    found = flow(panel, "state()")
    assert {"name": "joined", "agent": True, "enabled": True, "labels": ["gpu"], "docker_url": "unix:///var/run/docker.sock"} in found[
        "hosts"
    ]
    token = next(t for t in found["tokens"] if t["name"] == "joined")
    assert token["used_at"] and token["host__name"] == "joined"
    joined = [e for e in found["audit"] if e["action"] == "host.joined"]
    assert len(joined) == 1 and joined[0]["target"] == "host joined" and joined[0]["actor_name"] == "host joined"
    env_file = Path(machine["PANEL_VAR_DIR"]) / "host.env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = join.read_env_file(env_file)
    assert values == {
        "PANEL_HOST": "joined",
        "PANEL_HOST_AGENT": "true",
        "PANEL_INSTANCE": join.decode(text)["instance"],
        "DATABASE_URL": panel["url"],
        "REDIS_URL": AGENT_REDIS,
    }
    assert not [p for p in env_file.parent.iterdir() if p.name.startswith(".host.env")]  # no temporary file left
    # The join's audit event is chained with the panel's key (the token handed it over, 0600).
    audit_key = Path(machine["PANEL_VAR_DIR"]) / "audit_key"
    assert audit_key.read_text() == (Path(panel["env"]["PANEL_VAR_DIR"]) / "audit_key").read_text()
    assert stat.S_IMODE(audit_key.stat().st_mode) == 0o600
    verified = manage("audit", "verify", env=panel["env"])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # The same token again, on yet another machine: refused, and nothing changes there or here.
    second = tmp_path / "second"
    second.mkdir()
    again = manage("host", "join", text, env=new_machine(second, panel))
    assert again.returncode != 0 and "was used at" in again.stderr, again.stderr
    assert flow(panel, "state()") == found
    assert not (second / "machine-var" / "host.env").exists() and not (second / "machine-var" / "audit_key").exists()


def test_a_wrong_expired_or_revoked_token_is_refused_and_changes_nothing(panel, tmp_path):
    machine = new_machine(tmp_path, panel)
    wrong = flow(panel, 'page_token("wrong-secret")')["token"]
    forged = join.encode({**join.decode(wrong), "secret": secrets.token_urlsafe(32)})
    expired = flow(panel, 'page_token("expired")')["token"]
    flow(panel, 'expire("expired")')
    revoked = flow(panel, 'page_token("revoked")')["token"]
    flow(panel, 'revoke("revoked")')
    before = flow(panel, "state()")
    for text, says in (
        (forged, "knows no such join token"),
        (expired, "expired at"),
        (revoked, "was revoked at"),
        ("ccpj1.bm90IGpzb24", "This is not a join token"),
        ("hello", "This is not a join token"),
    ):
        done = manage("host", "join", text, env=machine)
        assert done.returncode != 0 and says in done.stderr, (says, done.stderr[-2000:])
    assert flow(panel, "state()") == before
    assert not (Path(machine["PANEL_VAR_DIR"]) / "host.env").exists()


def test_a_token_naming_a_sqlite_database_is_refused_before_anything(panel, tmp_path):
    keys = {"audit_key": "a" * 64, "secrets_key": "s" * 64}
    payload = {"host": "on-sqlite", "instance": "x", "redis": AGENT_REDIS, "database": "sqlite:////tmp/panel.sqlite3", "secret": "s"}
    text = join.encode({**payload, **keys})
    done = manage("host", "join", text, env=new_machine(tmp_path, panel))
    assert done.returncode != 0 and "manage.py database move --to postgres://" in done.stderr, done.stderr
    assert not (tmp_path / "machine-var" / "audit_key").exists() and not (tmp_path / "machine-var" / "host.env").exists()


def test_two_joins_with_one_token_at_once_make_one_host(panel):
    text = flow(panel, 'page_token("raced")')["token"]
    outcomes = flow(panel, f"race({text!r}, threads=4)")
    assert outcomes.count("joined") == 1, outcomes
    assert all("was used at" in o for o in outcomes if o != "joined"), outcomes
    found = flow(panel, "state()")
    assert [h["name"] for h in found["hosts"]].count("raced") == 1
    assert len([e for e in found["audit"] if e["action"] == "host.joined" and e["target"] == "host raced"]) == 1


def test_revoking_a_joined_hosts_token_disables_the_host(panel, tmp_path):
    text = flow(panel, 'page_token("to-revoke")')["token"]
    assert manage("host", "join", text, env=new_machine(tmp_path, panel)).returncode == 0
    flow(panel, 'revoke("to-revoke")')
    found = flow(panel, "state()")
    assert next(h for h in found["hosts"] if h["name"] == "to-revoke")["enabled"] is False
    revoked = [e for e in found["audit"] if e["action"] == "host.token_revoked" and e["target"] == "host to-revoke"]
    assert len(revoked) == 1 and revoked[0]["details"]["host_disabled"] is True
