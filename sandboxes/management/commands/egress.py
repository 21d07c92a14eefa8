"""The host's egress rules for the sandbox bridge (see sandboxes.network): show, check, apply
or remove them by hand."""

from django.core.management.base import BaseCommand, CommandError

from sandboxes import network, services


class Command(BaseCommand):
    help = "Check, apply or remove the egress rules of the sandbox bridge."

    def add_arguments(self, parser):
        parser.add_argument("what", choices=["check", "apply", "remove"])

    def handle(self, *args, what, **opts):
        bridge, allow = network.internet_bridge().bridge, network.allowlist_bridge()
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
                services.stop_networked("Stopped: the egress rules were removed by hand (manage.py egress remove).", (allow.network,))
                network.remove()
                self.stdout.write(
                    f"egress rules for {bridge} and {allow.bridge} removed; allowlist sandboxes were stopped, "
                    "and sandboxes on a network will not start until the rules are back"
                )
        except network.EgressError as exc:
            raise CommandError(str(exc)) from exc
