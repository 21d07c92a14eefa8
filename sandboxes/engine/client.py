"""The engine client: one Docker Engine (a host), its own docker-py client and its own errors.

Plain values in and out; docker-py types and exceptions never leave this package. The methods
are grouped by what they touch (containers, networks, volumes, images, events, streams), one
module each, and EngineClient gathers them.
"""

import os
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.tls
import requests.exceptions
from django.conf import settings

from .. import policy

LABEL_MANAGED = "io.ccpanel.managed"
LABEL_INSTANCE = "io.ccpanel.instance"
LABEL_SANDBOX = "io.ccpanel.sandbox"
LABEL_UUID = policy.LABEL_UUID
# Images kept as evidence of an incident: never removed by Clean, Destroy or rotation.
LABEL_EVIDENCE = "io.ccpanel.evidence"
EVIDENCE_REPOSITORY = "ccpanel-evidence/"
# A container made only to reach a volume's files (never started): see policy's helper profile.
LABEL_HELPER = "io.ccpanel.helper"
# On a container made to name the panel's resolver as its DNS (allowlist mode): the resolver
# answers it even after it was moved to the internet bridge live.
LABEL_DNS = "io.ccpanel.dns"
# On a container of the warm pool (sandboxes.services.warm): the key of its slot. Kept by the
# sandbox that takes it until its next start makes a container from the sandbox's own spec.
LABEL_WARM = "io.ccpanel.warm"


# This machine's own engine: where a Docker engine listens when nothing says otherwise.
LOCAL_SOCKET = "/var/run/docker.sock"


def local_socket() -> str:
    """The socket of the engine whose containers share this process's network and process
    namespaces (so the egress rules here filter them): DOCKER_LOCAL_SOCKET, the default socket
    unless a host agent's settings name its own (a dockerd of its namespace)."""
    return getattr(settings, "DOCKER_LOCAL_SOCKET", "") or LOCAL_SOCKET


def peer_in_our_network_namespace(path: str) -> bool:
    """Whether the process answering the Unix socket `path` (its dockerd) is in this process's
    network namespace, as the kernel says (SO_PEERCRED, /proc/<pid>/ns/net). False when that
    cannot be told (no answer, another process namespace): a socket named as local but whose
    engine's containers the egress rules here would not see is never counted as local."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(2)
            conn.connect(path)
            pid, _uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
        return pid > 0 and os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net")
    except (OSError, ValueError):
        return False


def socket_path(url: str) -> str | None:
    """The file of a unix:// Docker URL, else None."""
    for scheme in ("unix://", "http+unix://"):
        if url.startswith(scheme):
            return url[len(scheme) :]
    return None


class EngineError(Exception):
    """Docker refused or failed an operation; the message is fit to show a user."""


class EngineUnavailable(EngineError):
    """The Docker daemon did not answer."""


class NotFound(EngineError):
    """The container, volume, image or network does not exist."""


class Conflict(EngineError):
    """The name is taken (409), e.g. by a container left behind by an interrupted create."""


@dataclass(frozen=True)
class Host:
    """Where an engine runs, as a plain value (hosts.models.Host is the row; engine.host_of
    turns one into this). `base_url` None means this machine's default socket."""

    name: str
    base_url: str | None
    timeout: int

    @property
    def is_local(self) -> bool:
        """Whether this is this machine's own engine, the one behind its default socket (by
        whatever name: the same file): its containers live in our network and process
        namespaces, so the egress rules here filter them and the process ids it reports are
        ours (/proc, signals). Any other socket may be another dockerd (in a network namespace
        of its own, inside a container, forwarded from elsewhere): never counted as this one."""
        if self.base_url is None:
            return True
        path = socket_path(self.base_url)
        if path is None:
            return False
        if path != local_socket():
            try:
                if not os.path.samefile(path, local_socket()):
                    return False
            except (OSError, ValueError):
                return False
        # DOCKER_LOCAL_SOCKET set to another socket (a host agent beside a dockerd of its own): a
        # misnamed one, e.g. a dockerd in another network namespace, would have the egress rules
        # applied here for containers they never see. The kernel says where its dockerd is.
        return local_socket() == LOCAL_SOCKET or peer_in_our_network_namespace(local_socket())

    def with_timeout(self, timeout: int) -> "Host":
        """The same engine, asked with another timeout (a page's short one, a health ping's)."""
        return replace(self, timeout=timeout)

    @property
    def on_this_machine(self) -> bool:
        """Whether the engine mounts this machine's files (the default socket, or any Unix
        socket): the sandboxes' folders it bind-mounts are the ones the policy judges here. An
        engine reached over TCP or SSH mounts its own machine's paths, which the panel cannot
        judge (the host agent, issue 16, will)."""
        return self.base_url is None or socket_path(self.base_url) is not None


@dataclass(frozen=True)
class ContainerState:
    id: str
    name: str
    status: str  # created, running, paused, restarting, removing, exited, dead
    exit_code: int
    oom_killed: bool
    error: str
    labels: dict[str, str]
    health: str = ""  # the image's health check: starting, healthy, unhealthy ("" without one)


def managed_labels(sandbox_name: str, sandbox_uuid: str) -> dict[str, str]:
    """The labels on everything made for one sandbox: this panel instance, and the sandbox's
    UUID, which is what "ours" means (a name can be reused, a UUID never is)."""
    return {LABEL_MANAGED: "true", LABEL_INSTANCE: settings.PANEL_INSTANCE, LABEL_SANDBOX: sandbox_name, LABEL_UUID: sandbox_uuid}


def ownership_labels(sandbox_uuid: str) -> dict[str, str]:
    """What makes a container or volume this sandbox's: the panel instance and its UUID (a
    container taken from the warm pool keeps its slot's name label until it is made again)."""
    return {LABEL_MANAGED: "true", LABEL_INSTANCE: settings.PANEL_INSTANCE, LABEL_UUID: sandbox_uuid}


def instance_filter() -> list[str]:
    return [f"{LABEL_MANAGED}=true", f"{LABEL_INSTANCE}={settings.PANEL_INSTANCE}"]


def carries(found: dict[str, str] | None, labels: dict[str, str]) -> bool:
    """Whether an object's labels include all of `labels`: how the panel knows what it made."""
    return all((found or {}).get(k) == v for k, v in labels.items())


def translate(exc: Exception, host: Host) -> EngineError:
    if isinstance(exc, docker.errors.NotFound):
        return NotFound(getattr(exc, "explanation", None) or str(exc))
    if isinstance(exc, docker.errors.APIError) and exc.status_code == 409:
        return Conflict(getattr(exc, "explanation", None) or str(exc))
    if isinstance(exc, docker.errors.APIError):
        return EngineError(getattr(exc, "explanation", None) or str(exc))
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)):
        return EngineUnavailable(f"Docker engine is not reachable ({host.base_url or 'default socket'}).")
    return EngineError(str(exc))


TLS_FILES = ("ca.pem", "cert.pem", "key.pem")


def tls_config(host_name: str) -> docker.tls.TLSConfig:
    """The TLS of a host reached over tcp://: its engine's certificate checked against ca.pem,
    the panel's own (cert.pem, key.pem) presented, from HOSTS_TLS_DIR/<name>/. A plain TCP
    engine is never spoken to: whoever reaches its port would be root on its machine, and a
    panel that spoke to one could be answered by anyone on the way."""
    folder = Path(settings.HOSTS_TLS_DIR) / host_name
    missing = [name for name in TLS_FILES if not (folder / name).is_file()]
    if missing:
        raise EngineUnavailable(
            f"Host {host_name} is reached over TCP, which the panel does only with TLS: put {', '.join(missing)} "
            f"(its CA, the panel's client certificate and key, as Docker's --tlsverify wants) in {folder}/."
        )
    if (folder / "key.pem").stat().st_mode & 0o077:
        raise EngineUnavailable(f"{folder / 'key.pem'} can be read by other users of this machine: chmod 600 it.")
    try:
        return docker.tls.TLSConfig(
            client_cert=(str(folder / "cert.pem"), str(folder / "key.pem")), ca_cert=str(folder / "ca.pem"), verify=True
        )
    except docker.errors.TLSParameterError as exc:
        raise EngineUnavailable(f"Host {host_name}'s TLS files cannot be used: {exc}") from exc


class BaseClient:
    """The connection to one host; the mixins in the sibling modules add what it can do."""

    def __init__(self, host: Host):
        self.host = host
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<EngineClient {self.host.name}>"

    @property
    def docker(self) -> docker.DockerClient:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        if self.host.base_url and self.host.base_url.startswith("tcp://"):
                            # Asked for its version only once the environment is out of the way:
                            # requests would otherwise check the engine against REQUESTS_CA_BUNDLE
                            # (or CURL_CA_BUNDLE), not the host's own CA, and use any proxy set.
                            tls = tls_config(self.host.name)
                            client = docker.DockerClient(base_url=self.host.base_url, timeout=self.host.timeout, tls=tls, version="1.24")
                            client.api.trust_env = False
                            client.api._version = client.api._retrieve_server_version()
                            self._client = client
                        elif self.host.base_url:
                            self._client = docker.DockerClient(base_url=self.host.base_url, timeout=self.host.timeout)
                        else:
                            self._client = docker.DockerClient.from_env(timeout=self.host.timeout)
                    except docker.errors.DockerException as exc:
                        raise EngineUnavailable(f"Docker engine is not reachable: {exc}") from exc
                    if self._client.api.base_url.startswith("http+docker://"):
                        # A Unix socket (or SSH): no proxy applies, and requests would otherwise
                        # read the proxy variables from the environment on every call (a third
                        # of what a call costs the panel: a start makes about eight).
                        self._client.api.trust_env = False
        return self._client

    @property
    def api(self) -> Any:
        return self.docker.api

    def call(self, fn, *args, **kwargs):
        """Run a docker-py call, turning its errors into the project's own."""
        try:
            return fn(*args, **kwargs)
        except (docker.errors.DockerException, requests.exceptions.RequestException, ConnectionError) as exc:
            raise translate(exc, self.host) from exc

    def _inspected(self, inspect: Callable[[str], dict[str, Any]], ref: str) -> dict[str, Any] | None:
        """What `inspect` (an api.inspect_* call) says of `ref`, or None when there is no such thing."""
        try:
            return self.call(inspect, ref)
        except NotFound:
            return None

    def data_root(self) -> str | None:
        """Where the engine keeps its data (volumes, images), which no sandbox may ever mount;
        None if the engine does not answer."""
        if not hasattr(self, "_data_root"):
            try:
                self._data_root = self.call(self.api.info).get("DockerRootDir") or None
            except EngineError:
                return None
        return self._data_root

    def ping(self) -> str:
        """Return the engine's version, or raise EngineUnavailable."""
        try:
            return self.api.version()["Version"]
        except EngineError:
            raise
        except Exception as exc:  # any failure to answer means "unavailable"
            raise EngineUnavailable(f"Docker engine is not reachable: {exc}") from exc
