"""`manage.py audit verify`: check the audit trail's hash chain; exit 1 naming the first break."""

from django.core.management.base import BaseCommand, CommandError

from audit.services import audit_verify_and_record


class Command(BaseCommand):
    help = "Audit trail tools: `verify` checks the hash chain and names the first broken event."

    def add_arguments(self, parser):
        parser.add_argument("verb", choices=["verify"])

    def handle(self, *args, verb, **opts):
        check = audit_verify_and_record()
        if not check.ok:
            raise CommandError(f"The audit chain is broken after {check.events} events: {check.problem}")
        self.stdout.write(self.style.SUCCESS(f"The audit chain is intact: {check.events} events verified."))
