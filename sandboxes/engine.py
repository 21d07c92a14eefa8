"""The one place that talks to the Docker Engine.

Plain values in and out; docker-py types and exceptions never leave this module. Every
container is created through `create_container`, which runs the security policy first.
"""

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests.exceptions
from django.conf import settings
from docker.types import Mount

from . import policy

log = logging.getLogger(__name__)
LABEL_MANAGED = "io.ccpanel.managed"
LABEL_INSTANCE = "io.ccpanel.instance"
LABEL_SANDBOX = "io.ccpanel.sandbox"
LABEL_UUID = policy.LABEL_UUID
# Images kept as evidence of an incident: never removed by Clean, Destroy or rotation.
LABEL_EVIDENCE = "io.ccpanel.evidence"


class EngineError(Exception):
    """Docker refused or failed an operation; the message is fit to show a user."""


class EngineUnavailable(EngineError):
    """The Docker daemon did not answer."""


class NotFound(EngineError):
    """The container, volume, image or network does not exist."""


class Conflict(EngineError):
    """The name is taken (409), e.g. by a container left behind by an interrupted create."""


@dataclass(frozen=True)
class ContainerState:
    id: str
    name: str
    status: str  # created, running, paused, restarting, removing, exited, dead
    exit_code: int
    oom_killed: bool
    error: str
    labels: dict[str, str]


def managed_labels(sandbox_name: str, sandbox_uuid: str) -> dict[str, str]:
    """The labels on everything made for one sandbox: this panel instance, and the sandbox's
    UUID, which is what "ours" means (a name can be reused, a UUID never is)."""
    return {LABEL_MANAGED: "true", LABEL_INSTANCE: settings.PANEL_INSTANCE, LABEL_SANDBOX: sandbox_name,
            LABEL_UUID: sandbox_uuid}


def _instance_filter() -> list[str]:
    return [f"{LABEL_MANAGED}=true", f"{LABEL_INSTANCE}={settings.PANEL_INSTANCE}"]


@functools.cache
def _client_for(base_url: str | None, timeout: int) -> docker.DockerClient:
    if base_url:
        return docker.DockerClient(base_url=base_url, timeout=timeout)
    return docker.DockerClient.from_env(timeout=timeout)


def client() -> docker.DockerClient:
    try:
        return _client_for(settings.DOCKER_HOST, settings.DOCKER_TIMEOUT)
    except docker.errors.DockerException as exc:
        raise EngineUnavailable(f"Docker engine is not reachable: {exc}") from exc


def _translate(exc: Exception) -> EngineError:
    if isinstance(exc, docker.errors.NotFound):
        return NotFound(getattr(exc, "explanation", None) or str(exc))
    if isinstance(exc, docker.errors.APIError) and exc.status_code == 409:
        return Conflict(getattr(exc, "explanation", None) or str(exc))
    if isinstance(exc, docker.errors.APIError):
        return EngineError(getattr(exc, "explanation", None) or str(exc))
    if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout, ConnectionError)):
        return EngineUnavailable(f"Docker engine is not reachable ({settings.DOCKER_HOST or 'default socket'}).")
    return EngineError(str(exc))


def _call(fn, *args, **kwargs):
    """Run a docker-py call, turning its errors into the project's own."""
    try:
        return fn(*args, **kwargs)
    except (docker.errors.DockerException, requests.exceptions.RequestException, ConnectionError) as exc:
        raise _translate(exc) from exc


def ping() -> str:
    """Return the engine's version, or raise EngineUnavailable."""
    try:
        return client().version()["Version"]
    except EngineError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to answer means "unavailable"
        raise EngineUnavailable(f"Docker engine is not reachable: {exc}") from exc


# --- networks and volumes ----------------------------------------------------------------------

def ensure_network(name: str, *, subnet: str, bridge: str) -> str:
    """Create the sandbox bridge if missing: its own subnet, inter-container traffic off."""
    c = client()
    existing = _call(c.api.networks, names=[name])
    for net in existing:
        if net["Name"] == name:
            if (net.get("Options") or {}).get("com.docker.network.bridge.enable_icc") != "false":
                raise EngineError(f"Network {name} exists but lets containers talk to each other; "
                                  "remove it (the panel recreates it isolated) or set SANDBOX_NETWORK.")
            return net["Id"]
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=subnet)])
    try:
        return c.api.create_network(
            name,
            driver="bridge",
            ipam=ipam,
            check_duplicate=True,  # older engines allow two networks of one name unless asked
            options={
                "com.docker.network.bridge.enable_icc": "false",
                "com.docker.network.bridge.name": bridge,
            },
            labels={LABEL_MANAGED: "true", LABEL_INSTANCE: settings.PANEL_INSTANCE},
        )["Id"]
    except docker.errors.APIError as exc:
        if exc.status_code == 409:  # created concurrently by another worker
            return _call(c.api.inspect_network, name)["Id"]
        raise _translate(exc) from exc
    except Exception as exc:
        raise _translate(exc) from exc


def inspect_network(name: str) -> dict[str, Any]:
    return _call(client().api.inspect_network, name)


def ensure_volume(name: str, *, labels: dict[str, str]) -> None:
    """Create the named volume. Docker returns an existing volume of that name instead, so its
    labels are checked: a volume that is not this sandbox's is never used."""
    volume = _call(client().api.create_volume, name=name, driver="local", labels=labels)
    if not _carries(volume.get("Labels"), labels):
        raise EngineError(f"A volume named {name} exists that does not belong to this sandbox; it is never reused.")


def volume_exists(name: str) -> bool:
    try:
        _call(client().api.inspect_volume, name)
        return True
    except NotFound:
        return False


def _carries(found: dict[str, str] | None, labels: dict[str, str]) -> bool:
    """Whether an object's labels include all of `labels`: how the panel knows what it made."""
    return all((found or {}).get(k) == v for k, v in labels.items())


def remove_volume(name: str, *, labels: dict[str, str]) -> bool:
    """Remove the volume if it carries `labels` (ours); False if it is someone else's."""
    try:
        if not _carries(_call(client().api.inspect_volume, name).get("Labels"), labels):
            return False
        _call(client().api.remove_volume, name, force=True)
    except NotFound:
        pass
    return True


# --- containers ------------------------------------------------------------------------------

def create_container(spec: policy.ContainerSpec, *, rules: policy.Rules) -> str:
    """Check `spec` against the security policy (its host folders as they are on disk now),
    then create the container; returns its id. The container never restarts by itself: Docker
    would resolve its bind sources again without the policy looking."""
    policy.check(spec, rules)
    mounts = [Mount(target=b.target, source=b.source, type="bind", read_only=b.read_only) for b in spec.binds]
    mounts += [Mount(target=v.target, source=v.name, type="volume") for v in spec.volumes]
    kwargs: dict[str, Any] = dict(
        image=spec.image,
        name=spec.name,
        user=spec.user,
        hostname=spec.hostname or None,
        mem_limit=spec.memory_bytes,
        memswap_limit=spec.memory_bytes,  # no swap beyond the memory limit
        nano_cpus=spec.nano_cpus,
        pids_limit=spec.pids_limit,
        cap_drop=list(spec.cap_drop),
        cap_add=list(spec.cap_add) or None,
        security_opt=list(spec.security_opt),
        privileged=spec.privileged,
        read_only=spec.read_only_rootfs,
        mounts=mounts,
        labels=spec.labels,
        environment=spec.environment,
        ports={f"{p.container_port}/tcp": (p.host_ip, p.host_port) for p in spec.ports} or None,
        runtime=spec.runtime,
        restart_policy={"Name": "no"},
        working_dir="/workspace",
        tty=True,
        stdin_open=True,
        detach=True,
    )
    if spec.network == "none":
        kwargs["network_mode"] = "none"
    else:
        kwargs["network"] = spec.network
    return _call(client().containers.create, **kwargs).id


def container_state(container_id: str) -> ContainerState | None:
    """The container's current state, or None if it no longer exists."""
    try:
        data = _call(client().api.inspect_container, container_id)
    except NotFound:
        return None
    state = data["State"]
    return ContainerState(
        id=data["Id"],
        name=data["Name"].lstrip("/"),
        status=state["Status"],
        exit_code=state.get("ExitCode", 0),
        oom_killed=state.get("OOMKilled", False),
        error=state.get("Error", ""),
        labels=data["Config"].get("Labels") or {},
    )


def inspect_container(container_id: str) -> dict[str, Any]:
    return _call(client().api.inspect_container, container_id)


def start(container_id: str) -> None:
    _call(client().api.start, container_id)


def stop(container_id: str, *, timeout: int) -> None:
    _call(client().api.stop, container_id, timeout=timeout)


def restart(container_id: str, *, timeout: int) -> None:
    _call(client().api.restart, container_id, timeout=timeout)


def pause(container_id: str) -> None:
    _call(client().api.pause, container_id)


def unpause(container_id: str) -> None:
    _call(client().api.unpause, container_id)


def remove_container(container_id_or_name: str) -> None:
    """Force-remove; a container that is already gone is not an error (idempotent)."""
    try:
        _call(client().api.remove_container, container_id_or_name, force=True)
    except NotFound:
        pass
    except EngineError as exc:
        if "already in progress" not in str(exc):
            raise


def remove_container_if_ours(name: str, *, labels: dict[str, str]) -> bool:
    """Force-remove the container called `name` if it carries `labels`; False, touching
    nothing, if a container of someone else's has that name. True if none exists."""
    state = container_state(name)
    if state is None:
        return True
    if not _carries(state.labels, labels):
        return False
    remove_container(state.id)
    return True


def instance_containers() -> list[ContainerState]:
    """Every container of this panel instance, running or not."""
    found = _call(client().api.containers, all=True, filters={"label": _instance_filter()})
    return [ContainerState(id=c["Id"], name=(c.get("Names") or ["/"])[0].lstrip("/"), status=c.get("State", ""),
                           exit_code=0, oom_killed=False, error="", labels=c.get("Labels") or {}) for c in found]


def containers_claiming(*, name: str, sandbox_uuid: str) -> list[str]:
    """Ids of every container that carries the sandbox's UUID label or its exact name, whoever
    made it (an impostor made by hand included)."""
    ids: list[str] = []
    for filters in ({"label": [f"{LABEL_UUID}={sandbox_uuid}"]}, {"name": [f"^/{name}$"]}):
        for c in _call(client().api.containers, all=True, filters=filters):
            if c["Id"] not in ids:
                ids.append(c["Id"])
    return ids


def process_privileges(container_id: str) -> list[dict[str, Any]] | None:
    """Every process in a running container, with what the kernel says of its privileges:
    effective and bounding capabilities, uid and no_new_privs, read from /proc on this machine.
    None when that cannot be read here (the engine is on another machine)."""
    if settings.DOCKER_HOST and not settings.DOCKER_HOST.startswith("unix://"):
        return None
    top = _call(client().api.top, container_id, ps_args="-o pid,args")
    titles = [t.upper() for t in top.get("Titles") or []]
    if "PID" not in titles:
        return None
    processes = []
    for row in top.get("Processes") or []:
        pid = row[titles.index("PID")]
        try:
            with open(f"/proc/{int(pid)}/status") as f:
                status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        except (OSError, ValueError):
            continue  # exited meanwhile
        processes.append({
            "pid": int(pid),
            "command": row[-1],
            "uid": int(status.get("Uid", "0").split()[1]),  # effective uid
            "cap_eff": int(status.get("CapEff", "0"), 16),
            "cap_bnd": int(status.get("CapBnd", "0"), 16),
            "no_new_privs": status.get("NoNewPrivs", "0").strip() == "1",
        })
    return processes


def logs(container_id: str, *, tail: int = 200) -> str:
    raw = _call(client().api.logs, container_id, stdout=True, stderr=True, tail=tail, timestamps=False)
    return raw.decode("utf-8", errors="replace")


def exec_run(container_id: str, cmd: list[str], *, user: str = "") -> tuple[int, str]:
    """Run a command inside a running container; returns (exit code, combined output)."""
    result = _call(client().containers.get(container_id).exec_run, cmd, user=user or "")
    return result.exit_code, result.output.decode("utf-8", errors="replace")


def events(*, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Container events for this instance's sandboxes, as plain dicts, until the stream ends.

    The generator closes the underlying HTTP stream when it is closed itself."""
    stream = _call(
        client().api.events,
        since=since,
        decode=True,
        filters={"type": "container", "label": _instance_filter()},
    )
    try:
        for event in stream:
            yield {
                "action": event.get("Action") or event.get("status", ""),
                "id": event.get("id") or event.get("Actor", {}).get("ID", ""),
                "attributes": event.get("Actor", {}).get("Attributes", {}),
                "time": event.get("time"),
            }
    except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
        raise _translate(exc) from exc
    finally:
        stream.close()


# --- images ------------------------------------------------------------------------------------

def image_exists(ref: str) -> bool:
    try:
        _call(client().api.inspect_image, ref)
        return True
    except NotFound:
        return False


def pull(ref: str) -> None:
    repo, _, tag = ref.partition(":")
    _call(client().api.pull, repo, tag=tag or "latest")


def import_image(tar_path: str, *, repository: str, tag: str, changes: list[str]) -> None:
    """`docker import` a root filesystem tarball as an image."""
    _call(client().api.import_image_from_file, tar_path, repository=repository, tag=tag, changes=changes)


def build_image(context_dir: str, *, tag: str, buildargs: dict[str, str], labels: dict[str, str]) -> Iterator[str]:
    """Build an image, yielding its progress lines; raise EngineError if a step fails."""
    stream = _call(
        client().api.build, path=context_dir, tag=tag, buildargs=buildargs, labels=labels,
        rm=True, forcerm=True, decode=True,
    )
    try:
        for chunk in stream:
            if "error" in chunk:
                raise EngineError(chunk["error"].strip())
            if text := chunk.get("stream"):
                yield text
    except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
        raise _translate(exc) from exc


def remove_images(*, sandbox_uuid: str) -> list[str]:
    """Remove every image made from this sandbox (its snapshots: `docker commit` keeps the
    container's labels, UUID included); never one kept as evidence. Returns the ids."""
    removed = []
    labels = [f"{LABEL_UUID}={sandbox_uuid}", f"{LABEL_INSTANCE}={settings.PANEL_INSTANCE}"]
    for image in _call(client().api.images, filters={"label": labels}):
        if LABEL_EVIDENCE in (image.get("Labels") or {}):
            continue
        try:
            _call(client().api.remove_image, image["Id"], force=True)
            removed.append(image["Id"])
        except NotFound:
            pass
    return removed
