"""`manage.py sandbox VERB [NAME]`: the panel's lifecycle from a shell, like manage.sh had.

Actions run in this process (no Celery needed) through the same services as the web panel,
with the same guards, policy and audit trail; the actor is recorded as cli:<unix user>.
"""

import argparse
import getpass
import re
from decimal import Decimal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from sandboxes import engine, policy, services
from sandboxes.models import Sandbox
from sandboxes.services import claims
from teams.models import Team

CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # every control character but tab and newline


def _cpus(text: str) -> Decimal:
    """--cpus as a number; the range is judged by the service, with the form's rules. argparse
    shows the message after "argument --cpus:" (a plain ValueError would show the function's
    name instead)."""
    try:
        return Decimal(text)
    except ArithmeticError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of CPUs: give one such as 1 or 2.5 (from 0.25 to {settings.SANDBOX_MAX_CPUS:g})."
        ) from None


VERBS = ["list", "create", "logs", "reapprove", "backup", "move", "checkpoint", "checkpoints", "rollback", "disk", *Sandbox.Action.values]


class Command(BaseCommand):
    help = "Manage sandboxes: " + ", ".join(VERBS)

    def add_arguments(self, parser):
        parser.add_argument("verb", choices=VERBS)
        parser.add_argument("name", nargs="?")
        parser.add_argument("checkpoint", nargs="?", help="rollback: the checkpoint (its name or number in `checkpoints`)")
        parser.add_argument("--yes", action="store_true", help="destroy without asking")
        parser.add_argument("--image", default=None)
        parser.add_argument("--memory-mb", type=int, default=None)
        parser.add_argument("--cpus", type=_cpus, default=None)
        parser.add_argument("--disk-mb", type=int, default=None, help="disk quota (create, disk)")
        parser.add_argument("--label", default="", help="checkpoint: a label")
        parser.add_argument("--network", choices=[c for c, _ in Sandbox.Network.choices], default="internet")
        parser.add_argument("--allow", action="append", default=[], help="allowlist entry (domain, *.domain or CIDR, :ports); repeatable")
        parser.add_argument("--preset", action="append", default=[], help="allowlist preset: claude-code, github, packages; repeatable")
        parser.add_argument("--writable-root", action="store_true", help="opt out of the read-only root filesystem (less safe)")
        parser.add_argument("--low-ports-and-ping", action="store_true", help="let it listen below port 1024 and ping (less safe)")
        parser.add_argument("--runtime", choices=[c for c, _ in Sandbox.Runtime.choices], default="runc", help="runsc: gVisor")
        parser.add_argument("--team", default="default", help="team slug (create)")
        parser.add_argument(
            "--host", default=None, help="create: the host to run on (default: the one with the most memory left); move: where to"
        )
        parser.add_argument("--host-label", action="append", default=[], help="create: a label the host must have; repeatable")
        parser.add_argument("--tail", type=int, default=200, help="lines of output (logs)")
        parser.add_argument("--raw", action="store_true", help="logs: keep control characters and escape sequences")

    def handle(self, *args, verb, name, checkpoint=None, **opts):
        actor = services.SystemActor(f"cli:{getpass.getuser()}")
        if verb == "list":
            return self._list()
        if not name:
            raise CommandError(f"`sandbox {verb}` needs a sandbox name.")
        if verb == "create":
            return self._create(actor, name, opts)
        sandbox = Sandbox.objects.exclude(status=Sandbox.Status.DESTROYED).filter(name=name).first()
        if sandbox is None:
            raise CommandError(f"No sandbox named {name!r}.")
        if verb == "logs":
            if not sandbox.container_id:
                raise CommandError(f"{name} has no container (it is {sandbox.status}).")
            text = engine.engine_for(sandbox).logs(sandbox.container_id, tail=opts["tail"])
            # The agent wrote this: its escape sequences (a terminal title, the clipboard) must
            # not reach the admin's terminal unless asked for.
            self.stdout.write(text if opts["raw"] else CONTROL.sub("\ufffd", text), ending="")
            return
        if verb == "reapprove":
            return self._reapprove(actor, sandbox)
        if verb == "backup":
            return self._backup(actor, sandbox)
        if verb == "move":
            return self._move(actor, sandbox, opts["host"])
        if verb in ("checkpoint", "checkpoints", "rollback", "disk"):
            return self._storage(actor, sandbox, verb, checkpoint, opts)
        if verb == "destroy" and not opts["yes"]:
            answer = input(f"Destroy {name}, its home volume and every file in {sandbox.workspace_path}? Type the name to confirm: ")
            if answer.strip() != name:
                raise CommandError("Not confirmed; nothing was changed.")
        self._act(actor, sandbox, verb)

    def _list(self):
        rows = Sandbox.objects.exclude(status=Sandbox.Status.DESTROYED).select_related("team")
        self.stdout.write(f"{'NAME':24} {'STATUS':11} {'MEMORY':>8} {'CPUS':>5} {'NETWORK':9} IMAGE")
        for s in rows:
            status = s.status + ("*" if s.pending_action else "")
            self.stdout.write(f"{s.name:24} {status:11} {s.memory_mb:>6}MB {s.cpus:>5} {s.network_mode:9} {s.image}")

    def _create(self, actor, name, opts):
        team = Team.objects.filter(slug=opts["team"]).first()
        if team is None:
            known = ", ".join(Team.objects.order_by("slug").values_list("slug", flat=True))
            raise CommandError(f"No team {opts['team']!r} (teams: {known}). Teams are made by an admin, not by the CLI.")
        # Unset options take the defaults; a given value, even 0, is judged by the same rules as the form's.
        try:
            sandbox = services.sandbox_create(
                actor=actor,
                team=team,
                name=name,
                image=settings.SANDBOX_DEFAULT_IMAGE if opts["image"] is None else opts["image"],
                memory_mb=settings.SANDBOX_DEFAULT_MEMORY_MB if opts["memory_mb"] is None else opts["memory_mb"],
                cpus=Decimal(str(settings.SANDBOX_DEFAULT_CPUS)) if opts["cpus"] is None else opts["cpus"],
                network_mode=opts["network"],
                egress_presets=opts.get("preset") or [],
                egress_allow="\n".join(opts.get("allow") or []),
                writable_root=opts.get("writable_root", False),
                low_ports_and_ping=opts.get("low_ports_and_ping", False),
                runtime=opts.get("runtime", "runc"),
                disk_mb=opts.get("disk_mb"),
                host=opts.get("host") or None,
                host_labels=opts.get("host_label") or [],
                enqueue=False,
            )
        except policy.PolicyViolation as exc:
            raise CommandError("Refused by the security policy:\n  " + "\n  ".join(exc.problems)) from exc
        except services.SandboxError as exc:
            raise CommandError(str(exc)) from exc
        self._finish(sandbox, "start")

    def _reapprove(self, actor, sandbox):
        """Record the folders' identities again after they legitimately changed (see the service)."""
        try:
            changed = services.sandbox_reapprove_folders(actor=actor, sandbox=sandbox)
        except policy.PolicyViolation as exc:
            raise CommandError("Refused by the security policy:\n  " + "\n  ".join(exc.problems)) from exc
        except services.SandboxError as exc:
            raise CommandError(str(exc)) from exc
        for path in changed:
            self.stdout.write(f"re-recorded {path}")
        self.stdout.write(self.style.SUCCESS(f"{sandbox.name}: {len(changed)} folder(s) re-recorded; Start checks them from now on."))

    def _backup(self, actor, sandbox):
        """Back up now, in this process, through the same service as the Back up button (queued on
        its host when that is another machine's: a host agent writes it on its own disk)."""
        from backups import services as backups
        from backups.models import Backup
        from hosts.queues import serves

        here = serves(sandbox.host.name)  # a host agent's sandbox is backed up by that agent, on its own disk
        try:
            backup = backups.backup_request(actor=actor, sandbox=sandbox, enqueue=not here)
        except services.SandboxError as exc:
            raise CommandError(str(exc)) from exc
        if not here:
            self.stdout.write(f"{sandbox.name} is on host {sandbox.host.name}: {backup.file_name} is written there (queued)")
            return
        backups.backup_perform(backup_id=backup.pk)
        backup.refresh_from_db()
        if backup.status != Backup.Status.DONE:
            raise CommandError(f"{sandbox.name}: {backup.detail}")
        self.stdout.write(self.style.SUCCESS(f"{backup.path} ({backup.size_bytes} bytes, {backup.files} entries, sha256 {backup.sha256})"))

    def _move(self, actor, sandbox, host):
        """Move a stopped sandbox to another host, through the same service as the page's form; the
        move runs on the hosts' queues (`sandbox list` shows it busy until it ends)."""
        from sandboxes.services.moves import move_request

        if not host:
            raise CommandError("`sandbox move NAME --host H`: name the host it moves to.")
        try:
            move_request(actor=actor, sandbox=sandbox, target_name=host)
        except services.SandboxError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"{sandbox.name}: moving to host {host} (queued); it starts there at its next start"))

    def _storage(self, actor, sandbox, verb, which, opts):
        """Checkpoints, rollback and the disk quota, through the same services as the page."""
        from storage import selectors
        from storage import services as storage

        try:
            if verb == "checkpoint":
                made = storage.checkpoint_create(actor=actor, sandbox=sandbox, label=opts["label"])
                self.stdout.write(self.style.SUCCESS(f"{sandbox.name}: checkpoint {made.snapshot} taken"))
            elif verb == "checkpoints":
                self.stdout.write(f"{'#':>3} {'CHECKPOINT':26} {'TAKEN':20} {'SIZE':>10}  BY / LABEL")
                for n, row in enumerate(selectors.checkpoints_of(sandbox), 1):
                    size = "?" if row.size is None else f"{row.size / 1048576:.1f}MB"
                    when = row.checkpoint.created_at.strftime("%Y-%m-%d %H:%M:%S")
                    self.stdout.write(
                        f"{n:>3} {row.checkpoint.snapshot:26} {when:20} {size:>10}  {row.checkpoint.created_by_name} {row.checkpoint.label}"
                    )
            elif verb == "rollback":
                target = selectors.find_checkpoint(sandbox, which or "")
                if target is None:
                    raise CommandError(f"{sandbox.name} has no checkpoint {which!r}; `sandbox checkpoints {sandbox.name}` lists them.")
                before = storage.rollback(actor=actor, sandbox=sandbox, checkpoint=target)
                self.stdout.write(
                    self.style.SUCCESS(f"{sandbox.name}: rolled back to {target.snapshot} (the present was kept as {before.snapshot})")
                )
            else:
                if opts.get("disk_mb") is None:
                    raise CommandError("`sandbox disk NAME --disk-mb N` sets the quota.")
                storage.set_disk_quota(actor=actor, sandbox=sandbox, disk_mb=opts["disk_mb"])
                self.stdout.write(self.style.SUCCESS(f"{sandbox.name}: disk quota {opts['disk_mb']} MB"))
        except (services.SandboxError, engine.EngineError, policy.PolicyViolation) as exc:
            raise CommandError(str(exc)) from exc

    def _act(self, actor, sandbox, verb):
        before = sandbox.status
        try:
            services.sandbox_request_action(actor=actor, sandbox=sandbox, action=verb, enqueue=False)
        except services.SandboxError as exc:
            raise CommandError(str(exc)) from exc
        self._finish(sandbox, verb, before)

    def _finish(self, sandbox, verb, before=Sandbox.Status.CREATING):
        """Carry the claimed action out here, or, for a sandbox on a host another machine's agent
        serves (its folders and engine are there), queue it for that agent's worker."""
        from hosts.queues import serves

        host = sandbox.host.name
        if not serves(host):
            with transaction.atomic():
                queued = claims.enqueue(sandbox.pk, verb, before)
            if queued.refused:
                raise CommandError(f"{sandbox.name}: {verb} was not queued: {queued.refused}")
            self.stdout.write(self.style.SUCCESS(f"{sandbox.name}: {verb} queued for host {host}'s agent"))
            return
        services.sandbox_perform(sandbox_id=sandbox.pk, action=verb)
        sandbox.refresh_from_db()
        if sandbox.status == Sandbox.Status.ERROR:
            raise CommandError(f"{sandbox.name}: {sandbox.status_detail}")
        self.stdout.write(self.style.SUCCESS(f"{sandbox.name}: {sandbox.status}"))
