"""The second host the tests of many hosts stand on (tests/support/second_host.py), against the
real kernel and engines: its own dockerd in its own network namespace, with its own firewall and
internet; the panel's Redis (TLS and a password) and PostgreSQL reached from inside it."""

import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from django.conf import settings

from tests.support import second_host as h2
from tests.support.docker import TEST_IMAGE, docker_cli

REDIS_PING = """
import sys, redis
try:
    print("ping", redis.Redis.from_url(sys.argv[1], socket_timeout=5, socket_connect_timeout=5).ping())
except Exception as exc:
    print("error", type(exc).__name__, exc)
"""

PANEL_QUEUE = """
import django; django.setup()
from django.conf import settings
from controlpanel.celery import app
with app.connection_for_write() as conn:
    conn.ensure_connection(max_retries=1, timeout=5)
    print(settings.REDIS_URL.split("?")[0].rsplit("/", 1)[1], conn.default_channel.client.ping())
"""

PG_QUERY = """
import sys, psycopg
with psycopg.connect(sys.argv[1], connect_timeout=5) as conn:
    print(*conn.execute("select current_user, current_database(), host(inet_client_addr())").fetchone())
"""


def inside(host: h2.SecondHost, script: str, *args: str) -> str:
    done = host.run(sys.executable, "-c", script, *args, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.docker
def test_a_container_on_the_second_host_reaches_its_internet_and_is_not_on_the_machines_engine(second_host):
    name = f"ccp-h2-{second_host.slot}-smoke"
    second_host.docker("rm", "-f", name, check=False)
    cid = second_host.docker("run", "-d", "--name", name, TEST_IMAGE, "sleep", "120").stdout.strip()
    try:
        pid = second_host.docker("inspect", "-f", "{{.State.Pid}}", name).stdout.strip()
        cgroups = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        assert cgroups and all(line.endswith(f"/ccp-h2-{second_host.slot}/{cid}") for line in cgroups), cgroups
        url = f"http://{second_host.internet}:{second_host.internet_port}/"
        got = second_host.docker("exec", name, "wget", "-qO-", url)
        assert got.stdout == second_host.internet_body
        address = second_host.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name).stdout.strip()
        assert address.startswith(f"10.250.{second_host.slot}."), address  # the second host's own bridge
        assert name in second_host.docker("ps", "--format", "{{.Names}}").stdout.split()
        for ref in (name, cid):
            assert docker_cli("inspect", ref, check=False).returncode != 0  # the machine's engine has no such container
        assert name not in docker_cli("ps", "-a", "--format", "{{.Names}}").stdout.split()
    finally:
        second_host.docker("rm", "-f", name, check=False)


@pytest.mark.docker
def test_the_second_hosts_pool_is_btrfs_with_quotas_and_its_engine_mounts_from_it(second_host):
    from storage import pool

    root = second_host.workspace_root
    found = pool.mounted_at(root)
    assert found is not None and found.fstype == "btrfs" and {"nosuid", "nodev"} <= found.options
    assert pool.quotas_on(root)
    assert found.source != getattr(pool.mounted_at(settings.WORKSPACE_ROOT), "source", None)  # not the first host's pool
    folder = root / "smoke"
    pool.create_subvolume(folder)
    try:
        second_host.docker("run", "--rm", "-u", "0", "-v", f"{folder}:/w", TEST_IMAGE, "sh", "-c", "echo written-on-h2 > /w/f")
        assert (folder / "f").read_text() == "written-on-h2\n"  # dockerd's mount namespace has the pool
        assert pool.is_subvolume(folder)
    finally:
        pool.delete(folder)


@pytest.mark.docker
def test_the_second_engine_is_an_engine_of_its_own(second_host):
    fields = "{{.ID}} {{.DockerRootDir}} {{.Name}} {{.CgroupDriver}}"
    own = second_host.docker("info", "-f", fields).stdout.split()
    machine = docker_cli("info", "-f", fields).stdout.split()
    assert own[0] != machine[0]  # its own engine ID (key.json in its data root)
    assert own[1] == f"/var/lib/ccp-h2-{second_host.slot}" != machine[1]
    # Its containerd is its own, inside the namespace, its state under the second exec root.
    in_namespace = [h2._cmdline(pid) for pid in h2.namespace_pids(second_host.netns)]
    assert any(line.startswith("containerd ") and f"/run/ccp-h2-{second_host.slot}/exec/containerd/" in line for line in in_namespace)
    assert not any("/var/run/docker/containerd" in line for line in in_namespace)


@pytest.mark.docker
def test_the_second_host_has_its_own_firewall_and_the_machines_is_untouched(second_host):
    own = second_host.run("iptables-save").stdout
    masquerade = f"-A POSTROUTING -s 10.250.{second_host.slot}.0/24 ! -o docker0 -j MASQUERADE"
    for line in (":DOCKER-USER", ":DOCKER-ISOLATION-STAGE-1", masquerade):
        assert line in own, own
    root = h2.root_ruleset()
    assert not [line for line in root if any(mark in line for mark in second_host.layout.markers())]
    assert root == second_host.root_rules_before  # the other panels' own rules (ccpanel-*, CCP-*) aside
    # The second host's view of the network is its own: its interfaces, its routes.
    links = second_host.run("ip", "-o", "link").stdout
    assert f"ccph2h{second_host.slot}" in links and "eth0" not in links
    assert second_host.run("ls", "/sys/class/net").stdout.split() == sorted(
        ["lo", "docker0", f"ccph2h{second_host.slot}", f"ccph2u{second_host.slot}"]
    )
    assert second_host.run("ls", "/sys/fs/cgroup/memory").returncode == 0  # the cgroups dockerd uses


@pytest.mark.docker
def test_the_panels_link_is_the_second_hosts_lan_and_its_internet_is_not(second_host):
    """Read by the panel's own code inside the second host: its sandboxes will be kept from the
    panel's Redis and database (the LAN is dropped) and let out to the internet stand-in."""
    script = (
        "import django, ipaddress, json, sys; django.setup();"
        "from sandboxes.network import host;"
        "print(json.dumps([host.lan_subnets(), host.host_addresses()]))"
    )
    done = second_host.run(sys.executable, "-c", script, env=dict(os.environ, DJANGO_SETTINGS_MODULE="controlpanel.settings.test"))
    assert done.returncode == 0, done.stderr
    lans, addresses = json.loads(done.stdout)
    prefix = second_host.layout.prefix
    assert lans == [f"{prefix}.0/26", f"{prefix}.64/26"]
    assert not any(ipaddress.ip_address(second_host.internet) in ipaddress.ip_network(lan) for lan in lans)
    assert second_host.host_address in addresses and second_host.root_address not in addresses


@pytest.mark.docker
def test_redis_answers_inside_the_second_host_only_over_tls_with_the_password(second_host):
    url = second_host.redis_url
    assert url.startswith(f"rediss://:{second_host.redis_password}@{second_host.root_address}:")
    assert inside(second_host, REDIS_PING, url) == "ping True"
    in_netns = ["ip", "netns", "exec", second_host.netns, sys.executable, "-c", REDIS_PING, url]
    assert subprocess.run(in_netns, capture_output=True, text=True).stdout.strip() == "ping True"  # `ip netns exec` alone, too
    no_password = url.replace(f":{second_host.redis_password}@", "")
    assert inside(second_host, REDIS_PING, no_password).startswith("error AuthenticationError")
    wrong = url.replace(second_host.redis_password, "0" * len(second_host.redis_password))
    assert inside(second_host, REDIS_PING, wrong).startswith("error AuthenticationError")
    plain = url.replace("rediss://", "redis://").split("?", 1)[0]
    assert inside(second_host, REDIS_PING, plain).startswith("error ConnectionError")
    unknown_ca = url.split("?", 1)[0] + "?ssl_cert_reqs=required"
    assert "certificate verify failed" in inside(second_host, REDIS_PING, unknown_ca)
    # The panel's own Celery app, given the URL as REDIS_URL (the test settings put the slot's
    # database number in it and keep the query, the CA with it).
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="controlpanel.settings.test", REDIS_URL=url)
    done = second_host.run(sys.executable, "-c", PANEL_QUEUE, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    db = re.search(r"(?:\?db=|/)(\d+)(?:\?|$)", settings.REDIS_URL).group(1)  # this slot's, as here
    assert done.stdout.split() == [db, "True"]


@pytest.mark.docker
@pytest.mark.postgres
def test_postgres_answers_inside_the_second_host_through_the_relay(second_host, postgres_cluster):
    parts = urlsplit(postgres_cluster)
    user, password, dbname = unquote(parts.username or ""), unquote(parts.password or ""), parts.path.lstrip("/")
    url = second_host.database_url_from_inside(dbname, user, password)
    assert f"@{second_host.root_address}:" in url
    assert inside(second_host, PG_QUERY, url) == f"{user} {dbname} 127.0.0.1"  # the relay's end, on loopback
    wrong = second_host.database_url_from_inside(dbname, user, "not-the-password")
    done = second_host.run(sys.executable, "-c", PG_QUERY, wrong)
    assert done.returncode != 0 and "password authentication failed" in done.stderr


@pytest.mark.docker
def test_the_second_engine_stops_and_starts_again_with_its_images(second_host):
    second_host.stop_engine()
    assert second_host.docker("version", check=False, timeout=20).returncode != 0
    assert not second_host.layout.pidfile.exists()
    second_host.start_engine()
    assert TEST_IMAGE in second_host.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert second_host.dockerd_start_s < 30


@pytest.mark.docker
def test_a_crashed_second_host_is_swept_away_when_the_next_one_starts(second_host):
    """What the fixture does at its start, after a run that died: dockerd, its containerd and
    Redis killed outright, a container (and its shim) left running."""
    layout = second_host.layout
    name = f"ccp-h2-{second_host.slot}-crashed"
    second_host.docker("rm", "-f", name, check=False)
    cid = second_host.docker("run", "-d", "--name", name, TEST_IMAGE, "sleep", "600").stdout.strip()
    container_pid = int(second_host.docker("inspect", "-f", "{{.State.Pid}}", cid).stdout)
    old_password = second_host.redis_password
    for pidfile in (layout.pidfile, layout.exec_root / "containerd" / "containerd.pid", layout.run_dir / "redis.pid"):
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
    assert h2.alive(container_pid)

    second_host.up()

    assert not h2.alive(container_pid)
    assert second_host.docker("ps", "-aq").stdout.strip() == ""  # a new data root
    assert second_host.redis_password != old_password
    assert inside(second_host, REDIS_PING, second_host.redis_url) == "ping True"
    assert inside(second_host, "import os; print(os.path.ismount(os.sys.argv[1]))", str(second_host.workspace_root)) == "True"
