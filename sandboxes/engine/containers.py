"""Containers: created only through `create_container`, which runs the security policy first."""

import os
from typing import Any

from docker.types import Mount, Ulimit

from .. import policy
from .client import (
    EVIDENCE_REPOSITORY,
    LABEL_EVIDENCE,
    LABEL_UUID,
    BaseClient,
    ContainerState,
    EngineError,
    NotFound,
    carries,
    instance_filter,
)


class ContainersMixin(BaseClient):
    def create_container(self, spec: policy.ContainerSpec, *, rules: policy.Rules) -> str:
        """Check `spec` against the security policy (its host folders as they are on disk now),
        then create the container; returns its id. The container never restarts by itself:
        Docker would resolve its bind sources again without the policy looking."""
        policy.check(spec, rules)
        self._refuse_evidence(spec.image)
        mounts = [Mount(target=b.target, source=b.source, type="bind", read_only=b.read_only) for b in spec.binds]
        mounts += [Mount(target=v.target, source=v.name, type="volume") for v in spec.volumes]
        if spec.managed_settings:  # a team's Claude Code policy: read-only, root's (the policy judged it)
            mounts.append(Mount(target=policy.MANAGED_SETTINGS_TARGET, source=spec.managed_settings, type="bind", read_only=True))
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
            tmpfs=policy.tmpfs_options(spec) or None,
            ulimits=[Ulimit(name=n, soft=soft, hard=hard) for n, soft, hard in spec.ulimits] or None,
            sysctls=dict(spec.sysctls) or None,
            mounts=mounts,
            labels=spec.labels,
            environment=spec.environment,
            ports={f"{p.container_port}/tcp": (p.host_ip, p.host_port) for p in spec.ports} or None,
            runtime=spec.runtime,
            dns=list(spec.dns) or None,
            restart_policy={"Name": "no"},
            log_config={"Type": "json-file", "Config": {"max-size": spec.log_max_size, "max-file": str(spec.log_max_files)}},
            working_dir="/workspace",
            # No TTY for the main process: Docker then keeps stdout and stderr apart in the logs.
            # The browser terminal opens its own TTY with `docker exec`.
            tty=False,
            stdin_open=False,
            detach=True,
        )
        if spec.network == "none":
            kwargs["network_mode"] = "none"
        else:
            kwargs["network"] = spec.network
        return self.call(self.docker.containers.create, **kwargs).id

    def _refuse_evidence(self, image: str) -> None:
        """An image kept as evidence of an incident holds what a compromised sandbox left: it is
        never run again, by any sandbox of any team."""
        try:
            labels = self.call(self.api.inspect_image, image).get("Config", {}).get("Labels") or {}
        except NotFound:
            return  # Docker says so itself at create
        if LABEL_EVIDENCE in labels or image.startswith(EVIDENCE_REPOSITORY):
            raise EngineError(f"{image} is kept as evidence of an incident; it is never run.")

    def container_state(self, container_id: str) -> ContainerState | None:
        """The container's current state, or None if it no longer exists."""
        data = self._inspected(self.api.inspect_container, container_id)
        if data is None:
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
            health=(state.get("Health") or {}).get("Status", ""),
        )

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        return self.call(self.api.inspect_container, container_id)

    def start(self, container_id: str) -> None:
        self.call(self.api.start, container_id)

    def stop(self, container_id: str, *, timeout: int) -> None:
        self.call(self.api.stop, container_id, timeout=timeout)

    def pause(self, container_id: str) -> None:
        self.call(self.api.pause, container_id)

    def unpause(self, container_id: str) -> None:
        self.call(self.api.unpause, container_id)

    def rename_container(self, container_id: str, name: str) -> None:
        """Give a container a new name (Conflict if another container has it)."""
        self.call(self.api.rename, container_id, name)

    def update_limits(self, container_id: str, *, memory_bytes: int, nano_cpus: int, pids_limit: int) -> None:
        """Set a container's memory (swap included: none beyond it), CPUs and process limit,
        running or not. docker-py's update_container knows neither NanoCpus nor PidsLimit, so the
        Engine API's own endpoint is called."""
        api = self.api
        body = {"Memory": memory_bytes, "MemorySwap": memory_bytes, "NanoCpus": nano_cpus, "PidsLimit": pids_limit}
        self.call(lambda: api._result(api._post_json(api._url("/containers/{0}/update", container_id), data=body), True))

    def remove_container(self, container_id_or_name: str) -> None:
        """Force-remove; a container that is already gone is not an error (idempotent)."""
        try:
            self.call(self.api.remove_container, container_id_or_name, force=True)
        except NotFound:
            pass
        except EngineError as exc:
            if "already in progress" not in str(exc):
                raise

    def remove_container_if_ours(self, name: str, *, labels: dict[str, str]) -> bool:
        """Force-remove the container called `name` if it carries `labels`; False, touching
        nothing, if a container of someone else's has that name. True if none exists."""
        state = self.container_state(name)
        if state is None:
            return True
        if not carries(state.labels, labels):
            return False
        self.remove_container(state.id)
        return True

    def instance_containers(self) -> list[ContainerState]:
        """Every container of this panel instance, running or not."""
        found = self.call(self.api.containers, all=True, filters={"label": instance_filter()})
        return [
            ContainerState(
                id=c["Id"],
                name=(c.get("Names") or ["/"])[0].lstrip("/"),
                status=c.get("State", ""),
                exit_code=0,
                oom_killed=False,
                error="",
                labels=c.get("Labels") or {},
            )
            for c in found
        ]

    def containers_claiming(self, *, name: str, sandbox_uuid: str) -> list[str]:
        """Ids of every container that carries the sandbox's UUID label or its exact name, whoever
        made it (an impostor made by hand included)."""
        ids: list[str] = []
        for filters in ({"label": [f"{LABEL_UUID}={sandbox_uuid}"]}, {"name": [f"^/{name}$"]}):
            for c in self.call(self.api.containers, all=True, filters=filters):
                if c["Id"] not in ids:
                    ids.append(c["Id"])
        return ids

    def process_privileges(self, container_id: str) -> list[dict[str, Any]] | None:
        """Every process in a running container, with what the kernel says of its privileges:
        effective and bounding capabilities, uid and no_new_privs, read from /proc. None when
        that cannot be read from here (the engine is on another machine)."""
        if not self.host.is_local or self._runtime(container_id) == "runsc":
            return None  # gVisor's processes live in its own kernel: /proc here does not show them
        top = self.call(self.api.top, container_id, ps_args="-o pid,args")
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
            processes.append(
                {
                    "pid": int(pid),
                    "command": row[-1],
                    "uid": int(status.get("Uid", "0").split()[1]),  # effective uid
                    "cap_eff": int(status.get("CapEff", "0"), 16),
                    "cap_bnd": int(status.get("CapBnd", "0"), 16),
                    "no_new_privs": status.get("NoNewPrivs", "0").strip() == "1",
                }
            )
        return processes

    def mounted_identities(self, container_id: str, targets: list[str]) -> dict[str, tuple[int, int]] | None:
        """(device, inode) of the folder actually mounted at each target of a running container,
        seen through the container's own root on this machine: what Docker really mounted, not
        what it was asked to. None when that cannot be read: a remote engine, or a container
        that is no longer running (it exited at once: nothing of it runs to be wrong)."""
        if not self.host.is_local:
            return None
        data = self.inspect_container(container_id)
        if (data.get("HostConfig") or {}).get("Runtime") == "runsc":
            return None  # gVisor serves the files itself: the checks before the start are what holds
        state = data["State"]
        pid = int(state.get("Pid") or 0)
        if not state.get("Running") or pid <= 0:
            return None
        found = {}
        for target in targets:
            try:
                st = os.stat(f"/proc/{pid}/root{target}", follow_symlinks=False)
            except OSError:
                if not os.path.exists(f"/proc/{pid}/root"):
                    return None  # it exited meanwhile
                continue  # nothing there: reported as not the folder checked
            found[target] = (st.st_dev, st.st_ino)
        return found

    def _runtime(self, container_id: str) -> str:
        return (self.inspect_container(container_id).get("HostConfig") or {}).get("Runtime") or "runc"

    def runtimes(self) -> list[str]:
        """The runtimes this engine has registered (runc always; runsc once gVisor is set up)."""
        return sorted(self.call(self.api.info).get("Runtimes") or {"runc": {}})

    def exec_run(self, container_id: str, cmd: list[str], *, user: str = "", environment: dict[str, str] | None = None) -> tuple[int, str]:
        """Run a command inside a running container; returns (exit code, combined output)."""
        result = self.call(self.docker.containers.get(container_id).exec_run, cmd, user=user or "", environment=environment)
        return result.exit_code, result.output.decode("utf-8", errors="replace")
