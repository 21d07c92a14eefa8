"""`manage.py host …`: joining this machine to a panel as a host, and running its agent.

host join TOKEN [--docker-url URL]  on the new machine: check the token (from the Hosts page;
                                    "-" reads it from standard input), make the host in the
                                    panel's database, write var/host.env (hosts.join)
host agent [--procfile Procfile.host]
                                    run the host's workers (its own queues only), events
                                    watcher and heartbeat, with var/host.env's settings,
                                    under scripts/supervise.py (`make agent`)
host queues lifecycle|jobs|webhooks the queues this machine's worker of that role reads,
                                    comma-separated (the Procfiles' -Q: hosts.queues)
"""

import os
import sys
from pathlib import Path

import dj_database_url
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from hosts import join, queues

ROOT = Path(settings.BASE_DIR)


def use_database(url: str) -> None:
    """Point this process's default database at `url` (the panel's, from the token) instead of
    the one its settings name (none yet, on a new machine)."""
    configured = connections.configure_settings({DEFAULT_DB_ALIAS: dj_database_url.parse(url)})
    connections[DEFAULT_DB_ALIAS].close()
    connections.settings[DEFAULT_DB_ALIAS] = configured[DEFAULT_DB_ALIAS]
    settings.DATABASES[DEFAULT_DB_ALIAS] = configured[DEFAULT_DB_ALIAS]
    del connections[DEFAULT_DB_ALIAS]


def _pasted() -> str:
    """The token from standard input: one line (pasted, then Enter), so that it never is on a
    command line, where the passwords and keys it carries would stay in the shell's history."""
    if sys.stdin.isatty():
        sys.stderr.write("Paste the join token from the Hosts page, then press Enter: ")
        sys.stderr.flush()
    return sys.stdin.readline()


class Command(BaseCommand):
    help = "Host agent commands: `host join TOKEN`, `host agent`, `host queues lifecycle|jobs`."

    def add_arguments(self, parser):
        verbs = parser.add_subparsers(dest="verb", required=True)
        joining = verbs.add_parser("join", help="join this machine to a panel as the host its token names")
        joining.add_argument("token", help='the join token from the Hosts page ("-": read from standard input, out of the history)')
        joining.add_argument("--docker-url", default="", help="this machine's Docker engine (blank: its default socket)")
        joining.add_argument(
            "--panel-url",
            default="",
            help="tcp://ADDRESS:PORT: this engine's TLS endpoint as the panel reaches it (its pages' logs, stats and terminals)",
        )
        agent = verbs.add_parser("agent", help="run this host's agent (its workers, events watcher and heartbeat)")
        agent.add_argument("--procfile", default=str(ROOT / "Procfile.host"))
        listing = verbs.add_parser("queues", help="the queues a worker of this machine reads")
        listing.add_argument("role", choices=[queues.LIFECYCLE, queues.JOBS, queues.WEBHOOKS])

    def handle(self, *args, verb, **opts):
        if verb == "queues":
            try:
                self.stdout.write(",".join(queues.worker_queues(opts["role"])))
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        elif verb == "join":
            self.join(opts["token"], opts["docker_url"], opts["panel_url"])
        elif verb == "agent":
            self.agent(Path(opts["procfile"]))

    def join(self, text: str, docker_url: str, panel_url: str) -> None:
        from hosts.services import docker_url_errors, panel_url_errors

        if problems := docker_url_errors(docker_url):
            raise CommandError(f"--docker-url: {' '.join(problems)}")
        if problems := panel_url_errors(panel_url):
            raise CommandError(f"--panel-url: {' '.join(problems)}")
        try:
            payload = join.decode(_pasted() if text == "-" else text)
            database = payload["database"]
            if dj_database_url.parse(database)["ENGINE"] == "django.db.backends.sqlite3":
                raise join.JoinError(join.SQLITE_REFUSED)
            use_database(database)
            made = join.install_keys(payload)  # before the join's audit event, which is chained with the panel's key
            try:
                host = join.host_join(payload=payload, docker_url=docker_url, panel_url=panel_url)
            except BaseException:
                for path in made:
                    path.unlink(missing_ok=True)
                raise
            path = Path(settings.PANEL_AGENT_ENV_FILE)
            join.write_env_file(path, join.agent_environment(payload))
        except join.JoinError as exc:
            raise CommandError(str(exc)) from exc
        except ValueError as exc:  # dj_database_url: a URL it cannot read
            raise CommandError(f"The token's database URL cannot be read ({exc}).") from exc
        self.stdout.write(self.style.SUCCESS(f"This machine joined the panel as host {host.name}."))
        self.stdout.write(f"Its settings are in {path} (0600). Start its agent with `make agent` (or `manage.py host agent`).")

    def agent(self, procfile: Path) -> None:
        path = Path(settings.PANEL_AGENT_ENV_FILE)
        if not path.is_file():
            raise CommandError(
                f"{path} does not exist: join this machine first (`manage.py host join TOKEN`, the token from the Hosts page)."
            )
        if not procfile.is_file():
            raise CommandError(f"{procfile} does not exist.")
        values = join.read_env_file(path)
        if not values.get("PANEL_HOST") or values.get("PANEL_HOST_AGENT") != "true":
            raise CommandError(f"{path} names no host: join this machine again (`manage.py host join TOKEN`).")
        env = {**os.environ, **values, "PANEL_AGENT_SUPERVISOR_PID": str(os.getpid())}  # the same pid after exec
        supervise = [sys.executable, str(ROOT / "scripts" / "supervise.py"), "--procfile", str(procfile)]
        supervise += ["--var", str(Path(settings.VAR_DIR) / f"agent-{values['PANEL_HOST']}")]
        self.stdout.write(f"Starting the agent of host {values['PANEL_HOST']} ({procfile.name}).")
        self.stdout.flush()
        os.chdir(ROOT)
        os.execve(sys.executable, supervise, env)  # noqa: S606 - the supervisor takes this process over (its pid, named above)
