"""A second host on this machine, for the tests of many hosts (issue 16).

    root namespace                 ccp-h2-<slot> (the second host)          ccp-h2-<slot>-inet
    ccph2r<slot> 198.19.N.1/26 ─── ccph2h<slot> 198.19.N.2/26
      Redis (TLS, password)        ccph2u<slot> 198.19.N.65/26 ─────────── ccph2w<slot> 198.19.N.66/26
      PostgreSQL relay             dockerd, its containerd, docker0          198.19.N.130/32 on lo,
      (N = 100 + slot)             default route via .66 (its internet)     a listener on :18080

The second host is a network namespace with its own dockerd (socket, data root, exec root, pid
file, managed containerd, cgroup parent, bridge and, being in its own namespace, its own
iptables), a btrfs storage pool of its own, and two ways back to the panel: a Redis with TLS and
a password on the root side of its veth, and a relay to the tests' PostgreSQL there. Its own
"internet" is a third namespace behind it, so its sandboxes reach the internet without any rule
in the root namespace (whose FORWARD chain Docker keeps at DROP).

Addresses: 198.19.<100+slot>.0/24, one /24 for everything of a slot. 198.18.<100+slot> is the
network tests' internet (tests/sandboxes/network/helpers.py), 198.19.<slot>.1 is a host address
of test_allowlist_views.py, 198.19.200.0/24 its pretend LAN; slots run to 99.

The listener's address is on neither veth's subnet on purpose: the panel counts the subnets of
the interfaces that carry a default route as the host's LAN and drops sandbox traffic to them
(sandboxes.network.host.lan_subnets). For the same reason the second host has a second default
route, metric 1000, via the panel's side: the panel's link is its LAN, as it would be for a real
machine, so its sandboxes may not reach the panel's Redis and database.

Everything carries the slot in its name, and `teardown(slot)` removes it all; the fixture runs it
before it starts (a crashed earlier run's leftovers) and after, whatever the outcome. From a
shell: `.venv/bin/python tests/support/second_host.py clean <slot>`.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from tests.support.relay import Relay

ROOT = Path(__file__).resolve().parents[2]
ENTER = Path(__file__).with_name("second_host_enter.sh")
INTERNET_PORT = 18080
INTERNET_BODY = "second-host-internet"
POSTGRES_PORT = int(os.environ.get("PANEL_TEST_PG_PORT", "54329"))  # scripts/postgres.sh's cluster
POOL_MB = 1024
TEST_IMAGE = "ccpanel/test-busybox:latest"

LISTENER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
body = sys.argv[3].encode()
while True:
    c, _ = s.accept()
    try:
        c.settimeout(2); c.recv(4096)
        c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
    except OSError:
        pass
    c.close()
"""


DOCKER_TLS_PORT = 2376


class SecondHostError(Exception):
    """The second host could not be set up; the message says what failed and shows its output."""


@dataclass(frozen=True)
class Layout:
    """Every name and address of one slot's second host, computed, nothing made."""

    slot: int

    def __post_init__(self):
        if not 0 <= self.slot <= 99:
            raise SecondHostError(f"slot {self.slot} is not from 0 to 99")

    # --- network ---
    @property
    def netns(self) -> str:
        return f"ccp-h2-{self.slot}"

    @property
    def internet_netns(self) -> str:
        return f"ccp-h2-{self.slot}-inet"

    @property
    def veth_root(self) -> str:  # the root namespace's end of the panel link
        return f"ccph2r{self.slot}"

    @property
    def veth_host(self) -> str:  # the second host's end of it
        return f"ccph2h{self.slot}"

    @property
    def veth_uplink(self) -> str:  # the second host's end toward its internet
        return f"ccph2u{self.slot}"

    @property
    def veth_internet(self) -> str:  # the internet namespace's end
        return f"ccph2w{self.slot}"

    @property
    def prefix(self) -> str:
        return f"198.19.{100 + self.slot}"

    @property
    def root_address(self) -> str:
        return f"{self.prefix}.1"

    @property
    def host_address(self) -> str:
        return f"{self.prefix}.2"

    @property
    def uplink_address(self) -> str:
        return f"{self.prefix}.65"

    @property
    def gateway_address(self) -> str:
        return f"{self.prefix}.66"

    @property
    def internet_address(self) -> str:
        return f"{self.prefix}.130"

    @property
    def redis_port(self) -> int:
        return 16300 + self.slot

    @property
    def postgres_port(self) -> int:
        return 15400 + self.slot

    # --- the engine ---
    @property
    def run_dir(self) -> Path:
        return Path(f"/run/ccp-h2-{self.slot}")

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def docker_url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "docker.pid"

    @property
    def exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def data_root(self) -> Path:
        return Path(f"/var/lib/ccp-h2-{self.slot}")

    @property
    def cgroup_parent(self) -> str:
        return f"ccp-h2-{self.slot}"

    @property
    def bip(self) -> str:
        return f"10.250.{self.slot}.1/24"

    @property
    def address_pool(self) -> str:
        return f"base=10.251.{self.slot}.0/24,size=28"

    @property
    def tls_dir(self) -> Path:
        return self.run_dir / "tls"

    @property
    def docker_tls_url(self) -> str:
        """The engine's TCP endpoint on the panel's link, TLS with client certificates only."""
        return f"tcp://{self.host_address}:{DOCKER_TLS_PORT}"

    # --- storage and logs ---
    @property
    def workspace_root(self) -> Path:
        return ROOT / "var" / f"ccp-h2-{self.slot}-workspaces"

    @property
    def pool_file(self) -> Path:
        return ROOT / "var" / f"ccp-h2-{self.slot}-pool.btrfs"

    @property
    def log_dir(self) -> Path:
        return ROOT / "var" / "log"

    @property
    def dockerd_log(self) -> Path:
        return self.log_dir / f"ccp-h2-{self.slot}-dockerd.log"

    @property
    def redis_log(self) -> Path:
        return self.log_dir / f"ccp-h2-{self.slot}-redis.log"

    def markers(self) -> tuple[str, ...]:
        """Strings that name something of this second host, wherever they appear."""
        return (
            f"ccp-h2-{self.slot}",
            f"ccph2r{self.slot}",
            f"ccph2h{self.slot}",
            f"{self.prefix}.",
            f"10.250.{self.slot}.",
            f"10.251.{self.slot}.",
        )


# --- running commands ------------------------------------------------------------------------------


def sh(*cmd: str, stdin: str | None = None, timeout: float = 120) -> str:
    """Run a command; fail with what it printed."""
    done = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise SecondHostError(f"{' '.join(cmd)} failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
    return done.stdout


def quiet(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a command whose failure is expected (removing what may not be there)."""
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def wait_until(predicate: Callable[[], object], *, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SecondHostError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def enter_command(layout: Layout, cmd: Sequence[str]) -> list[str]:
    """`cmd` as a process of the second host (second_host_enter.sh says what that means)."""
    return [str(ENTER), layout.netns, str(layout.workspace_root), "--", *cmd]


# --- processes -------------------------------------------------------------------------------------


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie does not)."""
    return os.path.exists(f"/proc/{pid}") and _state(pid) != "Z"


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def stop_pids(pids: Sequence[int], *, grace: float) -> None:
    """SIGTERM these processes, SIGKILL those still there after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not any(alive(p) for p in pids):
            return


def _pid_from(path: Path, *marks: str) -> int | None:
    """The pid a pid file names, if that process's command line still has every one of `marks`
    (a reused pid is left alone)."""
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    line = _cmdline(pid)
    return pid if all(m in line for m in marks) else None


def namespace_pids(netns: str) -> list[int]:
    done = quiet("ip", "netns", "pids", netns)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


def cgroup_dirs(parent: str) -> list[Path]:
    """The folders of the cgroup parent `parent` in every hierarchy (v1 controllers, v2). A
    relative parent lies under the cgroup dockerd was started in, which need not be the root:
    here the memory controller puts the processes a session starts in a cgroup of its own
    (memory:/process_api/<id>), so it is looked for up to two levels down."""
    base = Path("/sys/fs/cgroup")
    if not base.is_dir():
        return []
    found = {d for pattern in (parent, f"*/{parent}", f"*/*/{parent}", f"*/*/*/{parent}") for d in base.glob(pattern) if d.is_dir()}
    return sorted(found)


def cgroup_pids(parent: str) -> list[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(parent):
        for procs in top.rglob("cgroup.procs"):
            try:
                pids.update(int(p) for p in procs.read_text().split())
            except OSError:
                pass
    return sorted(pids)


def _remove_cgroups(parent: str) -> None:
    for top in cgroup_dirs(parent):
        for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()
            except OSError:
                pass
        try:
            top.rmdir()
        except OSError:
            pass


# --- the network -----------------------------------------------------------------------------------


def _network_up(layout: Layout) -> None:
    ns, inet = layout.netns, layout.internet_netns
    sh("ip", "netns", "add", ns)
    sh("ip", "netns", "add", inet)
    sh("ip", "link", "add", layout.veth_root, "type", "veth", "peer", "name", layout.veth_host, "netns", ns)
    sh("ip", "addr", "add", f"{layout.root_address}/26", "dev", layout.veth_root)
    sh("ip", "link", "set", layout.veth_root, "up")
    sh("ip", "-n", ns, "link", "add", layout.veth_uplink, "type", "veth", "peer", "name", layout.veth_internet, "netns", inet)
    batch_h2 = "\n".join(
        [
            "link set lo up",
            f"addr add {layout.host_address}/26 dev {layout.veth_host}",
            f"link set {layout.veth_host} up",
            f"addr add {layout.uplink_address}/26 dev {layout.veth_uplink}",
            f"link set {layout.veth_uplink} up",
            f"route add default via {layout.gateway_address} dev {layout.veth_uplink}",
            # The panel's link is this host's LAN too (see the module's docstring).
            f"route add default via {layout.root_address} dev {layout.veth_host} metric 1000",
        ]
    )
    sh("ip", "-n", ns, "-batch", "-", stdin=batch_h2 + "\n")
    batch_inet = "\n".join(
        [
            "link set lo up",
            f"addr add {layout.internet_address}/32 dev lo",
            f"addr add {layout.gateway_address}/26 dev {layout.veth_internet}",
            f"link set {layout.veth_internet} up",
        ]
    )
    sh("ip", "-n", inet, "-batch", "-", stdin=batch_inet + "\n")
    # A new namespace inherits the root's ip_forward (1, Docker's): the internet forwards nothing.
    sh("ip", "netns", "exec", inet, "sysctl", "-qw", "net.ipv4.ip_forward=0")


def _listening(netns: str | None, address: str, port: int) -> bool:
    cmd = ["ss", "-Hltn", "src", f"{address}:{port}"]
    out = quiet(*(["ip", "netns", "exec", netns, *cmd] if netns else cmd)).stdout
    return f"{address}:{port}" in out


def _start_listener(layout: Layout) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            layout.internet_netns,
            sys.executable,
            "-c",
            LISTENER,
            layout.internet_address,
            str(INTERNET_PORT),
            INTERNET_BODY,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until(
        lambda: _listening(layout.internet_netns, layout.internet_address, INTERNET_PORT), timeout=10, what="the internet's listener"
    )
    return proc


# --- Redis with TLS and a password ---------------------------------------------------------------


def _make_tls(layout: Layout) -> None:
    """A CA of the test's own and a server certificate it signed for the panel's address."""
    d = layout.tls_dir
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=ccp-h2-{layout.slot} test CA",
       "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))  # fmt: skip
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={layout.root_address}",
       "-keyout", str(d / "redis.key"), "-out", str(d / "redis.csr"))  # fmt: skip
    (d / "redis.ext").write_text(f"subjectAltName=IP:{layout.root_address}\nextendedKeyUsage=serverAuth\n")
    sh("openssl", "x509", "-req", "-in", str(d / "redis.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
       "-CAcreateserial", "-days", "2", "-extfile", str(d / "redis.ext"), "-out", str(d / "redis.crt"))  # fmt: skip
    # The engine's TCP endpoint (--tlsverify), and the panel's client certificate for it: how the
    # panel's pages and websockets reach a host on another machine (sandboxes.engine.client).
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={layout.host_address}",
       "-keyout", str(d / "docker.key"), "-out", str(d / "docker.csr"))  # fmt: skip
    (d / "docker.ext").write_text(f"subjectAltName=IP:{layout.host_address}\nextendedKeyUsage=serverAuth\n")
    sh("openssl", "x509", "-req", "-in", str(d / "docker.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
       "-CAcreateserial", "-days", "2", "-extfile", str(d / "docker.ext"), "-out", str(d / "docker.crt"))  # fmt: skip
    client = d / "panel-client"
    client.mkdir(mode=0o700, exist_ok=True)
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=ccpanel",
       "-keyout", str(client / "key.pem"), "-out", str(d / "client.csr"))  # fmt: skip
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    sh("openssl", "x509", "-req", "-in", str(d / "client.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
       "-CAcreateserial", "-days", "2", "-extfile", str(d / "client.ext"), "-out", str(client / "cert.pem"))  # fmt: skip
    (client / "ca.pem").write_bytes((d / "ca.crt").read_bytes())
    (client / "key.pem").chmod(0o600)
    (d / "ca.crt").chmod(0o644)


def _start_redis(layout: Layout, password: str) -> subprocess.Popen:
    d = layout.tls_dir
    conf = d / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                f"bind {layout.root_address}",
                "port 0",
                f"tls-port {layout.redis_port}",
                f"tls-cert-file {d / 'redis.crt'}",
                f"tls-key-file {d / 'redis.key'}",
                f"tls-ca-cert-file {d / 'ca.crt'}",
                "tls-auth-clients no",  # the password authenticates clients; TLS keeps it secret
                f"requirepass {password}",
                'save ""',
                "appendonly no",
                f"dir {d}",
                f"pidfile {layout.run_dir / 'redis.pid'}",
                f"logfile {layout.redis_log}",
            ]
        )
        + "\n"
    )
    conf.chmod(0o600)
    proc = subprocess.Popen(["redis-server", str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        if proc.poll() is not None:
            raise SecondHostError(f"redis-server exited ({proc.returncode}): {_tail(layout.redis_log)}")
        return _listening(None, layout.root_address, layout.redis_port)

    wait_until(up, timeout=15, what="redis-server")
    return proc


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no {path})"


# --- the storage pool ----------------------------------------------------------------------------


def _mount_pool(layout: Layout) -> str:
    """The second host's pool, made and mounted as the panel makes its own (storage.pool), with
    this host's names: a host agent given the same WORKSPACE_ROOT and STORAGE_POOL_FILE finds it
    mounted and only checks it."""
    from django.test import override_settings

    from storage import pool

    with override_settings(
        STORAGE_POOL="loop", WORKSPACE_ROOT=layout.workspace_root, STORAGE_POOL_FILE=layout.pool_file, STORAGE_POOL_SIZE_MB=POOL_MB
    ):
        said = pool.ensure()
        if not pool.active():
            raise SecondHostError(f"the second host's pool is not mounted: {said}")
    return said


def _unmount_pool(layout: Layout) -> None:
    root = str(layout.workspace_root)
    for _ in range(5):  # stacked mounts, one by one
        if quiet("findmnt", "-n", "--mountpoint", root).returncode != 0:
            break
        if quiet("umount", root).returncode != 0:
            quiet("umount", "-l", root)
    for line in quiet("losetup", "-n", "-O", "NAME", "-j", str(layout.pool_file)).stdout.split():
        quiet("losetup", "-d", line)
    layout.pool_file.unlink(missing_ok=True)
    layout.pool_file.with_name(layout.pool_file.name + ".new").unlink(missing_ok=True)
    if layout.workspace_root.exists():
        quiet("rm", "-rf", "--one-file-system", root)


# --- dockerd -------------------------------------------------------------------------------------


def _daemon_config(layout: Layout) -> Path:
    """A daemon.json of its own (dockerd would read /etc/docker/daemon.json, whose settings could
    clash with the flags), with the machine's runtimes (gVisor's runsc, where registered)."""
    import json

    config: dict = {"deprecated-key-path": str(layout.data_root / "key.json")}  # an engine ID of its own
    try:
        runtimes = json.loads(Path("/etc/docker/daemon.json").read_text() or "{}").get("runtimes")
    except (OSError, ValueError):
        runtimes = None
    if runtimes:
        config["runtimes"] = runtimes
    path = layout.run_dir / "daemon.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def dockerd_command(layout: Layout) -> list[str]:
    return [
        "dockerd",
        f"--config-file={_daemon_config(layout)}",
        f"--host={layout.docker_url}",
        f"--host={layout.docker_tls_url}",
        "--tlsverify",
        f"--tlscacert={layout.tls_dir / 'ca.crt'}",
        f"--tlscert={layout.tls_dir / 'docker.crt'}",
        f"--tlskey={layout.tls_dir / 'docker.key'}",
        f"--data-root={layout.data_root}",
        f"--exec-root={layout.exec_root}",
        f"--pidfile={layout.pidfile}",
        f"--cgroup-parent={layout.cgroup_parent}",
        f"--bip={layout.bip}",
        f"--default-address-pool={layout.address_pool}",
        "--iptables=true",
        "--ip-forward=true",
    ]


def docker(layout: Layout, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    """The docker CLI against the second host's engine."""
    done = subprocess.run(["docker", "-H", layout.docker_url, *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise SecondHostError(f"docker -H {layout.docker_url} {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return done


def _start_dockerd(layout: Layout, *, timeout: float = 60) -> subprocess.Popen:
    layout.data_root.mkdir(mode=0o710, parents=True, exist_ok=True)
    layout.log_dir.mkdir(parents=True, exist_ok=True)
    log = open(layout.dockerd_log, "ab")  # noqa: SIM115 - dockerd keeps it; closed here once it has it
    try:
        log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting the second host's dockerd\n".encode())
        log.flush()
        proc = subprocess.Popen(
            enter_command(layout, dockerd_command(layout)), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    finally:
        log.close()

    def answers() -> bool:
        if proc.poll() is not None:
            raise SecondHostError(f"the second dockerd exited ({proc.returncode})")
        return layout.socket.is_socket() and docker(layout, "version", "-f", "{{.Server.Version}}", check=False, timeout=10).returncode == 0

    try:
        wait_until(answers, timeout=timeout, what="the second dockerd", interval=0.1)
    except SecondHostError as exc:
        raise SecondHostError(f"{exc}\nits log ({layout.dockerd_log}):\n{_tail(layout.dockerd_log)}") from None
    return proc


def load_image(layout: Layout, image: str) -> None:
    """Copy an image from the machine's engine to the second host's (no registry is reachable)."""
    saver = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    loaded = subprocess.run(
        ["docker", "-H", layout.docker_url, "load", "-q"], stdin=saver.stdout, capture_output=True, text=True, timeout=600
    )
    assert saver.stdout is not None
    saver.stdout.close()
    saver_err = saver.stderr.read().decode() if saver.stderr else ""
    if saver.wait() != 0 or loaded.returncode != 0:
        raise SecondHostError(f"copying {image} to the second host failed: {saver_err.strip()} {loaded.stderr.strip()}")


def _stop_dockerd(layout: Layout) -> None:
    """Containers removed through the engine, then dockerd stopped (SIGTERM, then SIGKILL once
    its pid file has not gone in 30 s); its containerd and the shims with it."""
    if layout.socket.is_socket():
        ids = docker(layout, "ps", "-aq", check=False, timeout=30).stdout.split()
        if ids:
            docker(layout, "rm", "-f", *ids, check=False, timeout=120)
    pid = _pid_from(layout.pidfile, "dockerd", f"--pidfile={layout.pidfile}")
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while layout.pidfile.exists() and alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
    # A crashed run's containers still run (their shims keep them): their cgroups find them. Killed
    # outright, as `docker rm -f` does (a container's pid 1 ignores SIGTERM unless it handles it).
    stop_pids(cgroup_pids(layout.cgroup_parent), grace=0)
    # Whatever is left in the namespace (containerd, shims, docker-proxy, a host agent) goes.
    stop_pids(namespace_pids(layout.netns), grace=5)
    _remove_cgroups(layout.cgroup_parent)


# --- the whole host ------------------------------------------------------------------------------


def teardown(slot: int) -> list[str]:
    """Remove everything of this slot's second host, whatever state it is in; returns what could
    not be removed (empty when all went)."""
    layout = Layout(slot)
    _stop_dockerd(layout)
    redis_pid = _pid_from(layout.run_dir / "redis.pid", "redis-server", layout.root_address)
    if redis_pid is not None:
        stop_pids([redis_pid], grace=10)
    for ns in (layout.internet_netns, layout.netns):
        stop_pids(namespace_pids(ns), grace=5)  # the internet's listener, a host agent left over
    for ns in (layout.netns, layout.internet_netns):  # the host first: its backup route leads to the root
        quiet("ip", "netns", "del", ns)
    quiet("ip", "link", "del", layout.veth_root)
    _unmount_pool(layout)
    for folder in (layout.data_root, layout.run_dir):
        if folder.exists():
            quiet("rm", "-rf", "--one-file-system", str(folder))
    return leftovers(layout)


def leftovers(layout: Layout) -> list[str]:
    """What of this slot's second host is still on the machine."""
    left = []
    netns = quiet("ip", "netns", "list").stdout.split()
    left += [f"netns {n}" for n in (layout.netns, layout.internet_netns) if n in netns]
    links = quiet("ip", "-o", "link").stdout
    left += [f"link {v}" for v in (layout.veth_root,) if f" {v}@" in links or f" {v}:" in links]
    mounts = quiet("findmnt", "-rn", "-o", "TARGET").stdout.splitlines()
    left += [f"mount {m}" for m in mounts if f"ccp-h2-{layout.slot}" in m]
    loops = quiet("losetup", "-n", "-O", "NAME", "-j", str(layout.pool_file)).stdout.split()
    left += [f"loop {loop}" for loop in loops]
    for path in (layout.data_root, layout.run_dir, layout.workspace_root, layout.pool_file):
        if path.exists():
            left.append(f"path {path}")
    left += [f"cgroup {c}" for c in cgroup_dirs(layout.cgroup_parent)]
    # dockerd, containerd and shims name the run folder; Redis names its address in its title,
    # the internet's listener its address and port.
    marks = (
        f"/run/ccp-h2-{layout.slot}/",
        f"ccp-h2-{layout.slot}-",
        f"{layout.root_address}:{layout.redis_port}",
        f" {layout.internet_address} {INTERNET_PORT} ",
    )
    for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
        line = _cmdline(pid)
        if any(mark in line for mark in marks) and pid != os.getpid():
            left.append(f"process {pid}: {line[:200]}")
    return left


@dataclass
class SecondHost:
    """A running second host; see the module's docstring for its shape. What a host agent needs:
    `popen`/`run` to start it inside, `env()` (`docker_url`, `workspace_root`, `pool_file`,
    `redis_url`) and `database_url_from_inside`. `stop_engine`/`start_engine` stop and start its
    dockerd alone; `up`/`down` the whole host.

    Its processes (dockerd, and whatever `popen` and `run` start) each have a mount namespace of
    their own, copied from the machine's when they start: what the machine mounts later (another
    pool, say) they do not see, and what they mount stays theirs. The pool is mounted before
    dockerd starts, so both see it; a host agent must find it mounted, not mount it."""

    layout: Layout
    redis_password: str = field(repr=False)
    dockerd_start_s: float = 0.0
    images: list[str] = field(default_factory=list)
    relay: Relay | None = None
    processes: list[subprocess.Popen] = field(default_factory=list)  # reaped by down()
    root_rules_before: list[str] = field(default_factory=list, repr=False)  # root_ruleset() before up()

    # names a test reads
    @property
    def slot(self) -> int:
        return self.layout.slot

    @property
    def netns(self) -> str:
        return self.layout.netns

    @property
    def internet_netns(self) -> str:
        return self.layout.internet_netns

    @property
    def docker_url(self) -> str:
        return self.layout.docker_url

    @property
    def root_address(self) -> str:
        """The panel's address as the second host reaches it (Redis and the database are here)."""
        return self.layout.root_address

    @property
    def host_address(self) -> str:
        """The second host's own address on its link to the panel."""
        return self.layout.host_address

    @property
    def internet(self) -> str:
        """The second host's "internet": the listener's address (port `internet_port`)."""
        return self.layout.internet_address

    @property
    def internet_port(self) -> int:
        return INTERNET_PORT

    @property
    def internet_body(self) -> str:
        return INTERNET_BODY

    @property
    def workspace_root(self) -> Path:
        return self.layout.workspace_root

    @property
    def pool_file(self) -> Path:
        return self.layout.pool_file

    @property
    def dockerd_log(self) -> Path:
        return self.layout.dockerd_log

    @property
    def docker_tls_url(self) -> str:
        return self.layout.docker_tls_url

    @property
    def docker_client_certs(self) -> Path:
        """ca.pem, cert.pem and key.pem: what the panel needs to reach `docker_tls_url`."""
        return self.layout.tls_dir / "panel-client"

    @property
    def redis_ca(self) -> Path:
        return self.layout.tls_dir / "ca.crt"

    @property
    def redis_url(self) -> str:
        """rediss:// with the password and the CA to check the server by, as redis-py, kombu
        (Celery's broker) and Celery's result backend each read them from the query."""
        return (
            f"rediss://:{quote(self.redis_password, safe='')}@{self.layout.root_address}:{self.layout.redis_port}/0"
            f"?ssl_cert_reqs=required&ssl_ca_certs={self.redis_ca}"
        )

    def database_url_from_inside(self, dbname: str, user: str, password: str) -> str:
        """A PostgreSQL URL that reaches the tests' cluster from inside the second host (through
        the relay on the panel's side of the veth)."""
        return (
            f"postgres://{quote(user, safe='')}:{quote(password, safe='')}@{self.layout.root_address}:{self.layout.postgres_port}"
            f"/{quote(dbname, safe='')}"
        )

    def command(self, cmd: Sequence[str]) -> list[str]:
        """`cmd` wrapped to run as a process of the second host."""
        return enter_command(self.layout, cmd)

    def run(self, *cmd: str, timeout: float = 60, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
        """Run a command inside the second host, in the checkout; returns it (its output captured,
        not checked)."""
        return subprocess.run(self.command(cmd), capture_output=True, text=True, timeout=timeout, check=False, env=env, cwd=cwd)

    def popen(self, cmd: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start a long-running process inside the second host (a host agent): the caller stops
        it; teardown stops whatever is left in the namespace."""
        return subprocess.Popen(self.command(cmd), **kwargs)

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """The docker CLI against the second host's engine."""
        return docker(self.layout, *args, check=check, timeout=timeout)

    def load_image(self, image: str) -> None:
        load_image(self.layout, image)
        self.images.append(image)

    def up(self, *, images: Sequence[str] = (TEST_IMAGE,), redis_password: str = "") -> None:
        """Bring the host up: first whatever of this slot is on the machine goes (a crashed
        run's leftovers, or this host as it was), then everything is made anew (a new Redis
        password, or `redis_password`: a caller that set its settings from redis_url before).
        On failure, what was made is removed and the error raised."""
        self.down()
        self.root_rules_before = root_ruleset()
        layout = self.layout
        layout.run_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        layout.log_dir.mkdir(parents=True, exist_ok=True)
        self.redis_password = redis_password or secrets.token_hex(16)
        self.images = []
        try:
            _network_up(layout)
            self.processes.append(_start_listener(layout))
            _make_tls(layout)
            self.processes.append(_start_redis(layout, self.redis_password))
            self.relay = Relay.tcp(layout.root_address, layout.postgres_port, ("127.0.0.1", POSTGRES_PORT))
            _mount_pool(layout)  # before dockerd: its mount namespace is a copy made when it starts
            self.start_engine()
            for image in images:
                self.load_image(image)
        except BaseException:
            self.down()
            raise

    def down(self) -> list[str]:
        """Remove everything of this slot's second host and reap what this process started;
        returns what is left (empty when all went)."""
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        left = teardown(self.slot)
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
        self.processes = []
        return left

    def stop_engine(self) -> None:
        """Stop the second dockerd as its host's service would (SIGTERM; its containers stop
        with it), leaving the rest of the host up."""
        pid = _pid_from(self.layout.pidfile, "dockerd", f"--pidfile={self.layout.pidfile}")
        if pid is None:
            raise SecondHostError("the second dockerd is not running")
        containerd = _pid_from(self.layout.exec_root / "containerd" / "containerd.pid", "containerd", str(self.layout.exec_root))
        stop_pids([pid], grace=60)
        if containerd is not None:  # dockerd stops the containerd it started; not at once
            wait_until(lambda: not alive(containerd), timeout=30, what="the second dockerd's containerd to stop")

    def start_engine(self) -> None:
        """Start the second dockerd (again), and wait until it answers."""
        began = time.monotonic()
        self.processes.append(_start_dockerd(self.layout))
        self.dockerd_start_s = time.monotonic() - began

    def env(self) -> dict[str, str]:
        """The settings a host agent on this host starts from (the caller adds its own)."""
        return {
            "DOCKER_HOST": self.docker_url,
            "WORKSPACE_ROOT": str(self.workspace_root),
            "STORAGE_POOL": "loop",
            "STORAGE_POOL_FILE": str(self.pool_file),
            "REDIS_URL": self.redis_url,
        }


def start(slot: int, *, images: Sequence[str] = (TEST_IMAGE,)) -> SecondHost:
    """Bring this slot's second host up (after removing any leftover of it)."""
    host = SecondHost(layout=Layout(slot), redis_password="")
    host.up(images=images)
    return host


def root_ruleset() -> list[str]:
    """The root namespace's iptables rules as `iptables-save` prints them, without counters and
    comments, and without the lines of the panel's own networks and chains (`ccpanel-*`,
    `CCP-*`): other test runs on this machine add and remove theirs at any moment."""
    out = sh("iptables-save")
    lines = []
    for line in out.splitlines():
        if line.startswith("#") or "ccpanel" in line or "CCP-" in line:
            continue
        lines.append(re.sub(r" \[\d+:\d+\]$", "", line))
    return lines


def _layout_for_cli() -> Layout:
    if len(sys.argv) != 3 or sys.argv[1] != "clean" or not sys.argv[2].isdigit():
        raise SystemExit("usage: second_host.py clean <slot>")
    return Layout(int(sys.argv[2]))


if __name__ == "__main__":
    slot_layout = _layout_for_cli()
    shutil.rmtree(slot_layout.tls_dir, ignore_errors=True)
    left = teardown(slot_layout.slot)
    print("\n".join(left) if left else f"nothing of ccp-h2-{slot_layout.slot} is left")
    raise SystemExit(1 if left else 0)
