"""Backups, restores, file transfer and incident evidence: where they go and their limits."""

import os
from pathlib import Path

from .env import env_int

# Where backup archives go (<name>-YYYYMMDD-HHMMSS.tar.gz), 0700. Never inside the workspace root
# or a mount root, so that no sandbox can read another's backups (checked at start-up).
BACKUP_ROOT = Path(os.path.expanduser(os.environ.get("BACKUP_ROOT", "").strip() or "~/ClaudeCodeBackups")).resolve()
# Evidence archives of incidents: never removed by Clean, Destroy or rotation.
EVIDENCE_ROOT = Path(os.path.expanduser(os.environ.get("EVIDENCE_ROOT", "").strip() or str(BACKUP_ROOT / "evidence"))).resolve()
# gzip level of backups (the level `tar czf` uses by default); blocks that do not compress are stored.
BACKUP_COMPRESSION_LEVEL = env_int("BACKUP_COMPRESSION_LEVEL", 6, minimum=0)
# An incident's evidence is taken at gzip level 1: while a sandbox is frozen, time matters more
# than a smaller file (about 3x faster than level 6 on source code, 20% larger).
INCIDENT_COMPRESSION_LEVEL = env_int("INCIDENT_COMPRESSION_LEVEL", 1, minimum=0)
# A restore refuses an archive with more members or more bytes than these.
RESTORE_MAX_MEMBERS = env_int("RESTORE_MAX_MEMBERS", 2_000_000, minimum=1)
RESTORE_MAX_BYTES = env_int("RESTORE_MAX_BYTES", 200 * 1024**3, minimum=1)
# A restore stops before changing anything if less than this is left free after extracting.
RESTORE_MIN_FREE_BYTES = env_int("RESTORE_MIN_FREE_BYTES", 512 * 1024**2, minimum=0)
# The largest file an upload into imports/ (or of a backup archive) may be.
TRANSFER_MAX_UPLOAD_BYTES = env_int("TRANSFER_MAX_UPLOAD_BYTES", 1024**3, minimum=1)
BACKUP_IMPORT_MAX_BYTES = env_int("BACKUP_IMPORT_MAX_BYTES", 50 * 1024**3, minimum=1)
# Every backup stops (failed, with the reason) past this much data read or this long; a sandbox
# that needs more gets a larger cap from its admin, not an endless job.
BACKUP_MAX_BYTES = env_int("BACKUP_MAX_BYTES", 500 * 1024**3, minimum=1)
BACKUP_MAX_SECONDS = env_int("BACKUP_MAX_SECONDS", 6 * 3600, minimum=1)
# Read at most this many MB a second (0: as fast as the disk goes), so that a backup leaves the
# disk to the sandboxes.
BACKUP_MAX_MBPS = env_int("BACKUP_MAX_MBPS", 0, minimum=0)
