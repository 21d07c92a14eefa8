"""The README's dashboard screenshot shows the dashboard as it is (issue 14, item 24).

The browser test draws a dashboard with what a user has after a while (running sandboxes with
their usage sparklines, one with backups, one stopped, one held by an incident) and saves it in
var/screenshots/; with UPDATE_README_SCREENSHOTS=1 it also replaces docs/screenshot.png. The fast
test fails once the dashboard's templates change after the screenshot was last committed, so the
README cannot fall behind again unnoticed."""

import os
import shutil
import subprocess

import pytest

from backups import services as backups
from incidents import services as incidents
from sandboxes import services
from tests.browser.test_dashboard import browser_page  # noqa: F401 - the fixture
from tests.browser.test_live_views import sign_in
from tests.support.docker import docker_cli
from tests.support.paths import ROOT

README_SHOT = ROOT / "docs" / "screenshot.png"
# What the dashboard is drawn from: a change to any of them calls for a new screenshot.
DASHBOARD = ["templates/sandboxes/dashboard.html", "templates/sandboxes/_rows.html", "templates/sandboxes/_status.html"]
ACTOR = services.SystemActor("test")


def committed_at(*paths: str) -> int:
    """When the newest commit that touched `paths` was made (seconds since the epoch)."""
    out = subprocess.run(["git", "log", "-1", "--format=%ct", "--", *paths], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip(), f"git knows no commit of {paths}: run the tests in a clone of the repository"
    return int(out.stdout)


def test_the_readme_screenshot_is_newer_than_the_dashboard_it_shows():
    assert committed_at("docs/screenshot.png") >= committed_at(*DASHBOARD), (
        "The dashboard changed after docs/screenshot.png was taken: run "
        "`UPDATE_README_SCREENSHOTS=1 make test ARGS=tests/browser/test_readme_screenshots.py` and commit it."
    )


@pytest.mark.browser
@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_the_dashboard_as_a_user_sees_it(browser_page, panel_server, admin_user, make_sandbox, clean_docker):  # noqa: F811
    page = browser_page
    busy = make_sandbox("api-server")
    docker_cli("exec", "-d", busy.container_id, "sh", "-c", "while :; do :; done")
    backed_up = make_sandbox("docs-site")
    backup = backups.backup_request(actor=ACTOR, sandbox=backed_up, enqueue=False)
    backups.backup_perform(backup_id=backup.pk)
    stopped = make_sandbox("experiment")
    services.sandbox_request_action(actor=ACTOR, sandbox=stopped, action="stop", enqueue=False)
    services.sandbox_perform(sandbox_id=stopped.pk, action="stop")
    held = make_sandbox("untrusted-pr")
    incidents.incident_declare(actor=admin_user, sandbox=held, severity="high", summary="Unexpected outbound connections")

    sign_in(page, panel_server)
    page.wait_for_selector('tr[data-name="untrusted-pr"][data-status="paused"]', timeout=30_000)
    page.wait_for_function(f"(document.querySelector('td[data-usage=\"{busy.pk}\"]') || {{}}).dataset?.cpu > 0", timeout=20_000)
    page.wait_for_timeout(10_000)  # some seconds of sparkline
    shot = ROOT / "var" / "screenshots" / "readme-dashboard.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    text = page.inner_text("main")
    assert all(name in text for name in ("api-server", "docs-site", "experiment", "untrusted-pr"))
    assert page.locator("input[type=search]").count() == 1
    if os.environ.get("UPDATE_README_SCREENSHOTS") == "1":
        shutil.copyfile(shot, README_SHOT)
