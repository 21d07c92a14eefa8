"""`manage.py database move`: a SQLite panel with sandboxes, backups, incidents, secrets and
10,000 audit events moved into a new PostgreSQL database, every row there and the audit chain
still verifying; a used target, a PostgreSQL source and a running panel refused.

The source is a SQLite file of the test's own and the target a database it makes on the tests'
PostgreSQL cluster, whatever database the suite itself runs on; everything runs as subprocesses,
as an operator would run it, with a var/ folder of their own (the audit key, the panel's lock)."""

import fcntl
import hashlib
import json
import secrets
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support.panel_db import BULK_EVENTS
from tests.support.paths import ROOT
from tests.support.processes import subprocess_env

pytestmark = pytest.mark.postgres


def manage(*args: str, database: str, var: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = subprocess_env()
    env.update(PANEL_TEST_DATABASE_URL=database, PANEL_VAR_DIR=str(var))
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def shell(code: str, *, database: str, var: Path) -> str:
    done = manage("shell", "--no-imports", "-c", code, database=database, var=var)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def rows_of(database: str, var: Path, chosen: dict | None = None) -> dict:
    code = f"import json; from tests.support import panel_db; panel_db.rows(json.loads({json.dumps(chosen)!r}))"
    out = shell(code, database=database, var=var)
    return json.loads(out.strip().splitlines()[-1])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def new_database(cluster_url: str, name: str) -> str:
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return cluster_url.rsplit("/", 1)[0] + "/" + name


def drop_database(cluster_url: str, name: str) -> None:
    with psycopg.connect(cluster_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A migrated SQLite panel in use: its URL, file and var/ folder."""
    root = tmp_path_factory.mktemp("sqlite-panel")
    var, path = root / "var", root / "panel.sqlite3"
    var.mkdir()
    database = f"sqlite:///{path}"
    migrated = manage("migrate", "-v", "0", database=database, var=var)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    shell("from tests.support import panel_db; panel_db.build()", database=database, var=var)
    return {"url": database, "path": path, "var": var}


@pytest.fixture(scope="module")
def target(postgres_cluster):
    """A new database on the tests' cluster, dropped at the end."""
    name = f"ccpanel_move_{secrets.token_hex(6)}"
    url = new_database(postgres_cluster, name)
    try:
        yield url
    finally:
        drop_database(postgres_cluster, name)


@pytest.fixture(scope="module")
def moved(source, target):
    """The move, run once; the rows on both sides read right after it."""
    before = sha256(source["path"])
    done = manage("database", "move", "--to", target, database=source["url"], var=source["var"])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    there_before = rows_of(source["url"], source["var"])
    chosen = {label: list(model["rows"]) for label, model in there_before.items()}
    return {
        "output": done.stdout,
        "sqlite_unchanged": sha256(source["path"]) == before,
        "source": there_before,
        "target": rows_of(target, source["var"], chosen),
    }


def test_every_row_is_there_after_the_move(moved):
    source, target = moved["source"], moved["target"]
    assert source.keys() == target.keys()
    assert source["audit.AuditEvent"]["count"] > BULK_EVENTS
    assert all(source[label]["count"] > 0 for label in ("sandboxes.Sandbox", "backups.Backup", "incidents.Incident", "sandboxes.Secret"))
    for label, model in source.items():
        # The move audits itself there, after verifying the chain (which records its check).
        extra = 1 if label in ("audit.AuditEvent", "audit.ChainCheck") else 0
        assert target[label]["count"] == model["count"] + extra, label
        assert target[label]["rows"] == model["rows"], label  # the same keys, every column equal
    assert moved["sqlite_unchanged"]


def test_the_audit_chain_verifies_on_postgresql_and_carries_on_there(moved, source, target):
    out = moved["output"]
    assert f"DATABASE_URL={target}" in out and "every count matches" in out
    verified = manage("audit", "verify", database=target, var=source["var"])
    assert verified.returncode == 0, verified.stderr[-3000:]
    events = moved["source"]["audit.AuditEvent"]["count"] + 1
    assert f"{events} events verified" in verified.stdout
    last = shell(
        "from audit.models import AuditEvent; e = AuditEvent.objects.order_by('-seq').first(); print(e.action, e.details['to'])",
        database=target,
        var=source["var"],
    )
    assert last.split()[0] == "database.moved" and ":***@" in last  # the password never in the trail


def test_a_second_move_into_the_same_database_is_refused(moved, source, target):
    again = manage("database", "move", "--to", target, database=source["url"], var=source["var"])
    assert again.returncode != 0
    assert "already holds the panel's rows" in again.stderr
    assert rows_of(target, source["var"], {})["audit.AuditEvent"]["count"] == moved["target"]["audit.AuditEvent"]["count"]


def test_a_move_from_postgresql_is_refused(moved, source, target):
    done = manage("database", "move", "--to", target, database=target, var=source["var"])
    assert done.returncode != 0 and "not SQLite" in done.stderr


def test_a_move_while_the_panel_runs_is_refused(moved, source, target):
    with open(source["var"] / "panel.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as scripts/supervise.py holds it
        done = manage("database", "move", "--to", target, database=source["url"], var=source["var"])
    assert done.returncode != 0 and "stop `make run`" in done.stderr


def test_a_move_that_fails_leaves_sqlite_as_it_was_and_the_target_empty(postgres_cluster, tmp_path):
    """An event altered in SQLite: the copy is made, but the chain does not verify there."""
    var, path = tmp_path / "var", tmp_path / "panel.sqlite3"
    var.mkdir()
    database = f"sqlite:///{path}"
    assert manage("migrate", "-v", "0", database=database, var=var).returncode == 0
    shell(
        "from audit.services import audit_record; from audit.models import AuditEvent\n"
        "for i in range(3): audit_record(actor=None, action='sandbox.start', target=f'box-{i}')\n"
        "AuditEvent.objects.filter(seq=2).update(target='edited')",
        database=database,
        var=var,
    )
    before = sha256(path)
    name = f"ccpanel_move_{secrets.token_hex(6)}"
    url = new_database(postgres_cluster, name)
    try:
        done = manage("database", "move", "--to", url, database=database, var=var)
        with psycopg.connect(url) as conn:
            tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
    finally:
        drop_database(postgres_cluster, name)
    assert done.returncode != 0
    assert "Event #2" in done.stderr and "was altered" in done.stderr
    assert "SQLite database is untouched" in done.stderr and "rolled back" in done.stderr
    assert tables == []  # not a copy that looks complete: the one transaction, tables included, rolled back
    assert sha256(path) == before


def test_a_target_with_other_tables_is_refused_and_left_alone(postgres_cluster, source):
    """Somebody else's database: its rows stay, and no table of the panel's is added to it."""
    name = f"ccpanel_move_{secrets.token_hex(6)}"
    url = new_database(postgres_cluster, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE invoices (id int PRIMARY KEY, total numeric)")
            conn.execute("INSERT INTO invoices VALUES (1, 10.5)")
        done = manage("database", "move", "--to", url, database=source["url"], var=source["var"])
        with psycopg.connect(url) as conn:
            tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            rows = conn.execute("SELECT count(*) FROM invoices").fetchone()[0]
    finally:
        drop_database(postgres_cluster, name)
    assert done.returncode != 0 and "holds tables already (invoices)" in done.stderr
    assert tables == ["invoices"] and rows == 1


def test_the_password_is_kept_out_of_every_message():
    from controlpanel.dbmove import redacted

    assert redacted("postgres://u:s3cret@h:5432/db") == "postgres://u:***@h:5432/db"
    assert "s3cret" not in redacted("postgres://u@h/db?password=s3cret&sslmode=require")
    assert "s3cret" not in redacted("postgres://u@h/db?sslpassword=s3cret")
    for odd in ("postgres://u:s3#cret@h/db", "postgres://u:s3/cret@h/db", "postgres://u:s3?cret@h/db"):
        assert "s3" not in redacted(odd) and "cret" not in redacted(odd), odd
