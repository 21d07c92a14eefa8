"""The migrations that bring in hosts: an existing sandbox ends up on "local", made from the
settings and this machine; and back again (reversible)."""

import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("sandboxes", "0016_denial_sandbox_newest"), ("hosts", None)]
AFTER = [("sandboxes", "0019_sandbox_host_required"), ("hosts", "0002_local_host")]


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state([t for t in targets if t[1] is not None]).apps


def test_an_existing_sandbox_ends_up_on_local_and_the_migrations_reverse():
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    try:
        old = migrate(BEFORE)
        assert "hosts_host" not in connection.introspection.table_names()
        team = old.get_model("teams", "Team").objects.create(slug="old-team", name="Old team")
        sandbox = old.get_model("sandboxes", "Sandbox").objects.create(
            name="from-before", uuid=uuid.uuid4(), team=team, image="img", memory_mb=256, cpus=1, pids_limit=64, status="stopped"
        )
        new = migrate(AFTER)
        local = new.get_model("hosts", "Host").objects.get()
        assert (local.name, local.docker_url, local.enabled, local.draining, local.labels) == ("local", "", True, False, [])
        assert local.cpus >= 1 and local.memory_mb > 0
        assert new.get_model("sandboxes", "Sandbox").objects.get(pk=sandbox.pk).host_id == local.pk
        migrate(BEFORE)  # reversible: the column and the table go, the sandbox stays
        assert "hosts_host" not in connection.introspection.table_names()
        assert old.get_model("sandboxes", "Sandbox").objects.filter(pk=sandbox.pk).exists()
    finally:
        migrate(latest)
