"""Downloading, from the panel, a backup written on another machine (a host agent's BACKUP_ROOT,
which the panel cannot open).

The panel reaches that host's engine (its TLS endpoint) but not its disk, so the archive comes
through the engine: the agent copies it into the sandbox's download volume on its own engine
(`stage`, a job on that host's jobs queue, asked for by the first click on Download), and the
panel then streams it out of that volume with Docker's archive API (`staged_stream`), through a
helper container of the backups' own profile (never started, no network, that volume only).
The volume holds the latest staged archive of the sandbox: staging another replaces it (a
download under way keeps its helper, and the volume, until it ends). What comes out is
checked against the backup's recorded size before the first byte is sent; verify it with its
sha256, shown on the backup's page.
"""

import logging
import tarfile
from collections.abc import Iterator

from django.http import FileResponse, HttpResponseBase, StreamingHttpResponse

from sandboxes import engine
from sandboxes.models import Sandbox
from sandboxes.services.moves import one_file_tar, volume_helper
from sandboxes.services.specs import home_target, labels

from .. import archive
from ..models import Backup

log = logging.getLogger(__name__)
PURPOSE = "download"


def file_response(backup: Backup, stream: Iterator[bytes] | None = None) -> HttpResponseBase:
    """The archive as the page and the API send it: its file here, or `stream` (staged_stream's,
    from its host's engine), an attachment under its own name that no browser sniffs."""
    response: HttpResponseBase
    if stream is None:
        response = FileResponse(
            open(backup.path, "rb"),  # noqa: SIM115 - FileResponse closes it when the response ends
            as_attachment=True,
            filename=backup.file_name,
            content_type="application/gzip",
        )
    else:
        response = StreamingHttpResponse(stream, content_type="application/gzip")
        response["Content-Disposition"] = f'attachment; filename="{backup.file_name}"'
        response["Content-Length"] = str(backup.size_bytes)
    response["X-Content-Type-Options"] = "nosniff"
    return response


def download_volume(sandbox: Sandbox) -> str:
    return f"{sandbox.container_name}-download-{sandbox.uuid}"


def remote(backup: Backup) -> bool:
    """Whether the backup's file is on another machine's disk: its sandbox is on a host this
    process does not reach the folders of (an agent's), and the file is not here."""
    sandbox = backup.sandbox
    return sandbox is not None and not backup.path.exists() and not engine.host_for(sandbox).on_this_machine


def stage(*, backup_id: int) -> None:
    """On the backup's host (its jobs queue): copy the archive into the sandbox's download volume,
    replacing what was staged before (when no download holds the volume)."""
    backup = Backup.objects.select_related("sandbox").filter(pk=backup_id, status=Backup.Status.DONE).first()
    if backup is None or backup.sandbox is None:
        return
    if not backup.path.exists():
        log.warning("backup %s is not on this host; nothing staged", backup.file_name)
        return
    sandbox = backup.sandbox
    docker = engine.engine_for(sandbox)
    try:
        docker.remove_volume(download_volume(sandbox), labels=labels(sandbox))  # the last one staged goes
    except engine.EngineError:
        log.info("the download volume of %s is in use; %s is added beside what it holds", sandbox.name, backup.file_name)
    with volume_helper(docker, sandbox, download_volume(sandbox), PURPOSE, unique=True) as helper:
        docker.write_archive(helper, home_target(), one_file_tar(backup.path, backup.file_name))


def staged_stream(backup: Backup) -> Iterator[bytes] | None:
    """The staged archive's bytes from the sandbox's download volume on its host's engine, read
    by this process (the panel); None when it is not staged there (yet), or is not the file
    recorded (another size). The helper is held until the stream ends or is closed."""
    sandbox = backup.sandbox
    if sandbox is None:
        return None
    docker = engine.engine_for(sandbox)
    held = volume_helper(docker, sandbox, download_volume(sandbox), PURPOSE, unique=True)
    helper = held.__enter__()
    try:
        tar = tarfile.open(  # noqa: SIM115 - closed by the generator below
            fileobj=archive.ChunkReader(docker.read_archive(helper, f"{home_target()}/{backup.file_name}")), mode="r|"
        )
        member = tar.next()
        if member is None or member.name != backup.file_name or not member.isfile() or member.size != backup.size_bytes:
            raise LookupError(backup.file_name)
        data = tar.extractfile(member)
    except (engine.EngineError, tarfile.TarError, LookupError):
        held.__exit__(None, None, None)
        return None
    except BaseException:
        held.__exit__(None, None, None)
        raise

    def chunks() -> Iterator[bytes]:
        try:
            while chunk := data.read(1 << 20):  # type: ignore[union-attr]
                yield chunk
        finally:
            tar.close()
            held.__exit__(None, None, None)

    return chunks()
