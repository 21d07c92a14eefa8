"""What the backups tests share: reading a sandbox's files back (host side and home volume),
and building archives by hand (hostile ones included)."""

import hashlib
import io
import json
import os
import tarfile
import zlib
from pathlib import Path

import docker
from django.conf import settings

from backups.models import Backup
from sandboxes import engine, workspace
from sandboxes.models import Sandbox


def workspace_hashes(sandbox: Sandbox) -> dict[str, str]:
    """{folder/relative path: sha256} of every regular file in the six folders (read on the host)."""
    found = {}
    for top, dirs, files in os.walk(sandbox.workspace_path):
        if Path(top) == sandbox.workspace_path:
            dirs[:] = [d for d in dirs if d in workspace.FOLDERS]  # not the home (in the storage pool) nor staging
        for name in files:
            path = Path(top) / name
            if path.is_symlink() or name == ".ccpanel-sandbox":
                continue
            found[str(path.relative_to(sandbox.workspace_path))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def home_hashes(sandbox: Sandbox) -> dict[str, str]:
    """{relative path: sha256} of every regular file in the home volume, read by a throw-away
    container (the sandbox may be stopped)."""
    out = engine.engine_for().docker.containers.run(
        "ccpanel/test-busybox:latest",
        ["sh", "-c", "cd /h && find . -type f -exec sha256sum {} +"],
        mounts=[docker.types.Mount("/h", sandbox.volume_name, type="volume", read_only=True)],
        network_mode="none",
        remove=True,
        labels={engine.LABEL_INSTANCE: settings.PANEL_INSTANCE},
    )
    found = {}
    for line in out.decode().splitlines():
        digest, _, path = line.partition("  ")
        found[path[2:]] = digest
    return found


def backup_row(sandbox: Sandbox, path: Path, sha256: str, config: dict) -> Backup:
    """A finished backup row for an archive written by hand at `path` (as if the file under
    BACKUP_ROOT was swapped with its recorded hash, or imported from elsewhere)."""
    return Backup.objects.create(
        sandbox=sandbox,
        team=sandbox.team,
        sandbox_name=sandbox.name,
        file_name=path.name,
        status=Backup.Status.DONE,
        sha256=sha256,
        config=config,
        created_by_name="test",
    )


def write_home(sandbox: Sandbox, script: str) -> None:
    code, output = engine.engine_for().exec_run(sandbox.container_id, ["sh", "-c", script])
    assert code == 0, output


def hostile_archive(
    path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], *, config: dict, extra_manifest: dict | None = None
) -> str:
    """Write a .tar.gz shaped like a panel's backup, holding `members` and a manifest that lists
    them truthfully (so that only the rules on the members can refuse it). Returns its sha256."""
    entries = []
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
            if info.isreg():
                entries.append(
                    {
                        "path": info.name,
                        "type": "file",
                        "size": info.size,
                        "mode": info.mode & 0o7777,
                        "sha256": hashlib.sha256(data or b"").hexdigest(),
                    }
                )
            elif info.isdir():
                entries.append({"path": info.name, "type": "dir", "mode": info.mode & 0o7777})
            elif info.issym():
                entries.append({"path": info.name, "type": "symlink", "target": info.linkname})
            elif info.islnk():
                entries.append({"path": info.name, "type": "hardlink", "target": info.linkname})
            else:
                entries.append({"path": info.name, "type": "other"})
        manifest = {"format": 1, "sandbox": config, "files": entries, "skipped": [], **(extra_manifest or {})}
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def member(
    name: str, data: bytes | None = b"x", *, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    info.uid = info.gid = 1000
    if kind == tarfile.REGTYPE:
        info.size = len(data or b"")
        return info, data
    return info, None


def gzip_member(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    return compressor.compress(data) + compressor.flush()


def gzipped_zeros(n: int) -> bytes:
    """`n` zero bytes gzipped (1 GiB makes about 1 MB): one member of a MiB compressed once and
    repeated (gzip readers, tar's and Python's, read concatenated members as one stream)."""
    mib = 1 << 20
    whole, rest = divmod(n, mib)
    one = zlib.compress(bytes(mib), 9, wbits=31)
    return one * whole + (zlib.compress(bytes(rest), 9, wbits=31) if rest else b"")


def raw_header(name: str, kind: bytes, size: int) -> bytes:
    """One 512-byte tar header as written, whatever it declares (tarfile would not write these)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    return info.tobuf(tarfile.USTAR_FORMAT)


def header_bomb(path: Path, kind: bytes, body: bytes) -> str:
    """An archive whose first header is an extended one (PAX 'x' or 'g', GNU long name 'L' or
    long link 'K') declaring 1 GiB, followed by `body` (gzipped_zeros(1 GiB): the gigabyte is
    really there, as in the 1 MB upload that took a worker to 3.2 GB). Returns its sha256."""
    data = gzip_member(raw_header("././@LongLink", kind, 1 << 30)) + body
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()
