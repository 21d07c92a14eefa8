from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class BackupsConfig(AppConfig):
    name = "backups"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from sandboxes import policy
        from sandboxes.models import Sandbox
        from sandboxes.services.claims import register_canceller, register_repairer, register_resumer

        from . import services

        register_resumer(Sandbox.Job.BACKUP, services.resume_backup)
        register_resumer(Sandbox.Job.RESTORE, services.resume_restore)
        register_canceller(services.cancel_running)
        register_repairer(services.backups_repair)
        # Archives hold everything a sandbox had: no sandbox may ever reach them.
        reachable = [settings.WORKSPACE_ROOT, *settings.SANDBOX_MOUNT_ROOTS]
        for name in ("BACKUP_ROOT", "EVIDENCE_ROOT"):
            root = str(getattr(settings, name))
            for other in map(str, reachable):
                if policy.overlaps(root, other):
                    raise ImproperlyConfigured(f"{name}={root} overlaps {other}, which sandboxes can reach; put backups elsewhere.")
