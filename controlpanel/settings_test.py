"""Settings for the test suite: the same as production, pointed at throw-away resources.

Test sandboxes carry their own instance label, network, bridge, subnet and Redis database, so
a test run never touches (or reconciles) the sandboxes of a panel running on the same machine.
The variables are set in os.environ so that the Celery worker and the web server the tests
start as subprocesses inherit the same configuration.
"""

import os
from pathlib import Path

_base = Path(__file__).resolve().parent.parent
os.environ.setdefault("PANEL_INSTANCE", "test")
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("WORKSPACE_ROOT", str(_base / "var" / "test-workspaces"))
os.environ.setdefault("SANDBOX_NETWORK", "ccpanel-test")
os.environ.setdefault("SANDBOX_SUBNET", "172.28.9.0/24")
os.environ.setdefault("SANDBOX_BRIDGE", "ccpanel-test0")
os.environ.setdefault("SANDBOX_DEFAULT_IMAGE", "ccpanel/test-busybox:latest")
os.environ.setdefault("SANDBOX_DEFAULT_MEMORY_MB", "256")
os.environ.setdefault("SANDBOX_DEFAULT_CPUS", "1")
os.environ.setdefault("SANDBOX_STOP_TIMEOUT", "3")

from .settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
