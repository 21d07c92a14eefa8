import pwd
import resource

from django.apps import AppConfig
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def _more_descriptors() -> None:
    """Walks of a sandbox's folders hold a descriptor per level of depth, and live sockets one
    each: every process may use as many as the system lets it (up to 65536)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class SandboxesConfig(AppConfig):
    name = "sandboxes"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.backends.signals import connection_created

        from controlpanel.db import restrict_sqlite_files

        from . import live, policy  # noqa: F401 - live connects the logout receiver

        connection_created.connect(restrict_sqlite_files, dispatch_uid="restrict_sqlite_files")
        from .models import Sandbox
        from .services import moves
        from .services.claims import register_resumer

        register_resumer(Sandbox.Job.MOVE, moves.resume_move)  # a move whose worker died carries on
        _more_descriptors()

        # Every process (web, worker, beat, watcher, CLI) refuses to start with unsafe roots.
        homes = [entry.pw_dir for entry in pwd.getpwall()]
        problems = policy.check_workspace_root(str(settings.WORKSPACE_ROOT), homes=homes)
        from .services.rules import protected_folders

        problems += policy.check_mount_roots(
            [str(r) for r in settings.SANDBOX_MOUNT_ROOTS],
            workspace_root=str(settings.WORKSPACE_ROOT),
            homes=homes,
            protected=protected_folders(),
        )
        if problems:
            raise ImproperlyConfigured(" ".join(problems))
