"""The tests' image, the docker CLI, and gVisor where a test needs it."""

import os
import subprocess

import pytest

TEST_IMAGE = "ccpanel/test-busybox:latest"


def docker_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The docker CLI, used by tests to act "outside the panel" and to read state back."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def gvisor_or_skip() -> None:
    """Skip unless Docker has runsc registered; under CI=true a missing gVisor fails instead."""
    from sandboxes import engine

    if "runsc" not in engine.engine_for().runtimes():
        if os.environ.get("CI") == "true":
            pytest.fail("gVisor is not registered: the CI set-up (scripts/panel.sh) registers it")
        pytest.skip("gVisor (runsc) is not registered with Docker here: make run PANEL_GVISOR=1 sets it up")
