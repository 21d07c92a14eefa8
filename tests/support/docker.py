"""The tests' image and the docker CLI."""

import subprocess

TEST_IMAGE = "ccpanel/test-busybox:latest"


def docker_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The docker CLI, used by tests to act "outside the panel" and to read state back."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)
