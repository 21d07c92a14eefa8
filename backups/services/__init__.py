"""Every write of the backups app:

backup    request, write (the archive), verify, delete, rotate
restore   into the sandbox itself (backed up first) or into a new one
schedule  daily backups, and the periodic check that starts them
imports   an archive made elsewhere, checked before it can be restored
"""

from .backup import (
    BackupError,
    backup_cancel,
    backup_delete,
    backup_perform,
    backup_request,
    backup_root,
    backup_verify,
    backups_repair,
    cancel_running,
    config_of,
    resume_backup,
    rotate,
    write_backup,
)
from .imports import backup_import, backup_import_perform
from .restore import judge_config, restore_perform, restore_request, resume_restore
from .schedule import run_due_schedules, schedule_set

__all__ = [
    "BackupError",
    "backup_cancel",
    "backups_repair",
    "cancel_running",
    "backup_delete",
    "backup_import",
    "backup_import_perform",
    "backup_perform",
    "backup_request",
    "backup_root",
    "backup_verify",
    "config_of",
    "judge_config",
    "restore_perform",
    "restore_request",
    "resume_backup",
    "resume_restore",
    "rotate",
    "run_due_schedules",
    "schedule_set",
    "write_backup",
]
