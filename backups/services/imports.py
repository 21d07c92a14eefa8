"""Archives made elsewhere (another machine's panel): copied under BACKUP_ROOT, then checked
(every member against the manifest) before they can be restored, which is always into a new
sandbox whose settings pass every rule of a create."""

import logging
import os
from typing import IO

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from controlpanel.names import bidi_problem
from controlpanel.uploads import TooLarge, copy_limited
from sandboxes.services import SandboxError
from teams.models import Team
from teams.permissions import Role, actor_name, actor_user, authorize

from .. import archive
from ..models import Backup
from .attempts import gave_up, take_attempt
from .backup import backup_root
from .restore import AREAS

log = logging.getLogger(__name__)


def backup_import(*, actor, team: Team, source: IO[bytes], source_ip: str | None = None, enqueue: bool = True) -> Backup:
    """Copy an uploaded archive under BACKUP_ROOT (atomically, at most BACKUP_IMPORT_MAX_BYTES)
    and queue its check. Restoring it is possible once the check has passed."""
    authorize(actor, team, Role.OPERATOR)
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
    name, n = f"import-{stamp}.tar.gz", 2
    while Backup.objects.filter(file_name=name).exists() or (settings.BACKUP_ROOT / name).exists():
        name, n = f"import-{stamp}-{n}.tar.gz", n + 1
    final = backup_root() / name
    tmp = final.with_name(f".{name}.partial")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        size, sha256 = copy_limited(source, fd, limit=settings.BACKUP_IMPORT_MAX_BYTES)
    except BaseException as exc:
        os.close(fd)
        archive.remove_partial(str(tmp))
        if isinstance(exc, TooLarge):
            raise SandboxError(f"The archive is {exc} (BACKUP_IMPORT_MAX_BYTES).") from None
        raise
    os.close(fd)
    os.rename(tmp, final)
    archive.fsync_dir(str(final.parent))
    with transaction.atomic():
        backup = Backup.objects.create(
            team=team,
            sandbox_name="(imported)",
            file_name=name,
            kind=Backup.Kind.IMPORTED,
            size_bytes=size,
            sha256=sha256,
            created_by=actor_user(actor),
            created_by_name=actor_name(actor),
        )
        audit_record(
            actor=actor,
            action="backup.imported",
            target=name,
            team_id=team.pk,
            details={"backup": name, "sha256": backup.sha256, "size": size},
            source_ip=source_ip,
        )
        if enqueue:
            from ..tasks import backup_import_task

            transaction.on_commit(lambda: backup_import_task.delay(backup.pk))
    return backup


def backup_import_perform(*, backup_id: int) -> Backup | None:
    """Check an imported archive: every member against its manifest, within the limits of a
    restore (an archive no restore would take is refused now). Its settings are kept for a
    restore (which judges them again). A check whose worker died each time ends as failed."""
    backup = take_attempt(backup_id, kind=Backup.Kind.IMPORTED, status=Backup.Status.RUNNING)
    if backup is None:
        return None
    if reason := gave_up(backup):
        Backup.objects.filter(pk=backup.pk, status=Backup.Status.RUNNING).update(
            status=Backup.Status.FAILED, detail=reason, finished_at=timezone.now(), verified_at=timezone.now(), verified_ok=False
        )
        backup.refresh_from_db()
        return backup
    limits = archive.Limits(members=settings.RESTORE_MAX_MEMBERS, bytes=settings.RESTORE_MAX_BYTES)
    checked = archive.verify(str(backup.path), limits=limits, areas=AREAS)
    config = (checked.manifest or {}).get("sandbox") if checked.manifest else None
    problems = list(checked.problems)
    if checked.sha256 and checked.sha256 != backup.sha256:
        problems.append("The file changed after it was imported.")
    if not isinstance(config, dict) and not problems:  # a refused archive is not read as far as its manifest
        problems.append("The manifest holds no sandbox settings.")
    name = str(config.get("name", ""))[:40] if isinstance(config, dict) else ""
    if problem := bidi_problem(name, "The manifest's sandbox name"):  # shown in the list as it is
        problems.append(problem)
        name = ""
    Backup.objects.filter(pk=backup.pk).update(
        status=Backup.Status.FAILED if problems else Backup.Status.DONE,
        detail=" ".join(problems[:10]) or _outside_links(checked),
        config=config if isinstance(config, dict) and not problems else {},
        sandbox_name=name or "(imported)",
        files=checked.files,
        data_bytes=checked.bytes,
        finished_at=timezone.now(),
        verified_at=timezone.now(),
        verified_ok=not problems,
        attempts=0,
    )
    backup.refresh_from_db()
    return backup


def _outside_links(checked: archive.Checked) -> str:
    """What an archive that passed its check holds that a restore still refuses by default."""
    if not checked.outside_links:
        return ""
    return (
        f"Links that point outside their folder: {checked.outside_links} (such as {checked.outside_example}); "
        "a restore refuses them unless told to leave such links out."
    )
