"""Settings for the test suite: the same as production, pointed at throw-away resources.

Test sandboxes carry their own instance label, network, bridge, subnet, workspace root, mount
root and Redis database. These are set unconditionally, whatever the environment says, so that a
`make test` never touches (or reconciles, or cleans up) the sandboxes and folders of a panel
running on the same machine. The variables are written to os.environ so that the Celery worker
and the web server the tests start as subprocesses inherit the same configuration.

PANEL_TEST_SLOT (a small number) gives a second test run on the same machine (a helper, the
benchmarks) its own set of all of these.
"""

import os
import re
from pathlib import Path

_base = Path(__file__).resolve().parent.parent.parent
_slot = os.environ.get("PANEL_TEST_SLOT", "").strip()
if _slot and not re.fullmatch(r"[0-9]{1,2}", _slot):
    raise SystemExit(f"PANEL_TEST_SLOT={_slot!r} must be a number from 0 to 99.")
# The fast tier runs in parallel (pytest-xdist, `make check`): each worker gwN takes the slot after
# the run's own (90 when none is given), so that no two share a workspace root or a database.
_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if re.fullmatch(r"gw[0-9]+", _worker):
    _slot = str((int(_slot) if _slot else 90) + int(_worker[2:]))
    if int(_slot) > 99:
        raise SystemExit(f"xdist worker {_worker} would take slot {_slot}: give PANEL_TEST_SLOT a smaller number.")
_n = int(_slot) if _slot else None
_name = "test" if _n is None else f"test{_n}"

TEST_ENVIRONMENT = {
    "PANEL_INSTANCE": _name,
    "WORKSPACE_ROOT": str(_base / "var" / f"{_name}-workspaces"),
    # Extra-mount roots may not lie inside a home directory, and a clone of this project may: the
    # tests' root sits under /srv, named for the instance so the clean-up can recognise it.
    "SANDBOX_MOUNT_ROOTS": f"/srv/ccpanel-{_name}-mounts",
    "SANDBOX_NETWORK": f"ccpanel-{_name}",
    "SANDBOX_SUBNET": "172.28.9.0/24" if _n is None else f"172.29.{_n}.0/24",
    "SANDBOX_BRIDGE": f"ccpanel-{_name}0"[:15],
    "SANDBOX_ALLOW_NETWORK": f"ccpanel-{_name}-allowlist",
    "SANDBOX_ALLOW_SUBNET": "172.28.10.0/24" if _n is None else f"172.30.{_n}.0/24",
    "SANDBOX_ALLOW_BRIDGE": f"ccpanel-{_name}a"[:15],
    "BACKUP_ROOT": str(_base / "var" / f"{_name}-backups"),
    "EVIDENCE_ROOT": str(_base / "var" / f"{_name}-evidence"),
    "SECRETS_KEY_FILE": str(_base / "var" / f"{_name}-secrets_key"),
    "SANDBOX_PROXY_CA_DIR": str(_base / "var" / f"{_name}-proxy-ca"),
    "API_LOG_FOLLOW_DIR": str(_base / "var" / f"{_name}-log-follows"),
    # The tests' own storage pool (mounted by the suite, tests/conftest.py; removed at its end).
    "STORAGE_POOL_FILE": str(_base / "var" / f"{_name}-pool.btrfs"),
}
# A process that stands for another machine (a host agent in the tests' second host) keeps what
# PANEL_TEST_KEEP names (comma-separated) from its own environment: its workspace root, its pool.
_kept = {k: os.environ[k] for k in os.environ.get("PANEL_TEST_KEEP", "").split(",") if k in os.environ}
os.environ.update(TEST_ENVIRONMENT)
os.environ.update(_kept)
# Defaults that suit the tests; a test may set others for the processes it starts.
for _key, _value in {
    "SANDBOX_DEFAULT_IMAGE": "ccpanel/test-busybox:latest",
    "SANDBOX_DEFAULT_MEMORY_MB": "256",
    "SANDBOX_DEFAULT_CPUS": "1",
    "SANDBOX_STOP_TIMEOUT": "3",
    "STORAGE_POOL_SIZE_MB": "10240",
    "SANDBOX_DEFAULT_DISK_MB": "256",
    # Sandboxes are pointed at the credential proxy only in the tests that run it
    # (tests/sandboxes/network/test_proxy.py): elsewhere nothing listens there.
    "SANDBOX_PROXY": "false",
    "WARM_POOL": "",  # a test that wants one sets it (settings.WARM_POOL) and fills it itself
    "API_RATE_LIMIT": "100000/min",  # counted in every call; tests/api/test_throttling.py sets a low one
}.items():
    os.environ.setdefault(_key, _value)
# The panel's own Redis (or REDIS_URL's server), on a database of the tests' own.
_redis = os.environ.get("REDIS_URL") or f"unix://{_base / 'var' / 'redis.sock'}?db=0"
_db = 15 if _n is None else 14 - (_n % 14)
if _redis.startswith("unix://"):
    _redis = re.sub(r"\?.*$", "", _redis) + f"?db={_db}"
else:  # redis[s]://host:port[/db][?query]: the query (a rediss:// URL's CA, say) kept
    _head, _q, _query = _redis.partition("?")
    _redis = re.sub(r"(/\d+)?$", f"/{_db}", _head, count=1) + _q + _query
os.environ["REDIS_URL"] = _redis
# The tests' own database: SQLite in var/, or the PostgreSQL that PANEL_TEST_DATABASE_URL names
# (make test's second run). A DATABASE_URL the user exported for their panel is never used.
os.environ["DATABASE_URL"] = os.environ.get("PANEL_TEST_DATABASE_URL") or f"sqlite:///{_base / 'var' / f'{_name}-db.sqlite3'}"

from .base import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Each test starts with a fresh database; an anchor left by another test would not match it.
AUDIT_ANCHOR_FILE = None
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"{_name}-db.sqlite3")}  # noqa: F405
# The rate-limit counters in local memory: the fast tier runs without Redis. The test of two
# workers sharing them (tests/api/test_throttling.py) points this at the tests' Redis.
CACHES["api_throttle"] = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "api-throttle"}  # noqa: F405
