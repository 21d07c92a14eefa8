"""`manage.py host …`: the host agent's commands.

host queues lifecycle|jobs   the queues this machine's worker of that role reads, comma-separated
                             (the Procfiles' -Q: hosts.queues.worker_queues)
"""

from django.core.management.base import BaseCommand, CommandError

from hosts import queues


class Command(BaseCommand):
    help = "Host agent commands: `host queues lifecycle|jobs`."

    def add_arguments(self, parser):
        verbs = parser.add_subparsers(dest="verb", required=True)
        listing = verbs.add_parser("queues", help="the queues a worker of this machine reads")
        listing.add_argument("role", choices=[queues.LIFECYCLE, queues.JOBS])

    def handle(self, *args, verb, **opts):
        if verb == "queues":
            self.stdout.write(",".join(queues.worker_queues(opts["role"])))
            return
        raise CommandError(f"unknown verb {verb}")
