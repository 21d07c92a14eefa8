"""In headless Chromium: a sandbox's page shows its output live, runs a terminal, draws its CPU
chart and lists its processes; and hostile output stays text."""

import re

import pytest
from django.utils import timezone

from tests.browser.test_dashboard import browser_page  # noqa: F401 - the fixture
from tests.sandboxes.test_denials_card import flooded  # noqa: F401 - the fixture
from tests.support.docker import docker_cli
from tests.support.paths import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.django_db(transaction=True)]
SHOTS = ROOT / "var" / "screenshots"


def sign_in(page, panel_server):
    page.goto(panel_server + "/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-pass-123")
    page.click("button[type=submit]")
    page.wait_for_url(panel_server + "/")


def sandbox_page(page, panel_server, sandbox, ready: str) -> None:
    """Signed in as the admin, the sandbox's page, once `ready` (a selector) is on it."""
    sign_in(page, panel_server)
    page.goto(f"{panel_server}/sandboxes/{sandbox.pk}/")
    page.wait_for_selector(ready)


def say(sandbox, script: str) -> None:
    docker_cli("exec", sandbox.container_id, "sh", "-c", f"exec >/proc/1/fd/1 2>/proc/1/fd/2; {script}")


def test_output_terminal_chart_and_processes(browser_page, panel_server, admin_user, make_sandbox, clean_docker):  # noqa: F811
    page = browser_page
    sandbox = make_sandbox("watched")
    sandbox_page(page, panel_server, sandbox, "#stats-card")

    say(sandbox, "echo a-line-from-the-sandbox; echo an-error-line >&2")
    page.wait_for_selector("#log div.out:has-text('a-line-from-the-sandbox')", timeout=10_000)
    page.wait_for_selector("#log div.err:has-text('an-error-line')", timeout=10_000)

    page.click("#terminal-open")
    page.wait_for_selector('#terminal-card[data-state="open"]', timeout=10_000)
    page.wait_for_timeout(500)  # the shell's prompt
    page.keyboard.type("echo hel''lo-$((40+2))\n")
    page.wait_for_function("document.querySelector('#terminal .xterm-rows').textContent.includes('hello-42')", timeout=10_000)

    docker_cli("exec", "-d", sandbox.container_id, "sh", "-c", "while :; do :; done & sleep 4242")
    page.wait_for_selector("#processes td.command:has-text('sleep 4242')", timeout=15_000)
    page.wait_for_function("parseInt(document.getElementById('stats-card').dataset.samples || '0') >= 3", timeout=15_000)
    assert page.locator("#chart-cpu canvas").count() >= 1
    assert re.search(r"CPU \d+(\.\d)? %", page.inner_text("#stats-now"))
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "live-sandbox.png"), full_page=True)

    page.click("#terminal-close")
    page.wait_for_selector('#terminal-card[data-state="closed"]', timeout=10_000)
    page.goto(panel_server + "/")
    page.wait_for_function(f"(document.querySelector('td[data-usage=\"{sandbox.pk}\"]') || {{}}).dataset?.cpu > 0", timeout=15_000)
    page.screenshot(path=str(SHOTS / "live-dashboard.png"), full_page=True)


def test_hostile_output_stays_text(browser_page, panel_server, admin_user, make_sandbox, clean_docker):  # noqa: F811
    page = browser_page
    sandbox = make_sandbox("hostile")
    sandbox_page(page, panel_server, sandbox, "#log-card")
    page.wait_for_timeout(1000)  # every request of the page itself is done
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    hostile = [
        "<script>window.__pwned = 1</script>",
        '<img src="/pwned-img" onerror="window.__pwned = 2">',
        '<div hx-get="/pwned-htmx" hx-trigger="load">x</div>',
        'hx-trigger="load" hx-get="/pwned-bare"',
    ]
    say(sandbox, "; ".join(f"printf '%s\\n' '{line}'" for line in hostile))
    for line in hostile:
        page.wait_for_function("(t) => [...document.querySelectorAll('#log div')].some(d => d.textContent === t)", arg=line, timeout=10_000)
    page.wait_for_timeout(1500)
    assert page.evaluate("window.__pwned") is None
    assert not [url for url in requests if "pwned" in url], requests
    assert page.locator("#log img, #log script, #log [hx-get]").count() == 0


def test_the_refused_card_pages_filters_and_groups_and_keeps_its_view_while_it_refreshes(
    browser_page,  # noqa: F811
    panel_server,
    admin_user,
    flooded,  # noqa: F811
):
    from sandboxes.models import EgressDenial

    page = browser_page
    sandbox_page(page, panel_server, flooded, "#denials tbody tr:not(:has(td.empty))")
    assert page.locator("#denials tbody tr:not(:has(td.empty))").count() == 50
    page.click("#denials a:has-text('Older')")
    page.wait_for_selector("#denials .pager:has-text('Page 2 of 4')")
    page.wait_for_timeout(2500)  # a refresh (every 2 s) stays on the page shown
    assert "Page 2 of 4" in page.inner_text("#denials .pager")
    page.fill("#denials-q", "exfil")
    page.wait_for_function("document.querySelectorAll('#denials tbody tr:not(:has(td.empty))').length === 1")
    assert "exfil.example.test" in page.inner_text("#denials")
    EgressDenial.objects.create(sandbox=flooded, at=timezone.now(), name="exfil2.example.test", port=53, protocol="dns")
    page.wait_for_selector("#denials td:has-text('exfil2.example.test')", timeout=5_000)  # refreshed, still filtered
    assert page.locator("#denials tbody tr:not(:has(td.empty))").count() == 2
    page.fill("#denials-q", "")
    page.select_option("#denials-group", "destination")
    page.wait_for_function("document.querySelectorAll('#denials tbody tr:not(:has(td.empty))').length === 4")
    page.wait_for_timeout(2500)
    assert page.locator("#denials tbody tr:not(:has(td.empty))").count() == 4 and "540" in page.inner_text("#denials")
