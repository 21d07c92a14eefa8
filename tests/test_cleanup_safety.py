"""`make test` never touches a user's data: the test settings pick their own resources whatever
the environment says, and the clean-up refuses anything that is not the tests' own."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cleanup import UnsafeCleanup, remove_test_resources
from tests.support.paths import ROOT


@pytest.fixture
def users_data(tmp_path) -> Path:
    folder = tmp_path / "ClaudeCodeWorkspace"
    (folder / "project").mkdir(parents=True)
    (folder / "project" / "precious.txt").write_text("a user's work\n")
    return folder


@pytest.mark.docker
def test_the_suites_clean_up_leaves_an_exported_workspace_alone(users_data, docker_engine):
    env = dict(
        os.environ,
        WORKSPACE_ROOT=str(users_data),
        PANEL_INSTANCE="default",
        SANDBOX_MOUNT_ROOTS=str(users_data),
        DJANGO_SETTINGS_MODULE="controlpanel.settings.test",
    )
    code = (
        "import django; django.setup(); from django.conf import settings as s; "
        "from tests.support.cleanup import remove_own_test_resources; remove_own_test_resources(); "
        "print(s.WORKSPACE_ROOT, s.PANEL_INSTANCE, s.SANDBOX_MOUNT_ROOTS[0])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    root, instance, mount_root = out.stdout.split()
    slot = os.environ.get("PANEL_TEST_SLOT", "").strip()  # a second run's, shared by the subprocess
    assert instance == f"test{slot}"
    assert Path(root) == ROOT / "var" / f"{instance}-workspaces"
    assert mount_root == f"/srv/ccpanel-{instance}-mounts"
    assert (users_data / "project" / "precious.txt").read_text() == "a user's work\n"


@pytest.mark.parametrize(
    "instance, root, mounts, reason",
    [
        ("default", "{var}/test-workspaces", [], "not a test instance"),
        ("test", "{data}", [], "is not inside"),
        ("test", "{var}", [], "is not inside"),
        ("test", "{var}/test-workspaces", ["{data}"], "not one of the tests' own"),
    ],
)
def test_the_clean_up_refuses_what_is_not_the_tests_own(users_data, instance, root, mounts, reason):
    fill = {"var": ROOT / "var", "data": users_data}
    with pytest.raises(UnsafeCleanup, match=reason):
        remove_test_resources(
            instance=instance, workspace_root=Path(root.format(**fill)), mount_roots=[Path(m.format(**fill)) for m in mounts]
        )
    assert (users_data / "project" / "precious.txt").exists()
