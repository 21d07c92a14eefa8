"""`manage.py database move --to postgres://user:password@host:port/database`: move this panel's
SQLite database into a new, empty PostgreSQL database (controlpanel.dbmove), check the copy and
the audit chain there, and print the DATABASE_URL to configure. Stop the panel first."""

from django.core.management.base import BaseCommand, CommandError

from controlpanel import dbmove


class Command(BaseCommand):
    help = "Move the panel's SQLite database to PostgreSQL: `database move --to postgres://user:password@host:port/database`."

    def add_arguments(self, parser):
        parser.add_argument("verb", choices=["move"])
        parser.add_argument("--to", required=True, metavar="URL", help="the new, empty PostgreSQL database")

    def handle(self, *args, verb, to, **opts):
        if dbmove.redacted(to) != to:
            # Every user of this machine reads a command's arguments (ps, /proc/<pid>/cmdline).
            self.stderr.write(
                "Note: the password in --to is visible in the process list while this runs; leave it out of the URL "
                "and set PGPASSWORD instead (PostgreSQL's client reads it from the environment)."
            )
        try:
            result = dbmove.move(url=to, say=self.stdout.write)
        except dbmove.MoveError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Moved {sum(result.rows.values())} rows of {len(result.rows)} tables; every count matches, "
                f"and the audit chain verifies on PostgreSQL ({result.events} events, then this move's own)."
            )
        )
        self.stdout.write(
            "The SQLite database is untouched. Export this before `make run` (the README's Configuration), "
            "and the panel runs on PostgreSQL:"
        )
        self.stdout.write(f"DATABASE_URL={result.database_url}")
