"""`manage.py pool ensure|status|grow`: the storage pool that holds the sandboxes' data
(storage.pool). `make run` runs `pool ensure` before it serves the panel."""

from django.core.management.base import BaseCommand, CommandError

from storage import pool


class Command(BaseCommand):
    help = (
        "The storage pool: make and mount it (ensure), show it (status), grow it (grow --size-mb N), move plain folders into it (migrate)."
    )

    def add_arguments(self, parser):
        parser.add_argument("what", choices=["ensure", "status", "grow", "migrate"])
        parser.add_argument("--size-mb", type=int, default=None, help="grow: the pool's new size")

    def handle(self, *args, what, size_mb=None, **opts):
        try:
            if what == "ensure":
                self.stdout.write(pool.ensure())
            elif what == "migrate":
                from storage import migrate

                moved = migrate.migrate(say=self.stdout.write)
                self.stdout.write(self.style.SUCCESS(f"moved into the pool: {', '.join(moved) or 'nothing to move'}"))
            elif what == "grow":
                if not size_mb:
                    raise CommandError("`pool grow --size-mb N` names the new size.")
                self.stdout.write(pool.grow(size_mb))
        except pool.PoolError as exc:
            raise CommandError(str(exc)) from exc
        except Exception as exc:
            from storage.migrate import MigrateError

            if isinstance(exc, MigrateError):
                raise CommandError(str(exc)) from exc
            raise
        info = pool.status()
        if not info["mounted"]:
            self.stdout.write(f"storage pool: none at {info['root']} (plain folders, no disk quota)")
            return
        mode = {"squota": "simple quotas", "qgroup": "full qgroups"}.get(pool.quota_mode(), "no quotas")
        self.stdout.write(
            f"storage pool at {info['root']}: {info['size'] / 1024**3:.1f} GiB, {info['free'] / 1024**3:.1f} GiB free, "
            f"{mode}, mounted {','.join(info['options'])}" + (f", file {info['file']}" if info.get("file") else "")
        )
