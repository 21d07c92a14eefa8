"""In headless Chromium: log in, create a sandbox, watch it run without a reload, stop it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from sandboxes.models import Sandbox
from tests.support.docker import docker_cli
from tests.support.paths import ROOT
from tests.support.processes import subprocess_env

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.django_db(transaction=True)]
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOT = ROOT / "var" / "screenshots" / "dashboard.png"


@pytest.fixture
def browser_page():
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes
    # between browser steps are still plain synchronous calls.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    assert Path(CHROMIUM).exists(), "Chromium is required (apt-get install chromium)"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_context(viewport={"width": 1280, "height": 640}).new_page()
        try:
            yield page
        finally:
            browser.close()
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def row(name: str, status: str) -> str:
    return f'tr[data-name="{name}"][data-status="{status}"][data-pending=""]'


def test_create_watch_running_and_stop(browser_page, panel_server, admin_user, clean_docker, test_image):
    page = browser_page
    page.goto(panel_server + "/")
    assert "/login/" in page.url
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-pass-123")
    page.click("button[type=submit]")
    page.wait_for_url(panel_server + "/")

    page.click("text=New sandbox")
    page.fill("#id_name", "browser-box")
    assert page.input_value("#id_image") == test_image
    page.click("button:has-text('Create and start')")
    page.wait_for_url(panel_server + "/")
    page.evaluate("window.__sameDocument = true")  # survives only if the page is never reloaded
    page.wait_for_selector(row("browser-box", "running"), timeout=30_000)
    assert page.evaluate("window.__sameDocument") is True
    sandbox = Sandbox.objects.get(name="browser-box")
    assert json.loads(docker_cli("inspect", sandbox.container_id).stdout)[0]["State"]["Running"] is True
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    page.click('tr[data-name="browser-box"] button:has-text("Stop")')
    page.wait_for_selector(row("browser-box", "stopped"), timeout=30_000)
    sandbox.refresh_from_db()
    assert sandbox.status == "stopped"
    assert json.loads(docker_cli("inspect", sandbox.container_id).stdout)[0]["State"]["Running"] is False
    assert SCREENSHOT.stat().st_size > 10_000


def test_websocket_refuses_anonymous(browser_page, panel_server, db):
    page = browser_page
    page.goto(panel_server + "/login/")
    closed = page.evaluate("""() => new Promise(resolve => {
        const ws = new WebSocket(location.origin.replace('http', 'ws') + '/ws/sandboxes/');
        ws.onclose = e => resolve(e.code);
        ws.onmessage = () => resolve('message');
    })""")
    assert closed != "message"


def test_idle_socket_still_delivers_changes_made_elsewhere(browser_page, panel_server, admin_user, make_sandbox, clean_docker):
    sandbox = make_sandbox("idle-box")
    page = browser_page
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(panel_server + "/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-pass-123")
    page.click("button[type=submit]")
    page.wait_for_selector(row("idle-box", "running"))
    page.evaluate("window.__sameDocument = true")
    detail = page.context.new_page()  # a second tab, on the sandbox's own page
    detail.goto(f"{panel_server}/sandboxes/{sandbox.pk}/")
    detail.wait_for_selector('#sandbox-panel[data-status="running"]')
    page.wait_for_timeout(7_000)  # longer than any Redis socket or blocking-pop timeout
    # Someone else stops it from a shell: the CLI in its own process, no page of ours involved.
    out = subprocess.run(
        [sys.executable, "manage.py", "sandbox", "stop", "idle-box"], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True
    )
    assert "idle-box: stopped" in out.stdout, out.stderr
    page.wait_for_selector(row("idle-box", "stopped"), timeout=10_000)
    assert page.evaluate("window.__sameDocument") is True
    status_sockets = [url for url in sockets if "/ws/sandboxes/" in url]
    assert len(status_sockets) == 1, f"the status websocket was dropped and reopened: {sockets}"
    detail.wait_for_selector('#sandbox-panel[data-status="stopped"]', timeout=10_000)
    assert detail.is_visible('#sandbox-panel button:has-text("Start")')
