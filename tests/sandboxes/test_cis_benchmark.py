"""docker-bench-security (Docker's script for the CIS Docker Benchmark, vendored in
third_party/) against a running default sandbox and the default image: its container-image and
container-runtime sections report no WARN except those this host makes inapplicable."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.django_db]
IMAGE = "ccpanel/claude-code:latest"
BENCH = ROOT / "third_party" / "docker-bench-security"


def inapplicable() -> dict[str, str]:
    """The WARNs this host makes inapplicable, with the reason (named in the README too)."""
    allowed = {}
    apparmor = Path("/sys/module/apparmor/parameters/enabled")
    if not (apparmor.exists() and apparmor.read_text().strip() == "Y"):
        allowed["5.2"] = "the kernel has no AppArmor, so no profile can be applied"
    if os.environ.get("DOCKER_CONTENT_TRUST") != "1":
        allowed["4.5"] = "content trust needs a registry with signed images; images here are built locally"
    return allowed


def test_the_default_sandbox_passes_the_cis_container_checks(make_sandbox, clean_docker, tmp_path):
    sandbox = make_sandbox("cis", image=IMAGE, memory_mb=1024)
    assert sandbox.status == "running", sandbox.status_detail
    work = tmp_path / "bench"
    shutil.copytree(BENCH, work)
    done = subprocess.run(
        [
            "sh",
            "docker-bench-security.sh",
            "-c",
            "container_images,container_runtime",
            "-i",
            f"{sandbox.container_name},{IMAGE}",
            "-l",
            str(tmp_path / "log"),
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)
    assert "5.13 - Ensure that the container's root filesystem is mounted as read only" in out, out[-2000:]
    warned = {m.group(1) for m in re.finditer(r"^\[WARN\] (\d+\.\d+) ", out, re.MULTILINE)}
    assert warned <= set(inapplicable()), f"unexpected WARNs {sorted(warned - set(inapplicable()))}:\n{out}"
    passed = {m.group(1) for m in re.finditer(r"^\[PASS\] (\d+\.\d+) ", out, re.MULTILINE)}
    assert {"4.1", "4.6", "5.4", "5.5", "5.10", "5.11", "5.13", "5.19", "5.26", "5.27", "5.29", "5.32"} <= passed
