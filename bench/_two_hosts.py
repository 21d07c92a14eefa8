"""A second host for the benchmarks (issue 16): tests/support/second_host.py's network namespace
with its own dockerd, pool and Redis (TLS, a password), a PostgreSQL database of the bench's own
on the tests' cluster (a second host refuses SQLite), the host joined with a token made as the
Hosts page makes it, and its host agent running inside it. Everything is removed again at exit,
whatever the outcome. Imported, never run."""

import atexit
import contextlib
import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"


def _psql(port: int, sql: str, *, check: bool = True) -> str:
    done = subprocess.run(
        ["su", "postgres", "-c", f"psql -q -A -t -p {port} -d postgres -v ON_ERROR_STOP=1"],
        input=sql,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0 and check:
        raise SystemExit(f"psql failed: {done.stderr.strip()}")
    if done.returncode != 0:
        print(f"note: {done.stderr.strip()}")
    return done.stdout


class SecondHost:
    """Before django.setup(): `prepare(slot)` makes the database and sets the panel's environment
    (its Redis is the second host's, the agents' URLs), returning the database's URL; once
    Django is set up: `up()` (the host itself: its pool is made through the settings), then,
    after migrate, `join()`."""

    def __init__(self) -> None:
        self.host = None
        self.agent: subprocess.Popen | None = None
        self.agent_env: dict[str, str] = {}
        self.stop_postgres = False
        self.db: tuple[int, str] | None = None

    def prepare(self, slot: int) -> str:
        sys.path.insert(0, str(ROOT))
        from tests.support import second_host

        atexit.register(self.down)
        started = subprocess.run(["bash", "scripts/postgres.sh", "start"], cwd=ROOT, capture_output=True, text=True, timeout=600)
        url = started.stdout.strip().splitlines()[-1] if started.stdout.strip() else ""
        if started.returncode != 0 or not url.startswith("postgres://"):
            raise SystemExit(f"two hosts need PostgreSQL (scripts/postgres.sh start): {started.stderr.strip()[-2000:]}")
        self.stop_postgres = "started" in started.stderr.splitlines()
        port = urlsplit(url).port or 5432
        for old in _psql(port, "SELECT datname FROM pg_database WHERE datname LIKE 'ccpanel_bench_%';").split():
            _psql(port, f"DROP DATABASE IF EXISTS {old} WITH (FORCE);\nDROP ROLE IF EXISTS {old};")  # a run that could not drop it
        name, password = f"ccpanel_bench_{secrets.token_hex(6)}", secrets.token_hex(16)
        _psql(port, f"CREATE ROLE {name} LOGIN PASSWORD '{password}';\nCREATE DATABASE {name} OWNER {name};")
        self.db = (port, name)
        self.host = second_host.SecondHost(layout=second_host.Layout(slot), redis_password=secrets.token_hex(16))
        self.tls = VAR / f"bench-hosts-{slot}"
        os.environ.update(
            REDIS_URL=self.host.redis_url,
            PANEL_AGENT_REDIS_URL=self.host.redis_url,
            PANEL_AGENT_DATABASE_URL=self.host.database_url_from_inside(name, name, password),
            HOSTS_TLS_DIR=str(self.tls),
        )
        for key in ("PANEL_HOST", "PANEL_HOST_AGENT", "DOCKER_HOST"):
            os.environ.pop(key, None)
        return f"postgres://{name}:{password}@127.0.0.1:{port}/{name}"

    def up(self) -> None:
        """The second host itself, with the Redis password its URL was given in prepare()."""
        self.host.up(redis_password=self.host.redis_password)
        shutil.rmtree(self.tls, ignore_errors=True)
        shutil.copytree(self.host.docker_client_certs, self.tls / "far")
        (self.tls / "far" / "key.pem").chmod(0o600)

    def join(self, warm_pool: str) -> None:
        """The token (as the Hosts page makes it), `host join` inside the second host, and its
        agent started there; returns once the agent's heartbeat is in the database."""
        from hosts.models import Host
        from tests.support.join_flow import page_token

        h2 = self.host
        said = io.StringIO()
        with contextlib.redirect_stdout(said):
            page_token("far")
        token = json.loads(said.getvalue().strip().splitlines()[-1])["token"]
        env = dict(os.environ)
        env.update(
            PANEL_VAR_DIR=str(VAR / "bench-agent-var"),
            PANEL_TEST_DATABASE_URL=os.environ["PANEL_AGENT_DATABASE_URL"],
            DOCKER_HOST=h2.docker_url,
            DOCKER_LOCAL_SOCKET=str(urlsplit(h2.docker_url).path),
            WORKSPACE_ROOT=str(h2.workspace_root),
            STORAGE_POOL_FILE=str(h2.pool_file),
            BACKUP_ROOT=str(VAR / "bench-agent-backups"),
            PANEL_TEST_KEEP="WORKSPACE_ROOT,STORAGE_POOL_FILE,BACKUP_ROOT",
            WARM_POOL=warm_pool,
        )
        for key in ("PANEL_AGENT_REDIS_URL", "PANEL_AGENT_DATABASE_URL", "HOSTS_TLS_DIR"):
            env.pop(key)
        self.agent_env = env
        done = h2.run(sys.executable, "manage.py", "host", "join", token, "--panel-url", h2.docker_tls_url, env=env, timeout=120)
        if done.returncode != 0:
            raise SystemExit(f"host join failed: {done.stdout}{done.stderr}")
        log = open(VAR / "log" / "bench-scale-agent.log", "w")  # noqa: SIM115 - the child keeps it
        self.agent = h2.popen([sys.executable, "manage.py", "host", "agent"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not Host.objects.filter(name="far").exclude(engine_version="").exists():
            if time.monotonic() > deadline or self.agent.poll() is not None:
                raise SystemExit("the second host's agent did not beat; see var/log/bench-scale-agent.log")
            time.sleep(0.5)

    def down(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.terminate()
            try:
                self.agent.wait(30)
            except subprocess.TimeoutExpired:
                self.agent.kill()
        if self.host is not None:
            if self.agent_env:
                self.host.run(sys.executable, "manage.py", "egress", "remove", env=self.agent_env, timeout=60)
            left = self.host.down()
            if left:
                print(f"note: the second host left {left}")
            self.host = None
        if self.db is not None:
            port, name = self.db
            _psql(port, f"DROP DATABASE IF EXISTS {name} WITH (FORCE);\nDROP ROLE IF EXISTS {name};", check=False)
            self.db = None
            busy = "SELECT count(*) FROM pg_stat_activity WHERE datname IS NOT NULL AND pid <> pg_backend_pid();"
            others = _psql(port, busy, check=False)
            if others.strip() not in ("", "0"):
                self.stop_postgres = False  # another run uses the cluster now: it stops it when it is done
        if self.stop_postgres:
            subprocess.run(["bash", "scripts/postgres.sh", "stop"], cwd=ROOT, capture_output=True, timeout=120, check=False)
            self.stop_postgres = False
        shutil.rmtree(VAR / "bench-agent-var", ignore_errors=True)
        shutil.rmtree(getattr(self, "tls", VAR / "bench-hosts-none"), ignore_errors=True)
        shutil.rmtree(VAR / "bench-agent-backups", ignore_errors=True)
