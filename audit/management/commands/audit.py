"""`manage.py audit verify [--file export.jsonl]` and `manage.py audit export`.

verify        check the trail's hash chain in the database; exit 1 naming the first break
verify --file check an exported JSON Lines file: every event's seal (and HMAC, where the file
              has the chain's positions), its numbering (a missing event is named, with its
              place), and the end digest (complete and unaltered); a CSV export cannot be checked
export        write the trail (or the events the filters select) as JSON Lines or CSV,
              streamed in constant memory, to --output or standard output
"""

import sys

from django.core.management.base import BaseCommand, CommandError

from audit import export
from audit.models import AuditEvent
from audit.selectors import audit_events_filtered
from audit.services import audit_verify_and_record


class _Everyone:
    is_superuser = True
    pk = None


class Command(BaseCommand):
    help = "Audit trail tools: `verify` checks the hash chain (or an exported file), `export` writes it out."

    def add_arguments(self, parser):
        parser.add_argument("verb", choices=["verify", "export"])
        parser.add_argument("--file", help="verify: an exported JSON Lines file to check instead of the database")
        parser.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
        parser.add_argument("--output", help="export: the file to write (default: standard output)")
        for name in ("actor", "sandbox", "team", "action", "since", "until"):
            parser.add_argument(f"--{name}", default="")

    def handle(self, *args, verb, **opts):
        if verb == "export":
            return self._export(opts)
        if opts["file"]:
            return self._verify_file(opts["file"])
        check = audit_verify_and_record()
        if not check.ok:
            raise CommandError(f"The audit chain is broken after {check.events} events: {check.problem}")
        self.stdout.write(self.style.SUCCESS(f"The audit chain is intact: {check.events} events verified."))

    def _verify_file(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                check = export.verify_lines(export.read_lines(f))
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{path} cannot be read: {exc}") from exc
        if not check.ok:
            raise CommandError(f"{path} does not verify (after {check.events} events): {check.problem}")
        head = check.head or {}
        seq, hash_ = int(head.get("seq") or 0), str(head.get("hash") or "")
        current = AuditEvent.objects.filter(seq=seq, hash=hash_).exists() if seq else True
        note = "" if current else " (its chain head is not in this database: it came from another panel, or the trail changed since)"
        what = f"{check.scope or 'every event'}" + (f", filtered by {check.filters}" if check.filters else "")
        self.stdout.write(self.style.SUCCESS(f"{path} is complete and unaltered: {check.events} events verified{note}. It holds {what}."))

    def _export(self, opts) -> None:
        events, applied, problems = audit_events_filtered(user=_Everyone(), params=opts)
        if problems:
            raise CommandError(" ".join(problems))
        from agents.selectors import agent_events_for_audit

        agent = agent_events_for_audit(user=_Everyone(), filters=applied)
        write = export.jsonl_lines if opts["format"] == "jsonl" else export.csv_lines
        lines = write(events, filters=applied, agent_events=agent)
        out = open(opts["output"], "w", encoding="utf-8", newline="") if opts["output"] else sys.stdout  # noqa: SIM115
        try:
            for chunk in lines:
                out.write(chunk)
        finally:
            if out is not sys.stdout:
                out.close()
