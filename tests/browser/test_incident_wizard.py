"""In headless Chromium, with the real worker: the incident wizard on a running sandbox, through
every step, then its report downloaded; the evidence archive's manifest verifies."""

import pytest
from django.conf import settings

from backups import archive
from incidents.models import Incident
from sandboxes.models import Sandbox
from tests.browser.test_dashboard import browser_page  # noqa: F401 - the fixture
from tests.browser.test_live_views import SHOTS, sign_in
from tests.support.docker import docker_cli

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def step_done(page, step: str) -> None:
    page.wait_for_selector(f'#wizard li[data-step="{step}"][data-state="done"]', timeout=60_000)


def test_the_incident_wizard_runs_every_step_and_exports_its_report(
    browser_page,  # noqa: F811
    panel_server,
    admin_user,
    make_sandbox,
    clean_docker,
    tmp_path,
):
    page = browser_page
    sandbox = make_sandbox("wizard")
    docker_cli("exec", sandbox.container_id, "sh", "-c", "echo suspicious > /proc/1/fd/1; touch /tmp/implant")
    sign_in(page, panel_server)
    page.goto(f"{panel_server}/sandboxes/{sandbox.pk}/")

    page.select_option("#incident-severity", "high")
    page.fill("#incident-summary", "It tried to read ~/.aws/credentials")
    page.click("#incident-declare")
    page.wait_for_url(f"{panel_server}/incidents/*/")
    step_done(page, "declare")
    assert docker_cli("inspect", "-f", "{{.State.Status}}", sandbox.container_id).stdout.strip() == "paused"

    page.click("#step-snapshot")
    step_done(page, "snapshot")
    page.wait_for_selector("#evidence-sha256")
    page.click("#step-stop")
    step_done(page, "stop")
    page.check('input[name="reset_mode"][value="clean"]')
    page.click("#step-reset")
    step_done(page, "reset")
    page.fill('input[name="resolution"]', "contained: credentials rotated")
    page.fill('textarea[name="notes"]', "The agent followed a prompt injection in a README.")
    page.click("#step-close")
    page.wait_for_selector('#wizard li[data-step="close"][data-state="done"]', timeout=15_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "incident-timeline.png"), full_page=True)

    incident = Incident.objects.get(sandbox=sandbox)
    assert not incident.is_open and incident.resolution.startswith("contained")
    sandbox.refresh_from_db()
    assert not sandbox.on_hold and sandbox.status == Sandbox.Status.STOPPED and sandbox.container_id == ""
    checked = archive.verify(str(settings.EVIDENCE_ROOT / incident.evidence_file))
    assert checked.ok, checked.problems
    assert checked.sha256 == incident.evidence_sha256
    timeline = page.inner_text("#timeline")
    for words in (
        "Declared (high)",
        "Paused the sandbox",
        "Committed the container",
        "Saved the evidence archive",
        "Stopped the sandbox",
        "Removed the container",
        "Closed",
    ):
        assert words in timeline

    with page.expect_download() as info:
        page.click("#report-md")
    report = tmp_path / "report.md"
    info.value.save_as(report)
    text = report.read_text()
    assert f"# Incident #{incident.pk} on wizard" in text and incident.evidence_sha256 in text
    assert "evidence/logs.txt" in text and "contained: credentials rotated" in text
    docker_cli("rmi", "-f", incident.image_id, check=False)
