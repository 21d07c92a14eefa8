"""A stopped sandbox moves from the first host to the second (issue 16, "a sandbox moved between
hosts with every file's hash unchanged"), end to end on this machine: the panel as in
test_two_hosts.py (its database on the tests' PostgreSQL, its workers on this machine's engine)
and the second host in its network namespace with its own dockerd, pool and host agent.

The move is asked for on the sandbox's page. Its archive is written by this machine's jobs
worker (the first host's queue), carried to the second engine by the panel's jobs queue through
both engines' archive API, checked and restored by the agent there. Every file of the six folders
and the home is hashed through the first engine before and through the second after; its name,
UUID, settings and secret are the same; it starts on the second host; `sandbox.moved` is audited.
A move asked for while it runs is refused and changes nothing."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.hosts import test_two_hosts
from tests.hosts.test_two_hosts import _tail, manage, shell, stop, wait
from tests.support.docker import TEST_IMAGE
from tests.support.paths import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.postgres]
panel = test_two_hosts.panel  # the fixture: the panel's database and environment
ONLY_HERE = f"{TEST_IMAGE.split(':')[0]}:only-first-host"

STATE = """
import json
from sandboxes.models import Move, Sandbox
from audit.models import AuditEvent
box = Sandbox.objects.select_related("host").get(name="NAME")
print(json.dumps({
    "pk": box.pk, "uuid": str(box.uuid), "status": box.status, "pending": box.pending_action, "detail": box.status_detail,
    "host": box.host.name, "container": box.container_id, "memory_mb": box.memory_mb, "cpus": str(box.cpus),
    "network": box.network_mode, "image": box.image, "in_pool": box.in_pool,
    "moves": list(Move.objects.filter(sandbox=box).values("status", "step", "detail", "sha256", "archive")),
    "audit": list(AuditEvent.objects.filter(sandbox_uuid=box.uuid, action__startswith="sandbox.move").values("action", "details")),
}, default=str))
"""

# The move form on the sandbox's page, as an operator's browser posts it (a superuser here).
PAGE_MOVE = """
import json, re
from django.contrib.auth import get_user_model
from django.test import Client
from sandboxes.models import Sandbox
User = get_user_model()
admin = User.objects.filter(username="root").first() or User.objects.create_superuser("root", password="pw-root-123")
client = Client(HTTP_HOST="127.0.0.1")
client.force_login(admin)
box = Sandbox.objects.get(name="NAME")
page = client.get(f"/sandboxes/{box.pk}/").content.decode()
form = page.split('id="move-host"', 1)[1].split("</select>", 1)[0] if 'id="move-host"' in page else ""
offered = re.findall(r'<option value="([^"]+)">', form)
done = client.post(f"/sandboxes/{box.pk}/move/", {"host": "far"}, follow=True)
said = " ".join(re.sub(r"<[^>]+>", "", m) for m in re.findall(r'<li class="(?:error|info)">(.*?)</li>', done.content.decode(), re.S))
print(json.dumps({"offered": offered, "status": done.status_code, "said": said}))
"""

# A backup's Download on the panel, as an operator's browser asks for it (a superuser here).
PAGE_DOWNLOAD = """
import hashlib, json, re
from django.contrib.auth import get_user_model
from django.test import Client
from backups.models import Backup
from sandboxes.models import Sandbox
User = get_user_model()
client = Client(HTTP_HOST="127.0.0.1")
client.force_login(User.objects.get(username="root"))
backup = Backup.objects.filter(sandbox__name="mover", status="done", kind="manual").exclude(created_by_name__startswith="move").latest("pk")
got = client.get(f"/backups/{backup.pk}/download/")
out = {"pk": backup.pk, "file": backup.file_name, "sha256": backup.sha256, "status": got.status_code, "here": backup.path.exists()}
if got.status_code == 200:
    digest = hashlib.sha256()
    for chunk in got.streaming_content:
        digest.update(chunk)
    out["got"] = digest.hexdigest()
    out["disposition"] = got["Content-Disposition"]
else:
    page = client.get(got["Location"]).content.decode()
    out["said"] = " ".join(re.sub(r"<[^>]+>", "", m) for m in re.findall(r'<li class="(?:error|info)">(.*?)</li>', page, re.S))
print(json.dumps(out))
"""

# The same backup through the API, with an operate token of the same user.
API_DOWNLOAD = """
import hashlib, json
from django.contrib.auth import get_user_model
from django.test import Client
from api.services import api_token_create
from backups.models import Backup
root = get_user_model().objects.get(username="root")
token = api_token_create(actor=root, name="move-test", scope="operate", expires_in_days=1).secret
client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Bearer {token}")
backup = Backup.objects.filter(sandbox__name="mover", status="done", kind="manual").exclude(created_by_name__startswith="move").latest("pk")
got = client.get(f"/api/v1/backups/{backup.pk}/download/")
out = {"status": got.status_code, "retry": got.get("Retry-After", "")}
if got.status_code == 200:
    digest = hashlib.sha256()
    for chunk in got.streaming_content:
        digest.update(chunk)
    out["got"] = digest.hexdigest()
else:
    out["said"] = got.json()["detail"]
print(json.dumps(out))
"""

SET_SECRET = """
from teams.permissions import SystemActor
from sandboxes.models import Sandbox
from sandboxes import secrets
secrets.secret_set(actor=SystemActor("test"), sandbox=Sandbox.objects.get(name="mover"), name="MOVE_TOKEN", value="kept-across-hosts")
print("{}")
"""

# Files of every kind in four of the folders and the home (imports/ is read-only inside).
WRITE = r"""
set -e
cd /workspace
echo "plain text" > Projects/readme.txt
mkdir -p Projects/src/deep/er
head -c 700000 /dev/urandom > Projects/src/deep/er/blob.bin
printf 'no newline' > Documentation/notes.md
head -c 65536 /dev/zero > Research/zeros.dat
: > shared/empty
ln -s ../Projects/readme.txt shared/link-to-readme
head -c 123457 /dev/urandom > exports/out.bin
mkdir -p /home/claude/.config/tool
echo '{"k": 1}' > /home/claude/.config/tool/settings.json
head -c 200000 /dev/urandom > /home/claude/cache.bin
"""

# Every regular file's sha256 and every link's target, under the folders and the home.
HASHES = r"""
for top in /workspace /home/claude; do
  find "$top" -type f -exec sha256sum {} + ;
  find "$top" -type l | while read -r l; do echo "link $(readlink "$l") $l"; done
done
"""


def _hashes(docker_exec) -> dict[str, str]:
    done = docker_exec("sh", "-c", HASHES)
    assert done.returncode == 0, done.stderr
    found = {}
    for line in done.stdout.splitlines():
        if line.startswith("link "):
            _, target, path = line.split(" ", 2)
            found[path] = f"-> {target}"
        else:
            digest, path = line.split(None, 1)
            found[path.strip()] = digest
    return found


def test_a_stopped_sandbox_moves_to_the_second_host_with_every_file_intact(second_host, panel, tmp_path):
    h2 = second_host
    made = shell(panel, "from tests.support.join_flow import page_token; page_token('far')")
    assert made["status"] == 200 and made["token"], made
    agent_env = dict(panel)
    agent_env.update(
        PANEL_VAR_DIR=str(tmp_path / "agent-var"),
        PANEL_TEST_DATABASE_URL=panel["PANEL_AGENT_DATABASE_URL"],
        DOCKER_HOST=h2.docker_url,
        DOCKER_LOCAL_SOCKET=str(urlsplit(h2.docker_url).path),
        WORKSPACE_ROOT=str(h2.workspace_root),
        STORAGE_POOL_FILE=str(h2.pool_file),
        BACKUP_ROOT=str(tmp_path / "agent-backups"),  # another machine's: not the panel's folder
        PANEL_TEST_KEEP="WORKSPACE_ROOT,STORAGE_POOL_FILE,BACKUP_ROOT",
    )
    for key in ("PANEL_AGENT_REDIS_URL", "PANEL_AGENT_DATABASE_URL", "HOSTS_TLS_DIR"):
        agent_env.pop(key)
    joined = h2.run(
        sys.executable, "manage.py", "host", "join", made["token"], "--panel-url", h2.docker_tls_url, env=agent_env, timeout=120
    )
    assert joined.returncode == 0, joined.stdout + joined.stderr

    logs = tmp_path / "logs"
    logs.mkdir()
    agent = panel_worker = None
    try:
        agent = h2.popen(
            [sys.executable, "manage.py", "host", "agent"],
            cwd=ROOT,
            env=agent_env,
            stdout=open(logs / "agent.log", "w"),  # noqa: SIM115 - the child keeps it
            stderr=subprocess.STDOUT,
        )
        # The panel machine's workers, in one process: the default queue, "local"'s queues, and the
        # panel's own jobs queue (where a move's transfer runs).
        queues = ",".join(manage(panel, "host", "queues", role).stdout.strip() for role in ("lifecycle", "jobs"))
        assert "host-far" not in queues and "host-local-jobs" in queues, queues
        panel_worker = subprocess.Popen(
            [str(ROOT / ".venv/bin/celery"), "-A", "controlpanel", "worker", "-l", "INFO", "-c", "2", "-n", "panel@%h", "-Q", queues],
            cwd=ROOT,
            env=panel,
            stdout=open(logs / "panel-worker.log", "w"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        wait(
            lambda: shell(
                panel, "from hosts.models import Host; import json; print(json.dumps(Host.objects.get(name='far').engine_version))"
            ),
            timeout=90,
            what="the agent's heartbeat:\n" + _tail(logs / "agent.log"),
        )

        def logs_now() -> str:
            return f"\n--- agent\n{_tail(logs / 'agent.log', 80)}\n--- panel worker\n{_tail(logs / 'panel-worker.log', 80)}"

        # A sandbox on the first host with a secret, files in its folders and home.
        done = manage(panel, "sandbox", "create", "mover", "--team", "default", "--host", "local", "--memory-mb", "256", "--cpus", "1")
        assert done.returncode == 0, done.stdout + done.stderr
        shell(panel, SET_SECRET)

        def state(name: str = "mover") -> dict:
            return shell(panel, STATE.replace("NAME", name))

        def page_move(name: str = "mover") -> dict:
            return shell(panel, PAGE_MOVE.replace("NAME", name))

        def settled(status: str, name: str = "mover"):
            def check():
                s = state(name)
                assert s["status"] != "error", f"{s}{logs_now()}"
                return s if s["status"] == status and not s["pending"] else None

            return check

        before = wait(settled("running"), timeout=180, what="mover running")
        assert before["host"] == "local"
        first = before["container"]

        def on_first(*cmd: str) -> subprocess.CompletedProcess:
            return subprocess.run(["docker", "exec", "-u", "1000:1000", first, *cmd], capture_output=True, text=True, timeout=60)

        wrote = on_first("sh", "-c", WRITE)
        assert wrote.returncode == 0, wrote.stderr
        hashes = _hashes(on_first)
        assert len([p for p in hashes if p.startswith("/workspace/")]) >= 6 and "/home/claude/cache.bin" in hashes, hashes
        assert hashes["/workspace/shared/link-to-readme"] == "-> ../Projects/readme.txt"

        # Running: the move is refused on the page, and nothing changes.
        refused = page_move()
        assert refused["offered"] == ["far"], refused
        assert "only a stopped sandbox moves" in refused["said"], refused
        after_refusal = state()
        assert after_refusal["host"] == "local" and after_refusal["status"] == "running" and not after_refusal["pending"]
        assert after_refusal["moves"] == [] and after_refusal["audit"] == []
        assert on_first("true").returncode == 0  # its container still runs there

        # A move that fails on the way (the second host lacks its image: a tag only this engine
        # has) leaves the sandbox whole on the first host: its container, files and place there.
        assert subprocess.run(["docker", "tag", TEST_IMAGE, ONLY_HERE], capture_output=True).returncode == 0
        done = manage(panel, "sandbox", "create", "stayer", "--team", "default", "--host", "local", "--image", ONLY_HERE)
        assert done.returncode == 0, done.stdout + done.stderr
        stayer = wait(settled("running", "stayer"), timeout=180, what="stayer running")["container"]

        def on_stayer(*cmd: str) -> subprocess.CompletedProcess:
            return subprocess.run(["docker", "exec", "-u", "1000:1000", stayer, *cmd], capture_output=True, text=True, timeout=60)

        assert on_stayer("sh", "-c", WRITE).returncode == 0
        stayer_hashes = _hashes(on_stayer)
        assert manage(panel, "sandbox", "stop", "stayer").returncode == 0
        wait(settled("stopped", "stayer"), timeout=60, what="stayer stopped")
        assert "is moving to host far" in page_move("stayer")["said"]
        failed = wait(
            lambda: (s := state("stayer"))["moves"] and s["moves"][0]["step"] == "ended" and not s["pending"] and s,
            timeout=180,
            what="the failed move ended",
        )
        assert failed["moves"][0]["status"] == "failed" and "has no image" in failed["moves"][0]["detail"], failed
        assert failed["host"] == "local" and failed["status"] == "stopped" and failed["container"] == stayer
        assert "has no image" in failed["detail"]
        assert sorted(e["action"] for e in failed["audit"]) == ["sandbox.move_failed", "sandbox.move_requested"]
        assert "stayer" not in h2.docker("volume", "ls", "-q").stdout  # nothing of it on the second host
        assert "-stayer-move-" not in subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True).stdout
        assert manage(panel, "sandbox", "start", "stayer").returncode == 0
        stayer = wait(settled("running", "stayer"), timeout=120, what="stayer running again")["container"]
        assert _hashes(on_stayer) == stayer_hashes

        # Stopped, then moved from its page.
        assert manage(panel, "sandbox", "stop", "mover").returncode == 0
        wait(settled("stopped"), timeout=60, what="mover stopped")
        asked = page_move()
        assert "is moving to host far" in asked["said"], asked

        def moved():
            s = state()
            assert not any(m["status"] == "failed" for m in s["moves"]), f"{s}{logs_now()}"
            return s if s["moves"] and s["moves"][0]["step"] == "ended" and not s["pending"] else None

        after = wait(moved, timeout=240, what="the move ended")
        assert after["moves"][0]["status"] == "done", after
        assert after["host"] == "far" and after["status"] == "stopped" and after["container"] == ""
        assert after["moves"][0]["sha256"] and len(after["moves"][0]["sha256"]) == 64
        # Its identity: the same row, UUID, name and settings.
        for key in ("pk", "uuid", "memory_mb", "cpus", "network", "image"):
            assert after[key] == before[key], key
        events = {e["action"]: e["details"] for e in after["audit"]}
        assert events["sandbox.move_requested"]["from"] == "local" and events["sandbox.move_requested"]["to"] == "far"
        assert events["sandbox.moved"]["from"] == "local" and events["sandbox.moved"]["to"] == "far"
        assert events["sandbox.moved"]["sha256"] == after["moves"][0]["sha256"]

        # The first host let go of it: no container there (its folders go with the clean-up).
        assert subprocess.run(["docker", "inspect", first], capture_output=True).returncode != 0

        # It starts on the second host, with every file as it was and its secret.
        done = manage(panel, "sandbox", "start", "mover")
        assert done.returncode == 0, done.stdout + done.stderr
        running = wait(settled("running"), timeout=180, what="mover running on far")
        assert running["host"] == "far"
        second = running["container"]
        assert subprocess.run(["docker", "inspect", second], capture_output=True).returncode != 0
        mounts = json.loads(h2.docker("inspect", second).stdout)[0]["Mounts"]
        folders = [m for m in mounts if m["Type"] == "bind" and m["Destination"] != "/etc/claude-code/managed-settings.json"]
        assert folders and all(m["Source"].startswith(str(h2.workspace_root)) for m in folders), mounts
        # Its managed settings too were written by the agent, on its own machine.
        [given] = [m for m in mounts if m["Destination"] == "/etc/claude-code/managed-settings.json"]
        assert given["Source"].startswith(str(tmp_path / "agent-var")) and given["RW"] is False, given

        def on_second(*cmd: str) -> subprocess.CompletedProcess:
            return h2.docker("exec", "-u", "1000:1000", second, *cmd, check=False)

        assert _hashes(on_second) == hashes
        assert on_second("sh", "-c", 'echo "$MOVE_TOKEN"').stdout.strip() == "kept-across-hosts"
        # The archive the move made is a backup of it on the second host, where it now is.
        archive = after["moves"][0]["archive"]
        assert (tmp_path / "agent-backups" / archive).is_file()
        # A backup made on the second host, downloaded from the panel (streamed from that host's
        # engine once its agent has made it ready there), byte for byte the file it wrote.
        assert manage(panel, "sandbox", "backup", "mover").returncode == 0
        backups = (
            "import json; from backups.models import Backup; print(json.dumps(list(Backup.objects.filter(sandbox__name='mover', "
            "kind='manual').exclude(created_by_name__startswith='move').values_list('status', 'detail'))))"
        )
        wait(lambda: shell(panel, backups) == [["done", ""]], timeout=120, what=f"the backup on far done{logs_now()}")
        asked = shell(panel, PAGE_DOWNLOAD)
        assert asked["status"] == 302 and not asked["here"] and "is on host far" in asked["said"], asked
        # The API answers as the page does: 202 with Retry-After while its host makes it ready
        # (asked by the page's click just now), then the file.
        by_api = shell(panel, API_DOWNLOAD)
        assert by_api["status"] == 200 or (by_api["status"] == 202 and by_api["retry"] == "5" and "is on host far" in by_api["said"]), (
            by_api
        )
        by_api = wait(lambda: (d := shell(panel, API_DOWNLOAD))["status"] == 200 and d, timeout=60, what=f"the API's download{logs_now()}")
        got = shell(panel, PAGE_DOWNLOAD)
        assert got["status"] == 200, got
        on_far = tmp_path / "agent-backups" / got["file"]
        assert got["got"] == got["sha256"] == by_api["got"] == hashlib.sha256(on_far.read_bytes()).hexdigest()
        assert got["file"] in got["disposition"]
        assert "-download" not in h2.docker("ps", "-a", "--format", "{{.Names}}").stdout  # its helpers went with the stream

        first_root = shell(panel, "import json; from django.conf import settings; print(json.dumps(str(settings.WORKSPACE_ROOT)))")
        wait(
            lambda: not (Path(first_root) / "mover").exists(),
            timeout=60,
            what="the first host's copy removed",
        )
    finally:
        for name in ("mover", "stayer"):
            manage(panel, "sandbox", "destroy", name, "--yes", timeout=60)
        statuses = (
            "import json; from sandboxes.models import Sandbox; print(json.dumps(list(Sandbox.objects.values_list('status', flat=True))))"
        )
        try:
            wait(lambda: all(st == "destroyed" for st in shell(panel, statuses)), timeout=90, what="both destroyed")
        finally:
            subprocess.run(["docker", "rmi", ONLY_HERE], capture_output=True)
            stop(panel_worker)
            stop(agent)
            h2.run(sys.executable, "manage.py", "egress", "remove", env=agent_env, timeout=60)
