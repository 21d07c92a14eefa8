"""Shared fixtures. Tests that need Docker, Redis or Chromium use the real ones, are marked
`docker` or `browser`, and fail (never skip) when those are missing; `make test` starts them
first. The fast tier (`make check`, `pytest -m "not docker and not browser"`) drives the
services with the in-memory FakeEngine (tests/support/fakes.py) instead.

The live stack (Celery worker, Daphne, the Docker events watcher) runs as real subprocesses
against the test database file, so tests that use it need `transactional_db`: what a test
writes must be committed for those processes to see it.
"""

import gc
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from sandboxes import engine, network, services
from sandboxes.models import Sandbox
from teams.models import Membership, Team
from tests.support.cleanup import empty_pool, remove_own_test_resources
from tests.support.docker import TEST_IMAGE, docker_cli
from tests.support.fakes import FakeEngine
from tests.support.paths import ROOT
from tests.support.processes import Proc, free_port
from tests.support.waiting import wait_for


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
        remove_own_test_resources()
        network.remove()
        for name in network.networks():
            docker_cli("network", "rm", name, check=False)
    except Exception as exc:  # noqa: BLE001 - a clean-up that fails is said, never a failed run
        print(f"clean-up at the end of the session: {exc}", file=sys.stderr)


@pytest.fixture(scope="session")
def _storage_pool():
    """The tests' own storage pool (a loop file in var/, as `make run` makes one beside the
    workspace root), mounted at the test workspace root for the session; unmounted, its loop
    device released and its file removed at the end, whatever the outcome."""
    from storage import pool

    empty_pool(Path(settings.WORKSPACE_ROOT))
    try:
        said = pool.ensure()
    except pool.PoolError as exc:
        pytest.fail(f"These tests need a btrfs storage pool: {exc}")
    if not pool.active():
        pytest.fail(f"The storage pool is not mounted: {said}")
    try:
        yield
    finally:
        remove_own_test_resources()  # containers first: a home volume bound into the pool keeps it busy
        pool.unmount()
        if pool.mounted_at(settings.WORKSPACE_ROOT) is None:  # a file still mounted would keep its space
            Path(settings.STORAGE_POOL_FILE).unlink(missing_ok=True)


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


@pytest.fixture
def clean_docker(docker_engine, test_image):
    """Start and end with no test containers, volumes or workspace folders."""
    remove_own_test_resources()
    yield
    remove_own_test_resources()


@pytest.fixture
def clean_workspace():
    """Start and end with no test workspace folders (for the fast tier: no Docker involved)."""
    remove_own_test_resources(docker=False)
    yield
    remove_own_test_resources(docker=False)


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


def _is_wrapper(o, cls) -> bool:
    try:
        return isinstance(o, cls)
    except ReferenceError:  # a weak proxy (Schemathesis and Hypothesis hold some) whose object is gone
        return False


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, left with no connection of this run when it is dropped:
    PostgreSQL refuses to drop a database someone is connected to. A thread that used the
    database (asgiref's, a test's own) keeps its own connection open while it lives, and after it
    until its DatabaseWrapper is collected (the wrapper sits in reference cycles). At the end of
    the session no test runs any more: every such connection is closed here, whatever holds it."""
    yield
    from django.db import connections
    from django.db.backends.base.base import BaseDatabaseWrapper

    gc.collect()
    ours = {id(c) for c in connections.all(initialized_only=True)}
    for wrapper in [o for o in gc.get_objects() if _is_wrapper(o, BaseDatabaseWrapper) and id(o) not in ours]:
        if wrapper.connection is not None:
            wrapper.connection.close()  # the driver's own close: Django's refuses another thread's


def _is_wrapper(o, kind) -> bool:
    """isinstance, for any object the collector lists: a weakref.proxy whose referent is gone
    (uritemplate's, left by the API schema's generation) raises ReferenceError when asked."""
    try:
        return isinstance(o, kind)
    except ReferenceError:
        return False


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[str]:
    """The tests' own PostgreSQL cluster (scripts/postgres.sh): the URL of its database, for a
    test to make databases of its own beside it. Stopped at the end if this started it, so the
    machine is left as found. Missing, it fails the run under CI and skips elsewhere."""
    done = subprocess.run(["bash", "scripts/postgres.sh", "start"], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    url = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    if done.returncode != 0 or not url.startswith("postgres://"):
        message = f"These tests need PostgreSQL (scripts/postgres.sh start): {done.stderr.strip()[-2000:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield url
    finally:
        if "started" in done.stderr.splitlines():
            subprocess.run(["bash", "scripts/postgres.sh", "stop"], cwd=ROOT, capture_output=True, timeout=120, check=False)


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, _docker_ping, _test_image_built):
    """A real Celery worker (prefork, as `make run` starts it) on the test database, reading
    what the panel's three workers read (hosts.queues)."""
    from hosts.queues import worker_queues

    with django_db_blocker.unblock():
        queues = ",".join(dict.fromkeys(worker_queues("lifecycle") + worker_queues("jobs") + worker_queues("webhooks")))
    p = Proc("celery-worker", [str(ROOT / ".venv/bin/celery"), "-A", "controlpanel", "worker", "-l", "INFO", "-c", "2", "-Q", queues])
    try:
        p.wait_for_line("ready.", timeout=60)
        yield p
    finally:
        p.stop()


@pytest.fixture(scope="session")
def panel_server(django_db_setup, celery_worker):
    """Daphne serving the panel (HTTP and websockets) on a free loopback port."""
    port = free_port()
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


@pytest.fixture
def agent_receiver(django_db_setup, docker_engine):
    """The agent-activity receiver (`manage.py agent_receiver`), as the Procfile runs it, looking
    at the running sandboxes every second (Docker's events make it look at once anyway)."""
    p = Proc("agent-receiver", [sys.executable, "manage.py", "agent_receiver"], AGENT_RECEIVER_RECONCILE_SECONDS="1")
    try:
        p.wait_for_line("receiving agent events", timeout=30)
        yield p
    finally:
        p.stop()


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


@pytest.fixture
def broker_down():
    """Celery's broker on a port where nothing listens: sending a task fails to connect for real."""
    from controlpanel.celery import app
    from sandboxes import health

    original = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:9/0"
    app._pool = None
    app.amqp._producer_pool = None
    yield
    app.conf.broker_url = original
    app._pool = None
    app.amqp._producer_pool = None
    health.refresh()
