"""The host's egress rules for the sandbox bridge (see sandboxes.network): show, check, apply
or remove them by hand."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sandboxes import network, services


class Command(BaseCommand):
    help = "Check, apply or remove the egress rules of the sandbox bridge."

    def add_arguments(self, parser):
        parser.add_argument("what", choices=["check", "apply", "remove"])

    def handle(self, *args, what, **opts):
        bridge = settings.SANDBOX_BRIDGE
        try:
            if what == "check":
                wrong = network.problems()
                if wrong:
                    raise CommandError(f"egress rules for {bridge} are not in place: " + "; ".join(wrong))
                self.stdout.write(f"egress rules for {bridge} are in place")
            elif what == "apply":
                found = services.egress_repair() if network.enforced() else []
                if not network.enforced():
                    raise CommandError("SANDBOX_EGRESS_RULES is off: nothing to apply.")
                left = network.problems()
                if left:
                    raise CommandError("; ".join(left))
                self.stdout.write(
                    f"egress rules for {bridge} applied" + (f" (found: {'; '.join(found)})" if found else " (already in place)")
                )
            else:
                # Without its rules the allowlist bridge is the open internet: its sandboxes stop first.
                services.stop_networked(
                    "Stopped: the egress rules were removed by hand (manage.py egress remove).", (settings.SANDBOX_ALLOW_NETWORK,)
                )
                network.remove()
                self.stdout.write(
                    f"egress rules for {bridge} and {settings.SANDBOX_ALLOW_BRIDGE} removed; allowlist sandboxes were stopped, "
                    "and sandboxes on a network will not start until the rules are back"
                )
        except network.EgressError as exc:
            raise CommandError(str(exc)) from exc
