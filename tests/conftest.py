"""Shared fixtures. Tests that need Docker, Redis or Chromium use the real ones, are marked
`docker` or `browser`, and fail (never skip) when those are missing; `make test` starts them
first. The fast tier (`make check`, `pytest -m "not docker and not browser"`) drives the
services with the in-memory FakeEngine (tests/fakes.py) instead.

The live stack (Celery worker, Daphne, the Docker events watcher) runs as real subprocesses
against the test database file, so tests that use it need `transactional_db`: what a test
writes must be committed for those processes to see it.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from sandboxes import engine, network, services
from sandboxes.models import Sandbox
from teams.models import Membership, Team
from tests.fakes import FakeEngine

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "var" / "log" / "tests"
TEST_IMAGE = "ccpanel/test-busybox:latest"


def wait_for(predicate: Callable[[], object], *, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def docker_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The docker CLI, used by tests to act "outside the panel" and to read state back."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def base_settings(*names: str, unset: Callable[[str], bool]) -> list:
    """The settings `names` as a production start-up reads them (controlpanel.settings.base, in
    a fresh interpreter), from this environment less the variables `unset` names (a Path as text)."""
    env = {k: v for k, v in os.environ.items() if not unset(k)}
    env["DJANGO_SETTINGS_MODULE"] = "controlpanel.settings.base"
    code = (
        "import django; django.setup(); from django.conf import settings as s; import json; "
        f"print(json.dumps([getattr(s, name) for name in {list(names)!r}], default=str))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def act(sandbox: Sandbox, action: str) -> Sandbox:
    """Request `action` of the sandbox and carry it out here (no worker); the sandbox after it."""
    services.sandbox_request_action(actor=services.SystemActor("test"), sandbox=sandbox, action=action, enqueue=False)
    services.sandbox_perform(sandbox_id=sandbox.pk, action=action)
    return Sandbox.objects.get(pk=sandbox.pk)


def ws_headers(cookie: str) -> list[tuple[bytes, bytes]]:
    """The websocket handshake headers of a browser on the panel's page, signed in with the
    session `cookie`."""
    return [
        (b"host", b"127.0.0.1:8000"),
        (b"origin", f"http://127.0.0.1:{settings.PANEL_PORT}".encode()),
        (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()),
    ]


def _require_marker(request, marker: str) -> None:
    if request.node.get_closest_marker(marker) is None and request.scope == "function":
        pytest.fail(f"{request.node.nodeid} uses a real service: mark it `{marker}` so the fast tier leaves it out.")


@pytest.fixture(scope="session")
def _docker_ping(_storage_pool):
    try:
        answer = engine.engine_for().ping()
    except engine.EngineError as exc:
        pytest.fail(f"These tests need the Docker engine: {exc}")
    # Sandboxes on the network start only when the host's egress rules are in place; the
    # panel's watcher and periodic check put them there, the tests do it once here.
    network.apply()
    yield answer
    # The machine as it was found: no container, network, bridge or rule of the tests is left.
    try:
        _remove_test_resources()
        network.remove()
        for name in (settings.SANDBOX_NETWORK, settings.SANDBOX_ALLOW_NETWORK):
            docker_cli("network", "rm", name, check=False)
    except Exception as exc:  # noqa: BLE001 - a clean-up that fails is said, never a failed run
        print(f"clean-up at the end of the session: {exc}", file=sys.stderr)


@pytest.fixture(scope="session")
def _storage_pool():
    """The tests' own storage pool (a loop file in var/, as `make run` makes one beside the
    workspace root), mounted at the test workspace root for the session; unmounted, its loop
    device released and its file removed at the end, whatever the outcome."""
    from storage import pool

    _empty_pool(Path(settings.WORKSPACE_ROOT))
    try:
        said = pool.ensure()
    except pool.PoolError as exc:
        pytest.fail(f"These tests need a btrfs storage pool: {exc}")
    if not pool.active():
        pytest.fail(f"The storage pool is not mounted: {said}")
    try:
        yield
    finally:
        _remove_test_resources()  # containers first: a home volume bound into the pool keeps it busy
        pool.unmount()
        if pool.mounted_at(settings.WORKSPACE_ROOT) is None:  # a file still mounted would keep its space
            Path(settings.STORAGE_POOL_FILE).unlink(missing_ok=True)


def _empty_pool(root: Path) -> None:
    """Delete every subvolume and snapshot in the tests' pool (deepest first: a subvolume made
    inside another must go before it), so that `rm` can take the rest."""
    if not str(root).startswith(str(ROOT / "var")):
        raise UnsafeCleanup(f"{root} is not inside {ROOT / 'var'}")
    found = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--mountpoint", str(root)], capture_output=True, text=True, check=False)
    if found.stdout.strip() != "btrfs":
        return
    qgroups = subprocess.run(["btrfs", "qgroup", "show", str(root)], capture_output=True, text=True, check=False).stdout
    for group in {word for word in qgroups.split() if word.startswith("1/")}:
        subprocess.run(
            ["btrfs", "qgroup", "limit", "none", group, str(root)], capture_output=True, check=False
        )  # a full group cannot be emptied
    listed = subprocess.run(["btrfs", "subvolume", "list", str(root)], capture_output=True, text=True, check=False).stdout
    paths = sorted((line.split(" path ", 1)[1] for line in listed.splitlines() if " path " in line), key=len, reverse=True)
    for path in paths:
        subprocess.run(["btrfs", "subvolume", "delete", str(root / path)], capture_output=True, check=False)


@pytest.fixture
def docker_engine(request, _docker_ping):
    _require_marker(request, "docker")
    return _docker_ping


@pytest.fixture(scope="session")
def _test_image_built(_docker_ping):
    if not engine.engine_for().image_exists(TEST_IMAGE):
        from django.core.management import call_command

        call_command("build_images", test=True)
    return TEST_IMAGE


@pytest.fixture
def test_image(request, docker_engine, _test_image_built):
    return _test_image_built


@pytest.fixture(autouse=True)
def _no_pool_without_the_engine(request):
    """The fast tier has no storage pool (it is made for the tests that use the real engine):
    there, sandboxes keep plain folders."""
    if request.node.get_closest_marker("docker") is None and request.node.get_closest_marker("browser") is None:
        request.getfixturevalue("settings").STORAGE_POOL = "none"


@pytest.fixture
def fake_engine(settings) -> Iterator[FakeEngine]:
    """The in-memory engine, for every host, for this test (it holds the test image). It has no
    host firewall: the egress rules are tried on the real engine (tests/sandboxes/network/)."""
    settings.SANDBOX_EGRESS_RULES = False
    with engine.override(FakeEngine(images={TEST_IMAGE})) as fake:
        yield fake


class UnsafeCleanup(Exception):
    """The suite's clean-up was pointed at something that is not the tests' own."""


def remove_test_resources(
    *, instance: str, workspace_root: Path, mount_roots: list[Path], docker: bool = True, var_roots: tuple[Path, ...] = ()
) -> None:
    """Remove the test instance's containers, volumes, images, workspace and mount roots.

    Refuses (raising UnsafeCleanup, touching nothing) unless the instance label starts with
    "test", the workspace root lies under this project's var/, and each mount root is one of the
    tests' own under /srv: whatever the environment says, `make test` never removes a user's data."""
    var = (ROOT / "var").resolve()
    root = Path(workspace_root).resolve()
    if not instance.startswith("test"):
        raise UnsafeCleanup(f"instance {instance!r} is not a test instance")
    for folder in (root, *var_roots):
        folder = Path(folder).resolve()
        if folder == var or var not in folder.parents:
            raise UnsafeCleanup(f"{folder} is not inside {var}")
    for mount_root in mount_roots:
        if not (str(mount_root).startswith("/srv/ccpanel-test") and str(mount_root).endswith("-mounts")):
            raise UnsafeCleanup(f"mount root {mount_root} is not one of the tests' own")
    label = f"{engine.LABEL_INSTANCE}={instance}"
    if docker:
        ids = docker_cli("ps", "-aq", "--filter", f"label={label}").stdout.split()
        if ids:
            docker_cli("rm", "-f", *ids, check=False)
        vols = docker_cli("volume", "ls", "-q", "--filter", f"label={label}").stdout.split()
        if vols:
            docker_cli("volume", "rm", "-f", *vols, check=False)
        images = docker_cli("images", "-q", "--filter", f"label={label}").stdout.split()
        if images:
            docker_cli("rmi", "-f", *set(images), check=False)
    _empty_pool(root)
    # The pool's mount point stays (the session's fixture unmounts it); what is in it goes.
    in_pool = [root / name for name in os.listdir(root)] if _is_pool(root) else [root]
    for path in [*in_pool, *mount_roots, *var_roots]:
        if Path(path).exists():
            subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)
    _restore_pool_root(root)


def _is_pool(root: Path) -> bool:
    from storage import pool

    return pool.mounted_at(root) is not None


def _restore_pool_root(root: Path) -> None:
    """`rm` cannot remove the pool's mount point (nor the folders the pool keeps): put back
    what the panel expects there."""
    from storage import pool

    if _is_pool(root):
        pool.ensure()


def _remove_test_resources(*, docker: bool = True):
    remove_test_resources(
        instance=settings.PANEL_INSTANCE,
        workspace_root=Path(settings.WORKSPACE_ROOT),
        mount_roots=[Path(r) for r in settings.SANDBOX_MOUNT_ROOTS],
        docker=docker,
        var_roots=(Path(settings.BACKUP_ROOT), Path(settings.EVIDENCE_ROOT)),
    )


@pytest.fixture
def clean_docker(docker_engine, test_image):
    """Start and end with no test containers, volumes or workspace folders."""
    _remove_test_resources()
    yield
    _remove_test_resources()


@pytest.fixture
def clean_workspace():
    """Start and end with no test workspace folders (for the fast tier: no Docker involved)."""
    _remove_test_resources(docker=False)
    yield
    _remove_test_resources(docker=False)


@pytest.fixture
def team(db):
    return Team.objects.get_or_create(slug="default", defaults={"name": "Default"})[0]


@pytest.fixture
def admin_user(db, team, django_user_model):
    user = django_user_model.objects.create_superuser("admin", "", "admin-pass-123")
    Membership.objects.create(user=user, team=team, role=Membership.Role.ADMIN)
    return user


@pytest.fixture
def logged_in(client, admin_user):
    """The test client, signed in as the default team's admin."""
    client.force_login(admin_user)
    return client


def create_form(team: Team, **changes) -> dict:
    """What the New sandbox page posts for a sandbox "good" of `team` (512 MB, one CPU, on the
    internet, no extra mount), with `changes`."""
    return {
        "name": "good",
        "team": team.pk,
        "image": TEST_IMAGE,
        "memory_mb": 512,
        "cpus": "1",
        "network_mode": "internet",
        "extra_mounts": "",
        **changes,
    }


@pytest.fixture
def make_sandbox(request, team):
    """Create a sandbox and provision it in-process (no worker): returns the running sandbox. On
    the real engine, unless the test asked for `fake_engine`."""
    if "fake_engine" not in request.fixturenames:
        request.getfixturevalue("test_image")

    def make(name: str, **kwargs) -> Sandbox:
        params = dict(image=TEST_IMAGE, memory_mb=256, cpus=Decimal("1"), network_mode="internet")
        params.update(kwargs)
        sandbox = services.sandbox_create(actor=services.SystemActor("test"), team=team, name=name, enqueue=False, **params)
        services.sandbox_perform(sandbox_id=sandbox.pk, action="start")
        sandbox.refresh_from_db()
        return sandbox

    return make


@pytest.fixture
def mount_root() -> Iterator[Path]:
    """The tests' one allowed extra-mount root (SANDBOX_MOUNT_ROOTS), created empty."""
    root = Path(settings.SANDBOX_MOUNT_ROOTS[0])
    assert str(root).startswith("/srv/ccpanel-test"), root
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=True)
    root.mkdir(parents=True)
    root.chmod(0o755)
    yield root
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], check=False)


def subprocess_env(**extra: str) -> dict[str, str]:
    db = connection.settings_dict
    env = dict(os.environ, **extra)
    env["DJANGO_SETTINGS_MODULE"] = "controlpanel.settings.test"
    # The processes the tests start use the test database itself (settings.test reads this).
    if db["ENGINE"].endswith("sqlite3"):
        env["PANEL_TEST_DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        env["PANEL_TEST_DATABASE_URL"] = (
            f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or 'localhost'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    return env


class Proc:
    def __init__(self, name: str, cmd: list[str], **env: str):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log_path = LOG_DIR / f"{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(**env), stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_for_line(self, marker: str, *, timeout: float) -> None:
        """Wait until the process prints `marker`; fail with its output if it exits first."""
        wait_for(lambda: marker in self.output() or self.proc.poll() is not None, timeout=timeout, what=self.log_path.stem)
        assert self.proc.poll() is None, self.output()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, _docker_ping, _test_image_built):
    """A real Celery worker (prefork, as `make run` starts it) on the test database."""
    queues = f"{settings.CELERY_TASK_DEFAULT_QUEUE},{settings.CELERY_JOBS_QUEUE}"
    p = Proc("celery-worker", [str(ROOT / ".venv/bin/celery"), "-A", "controlpanel", "worker", "-l", "INFO", "-c", "2", "-Q", queues])
    try:
        p.wait_for_line("ready.", timeout=60)
        yield p
    finally:
        p.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def panel_server(django_db_setup, celery_worker):
    """Daphne serving the panel (HTTP and websockets) on a free loopback port."""
    port = _free_port()
    p = Proc(
        "daphne",
        [str(ROOT / ".venv/bin/daphne"), "-b", "127.0.0.1", "-p", str(port), "controlpanel.asgi:application"],
        PANEL_PORT=str(port),
        PANEL_WS_PORT=str(port),
    )

    def up():
        assert p.proc.poll() is None, p.output()
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(up, timeout=30, what="daphne")
        yield f"http://127.0.0.1:{port}"
    finally:
        p.stop()


@pytest.fixture
def engine_watcher(django_db_setup, docker_engine):
    """The Docker events watcher (`manage.py watch_engine`), as the Procfile runs it."""
    p = Proc("watch-engine", [sys.executable, "manage.py", "watch_engine"])
    try:
        p.wait_for_line("watching Docker events", timeout=30)
        yield p
    finally:
        p.stop()


# The workers that tests of dying workers start: a stop takes up to 20 s (a container may ignore
# SIGTERM), the heartbeat is written every 0.5 s and a claim is stale after 3 s without one.
WORKER_ENV = {"SANDBOX_STOP_TIMEOUT": "20", "SANDBOX_HEARTBEAT_SECONDS": "0.5", "SANDBOX_STALE_SECONDS": "3"}


@pytest.fixture
def own_queue():
    """Send this test's tasks to a queue only its own workers read (the suite's shared worker,
    with other settings, must not take them)."""
    from controlpanel.celery import app

    queue = "ccpanel-test-tasks-end"

    def reroute():
        app.amqp.flush_routes()
        app.amqp.__dict__.pop("router", None)  # a cached_property built from the routes

    before = app.conf.task_routes
    app.conf.task_routes = {f"{app_name}.tasks.*": {"queue": queue} for app_name in ("sandboxes", "backups", "incidents")}
    reroute()
    yield queue
    app.conf.task_routes = before
    reroute()


def start_worker(name: str, queue: str, **env: str) -> Proc:
    """A worker of its own (one process) reading only `queue`, with short heartbeats."""
    p = Proc(
        name,
        [str(ROOT / ".venv/bin/celery"), "-A", "controlpanel", "worker", "-l", "INFO", "-c", "1", "-n", f"{name}@%h", "-Q", queue],
        **{**WORKER_ENV, **env},
    )
    p.wait_for_line("ready.", timeout=60)
    return p


def kill_worker(p: Proc) -> None:
    """SIGKILL the worker and its pool children: a crash, not a shutdown."""
    children = os.popen(f"pgrep -P {p.proc.pid}").read().split()
    for pid in [p.proc.pid, *map(int, children)]:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.proc.wait(10)
    p.log.close()
