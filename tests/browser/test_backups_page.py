"""In headless Chromium, with the real worker: "Back up now" shows the backup's progress and
then its row; Verify checks it; a restore into a new sandbox brings the files back."""

import pytest

from backups.models import Backup
from sandboxes.models import Sandbox
from tests.browser.test_dashboard import browser_page  # noqa: F401 - the fixture
from tests.browser.test_live_views import SHOTS, sign_in
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.django_db(transaction=True)]


def test_back_up_verify_and_restore_from_the_pages(browser_page, panel_server, admin_user, make_sandbox, clean_docker):  # noqa: F811
    page = browser_page
    sandbox = make_sandbox("paged")
    (sandbox.workspace_path / "Projects" / "plan.md").write_text("the plan\n")
    sign_in(page, panel_server)
    page.goto(f"{panel_server}/sandboxes/{sandbox.pk}/")
    page.click("#backup-now")
    page.wait_for_selector("#backups tr[id^=backup-] .status-done", timeout=60_000)
    backup = Backup.objects.get(sandbox=sandbox)
    assert backup.status == Backup.Status.DONE
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "backups-card.png"), full_page=True)

    page.click(f"#backup-{backup.pk} a")
    page.click("button:has-text('Verify')")
    wait_for(lambda: Backup.objects.get(pk=backup.pk).verified_at, timeout=30, what="the check")
    page.reload()
    assert "every file matches the manifest" in page.inner_text("dl.facts")

    page.check("input[name=into][value=new]")
    page.fill("input[name=new_name]", "paged-copy")
    page.click("button:has-text('Restore')")
    page.wait_for_url(f"{panel_server}/sandboxes/*/")
    copy = wait_for(
        lambda: (c := Sandbox.objects.filter(name="paged-copy", status="stopped", pending_action="").first()) and c,
        timeout=60,
        what="the restore into a new sandbox",
    )
    assert (copy.workspace_path / "Projects" / "plan.md").read_text() == "the plan\n"
