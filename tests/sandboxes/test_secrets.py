"""Secrets, git identity and SSH key: readable inside the sandbox, and nowhere else in clear:
not in the database, the logs, audit events, exports, backups or an incident's evidence."""

import gzip
import json
import secrets as pysecrets
from io import StringIO

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import call_command

from audit.models import AuditEvent
from backups import services as backup_services
from sandboxes import engine, secrets, services
from sandboxes.models import Identity, Sandbox, Secret
from teams.models import Membership
from tests.support.docker import docker_cli
from tests.support.sandboxes import act

pytestmark = [pytest.mark.docker, pytest.mark.django_db]
ACTOR = services.SystemActor("test")


def inside(sandbox: Sandbox, script: str) -> str:
    return docker_cli("exec", sandbox.container_id, "sh", "-c", script, check=False).stdout.strip()


def test_a_secret_reaches_the_sandbox_and_nothing_else_holds_it(make_sandbox, clean_docker, team, tmp_path, caplog):
    api_key = "sk-ant-" + pysecrets.token_hex(20)
    token = "tok-" + pysecrets.token_hex(20)
    sandbox = make_sandbox("holder")
    secrets.secret_set(actor=ACTOR, sandbox=sandbox, name="ANTHROPIC_API_KEY", value=api_key)
    secrets.secret_set(actor=ACTOR, team=team, name="DEPLOY_TOKEN", value=token, delivery=Secret.Delivery.FILE)
    sandbox = act(sandbox, "restart")
    assert sandbox.status == "running", sandbox.status_detail

    assert inside(sandbox, 'echo "$ANTHROPIC_API_KEY"') == api_key
    assert inside(sandbox, "cat /run/secrets/DEPLOY_TOKEN") == token
    assert inside(sandbox, "stat -c '%a %u' /run/secrets/DEPLOY_TOKEN /run/secrets") == "600 1000\n700 1000".replace("\n", "\n")
    host = json.loads(docker_cli("inspect", "-f", "{{json .HostConfig.Tmpfs}}", sandbox.container_id).stdout)
    assert "noexec" in host["/run/secrets"] and "mode=0700" in host["/run/secrets"]

    def nowhere(text: str, where: str) -> None:
        assert api_key not in text and token not in text, f"a secret is in clear in {where}"

    out = StringIO()
    call_command("dumpdata", stdout=out)  # every row of every table
    nowhere(out.getvalue(), "the database")
    assert Secret.objects.filter(name="ANTHROPIC_API_KEY").get().ciphertext  # stored, sealed
    nowhere(json.dumps(list(AuditEvent.objects.values("action", "target", "details"))), "the audit events")
    assert AuditEvent.objects.filter(action="secret.created", details__name="DEPLOY_TOKEN").exists()
    export = tmp_path / "audit.jsonl"
    call_command("audit", "export", "--output", str(export), stdout=StringIO())
    nowhere(export.read_text(), "the audit export")
    nowhere(caplog.text, "the panel's log")
    nowhere(docker_cli("logs", sandbox.container_id).stdout, "the container's output")

    backup = backup_services.backup_request(actor=ACTOR, sandbox=sandbox, enqueue=False)
    backup_services.backup_perform(backup_id=backup.pk)
    backup.refresh_from_db()
    assert backup.status == "done", backup.detail
    nowhere(gzip.decompress(backup.path.read_bytes()).decode("latin-1"), "the backup")

    # An incident's evidence: the committed image and the saved `docker inspect` hold no value.
    docker = engine.engine_for()
    data = docker.inspect_container(sandbox.container_id)
    given = docker.given_environment(data)
    assert "ANTHROPIC_API_KEY" in given and "PATH" not in given
    image = docker.commit_evidence(
        sandbox.container_id, repository="ccpanel-test-evidence/holder", tag="t", incident="test", clear_env=given
    )
    try:
        nowhere(docker_cli("image", "inspect", image).stdout, "the evidence image")
    finally:
        docker_cli("rmi", "-f", image, check=False)
    from incidents.services import _without_values

    nowhere(json.dumps(_without_values(docker, data)), "the evidence's inspect.json")


def test_rotate_disable_and_delete_take_effect_at_the_next_start(make_sandbox, clean_docker):
    sandbox = make_sandbox("rotator")
    secrets.secret_set(actor=ACTOR, sandbox=sandbox, name="KEY", value="one")
    sandbox = act(sandbox, "restart")
    assert inside(sandbox, 'echo "$KEY"') == "one"
    secret = secrets.secret_set(actor=ACTOR, sandbox=sandbox, name="KEY", value="two")
    assert Secret.objects.filter(sandbox=sandbox).count() == 1
    sandbox = act(sandbox, "restart")
    assert inside(sandbox, 'echo "$KEY"') == "two"
    secrets.secret_enable(actor=ACTOR, secret=secret, enabled=False)
    sandbox = act(sandbox, "restart")
    assert inside(sandbox, 'echo "$KEY"') == ""
    secrets.secret_enable(actor=ACTOR, secret=secret, enabled=True)
    secrets.secret_delete(actor=ACTOR, secret=secret)
    sandbox = act(sandbox, "restart")
    assert inside(sandbox, 'echo "$KEY"') == ""
    actions = list(
        AuditEvent.objects.filter(target="rotator", action__startswith="secret.").order_by("seq").values_list("action", flat=True)
    )
    assert actions == ["secret.created", "secret.rotated", "secret.disabled", "secret.enabled", "secret.deleted"]


def test_git_identity_and_ssh_key(make_sandbox, clean_docker):
    sandbox = make_sandbox("ident")
    secrets.git_identity_set(actor=ACTOR, sandbox=sandbox, name="Agent Smith", email="agent@example.com")
    identity = secrets.ssh_key_regenerate(actor=ACTOR, sandbox=sandbox)
    assert identity.ssh_public.startswith("ssh-ed25519 ") and identity.ssh_public.endswith(" ident@ccpanel")
    sandbox = act(sandbox, "restart")
    assert sandbox.status == "running", sandbox.status_detail
    gitconfig = inside(sandbox, "cat /home/claude/.gitconfig")
    assert "name = Agent Smith" in gitconfig and "email = agent@example.com" in gitconfig
    assert inside(sandbox, "head -1 /run/secrets/id_ed25519") == "-----BEGIN OPENSSH PRIVATE KEY-----"
    assert inside(sandbox, 'echo "$GIT_SSH_COMMAND"') == "ssh -i /run/secrets/id_ed25519 -o IdentitiesOnly=yes"
    old = identity.ssh_public
    identity = secrets.ssh_key_regenerate(actor=ACTOR, sandbox=sandbox)
    assert identity.ssh_public != old
    assert AuditEvent.objects.filter(action="sandbox.ssh_key", target="ident", details__replaced=True).exists()
    sandbox = act(sandbox, "destroy")
    assert Identity.objects.get(sandbox=sandbox).ssh_private == ""  # the private half goes with it


@pytest.mark.parametrize(
    "name, value, delivery, field",
    [
        ("1BAD", "v", "env", "name"),
        ("HAS SPACE", "v", "env", "name"),
        ("PATH", "v", "env", "name"),
        ("OK", "", "env", "value"),
        ("OK", "a\x00b", "env", "value"),
        ("OK", "x" * (64 * 1024 + 1), "env", "value"),
        ("OK", "v", "disk", "delivery"),
    ],
)
def test_bad_secrets_are_refused_and_change_nothing(name, value, delivery, field, make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("refuser")
    with pytest.raises(services.InvalidInput) as caught:
        secrets.secret_set(actor=ACTOR, sandbox=sandbox, name=name, value=value, delivery=delivery)
    assert field in caught.value.errors
    assert not Secret.objects.exists()


def test_only_team_admins_set_team_secrets_and_pages_never_show_values(
    client, team, django_user_model, make_sandbox, fake_engine, clean_workspace
):
    operator = django_user_model.objects.create_user("op", password="pw-op-12345")
    Membership.objects.create(user=operator, team=team, role="operator")
    with pytest.raises(PermissionDenied):
        secrets.secret_set(actor=operator, team=team, name="T", value="v")
    sandbox = make_sandbox("paged")
    client.force_login(operator)
    value = "v-" + pysecrets.token_hex(16)
    response = client.post(f"/sandboxes/{sandbox.pk}/secrets/", {"op": "set", "name": "MINE", "value": value, "delivery": "file"})
    assert response.status_code == 302
    page = client.get(f"/sandboxes/{sandbox.pk}/secrets/").content.decode()
    assert "MINE" in page and value not in page
    assert client.post(f"/teams/{team.slug}/secrets/", {"op": "set", "name": "T", "value": "v"}).status_code == 403
    response = client.post(f"/sandboxes/{sandbox.pk}/secrets/", {"op": "set", "name": "PATH", "value": "x"}, follow=True)
    assert "set by the panel" in response.content.decode()
    assert list(Secret.objects.values_list("name", flat=True)) == ["MINE"]


def test_a_sandboxs_disabled_secret_holds_back_the_teams_of_that_name_even_once_rotated(make_sandbox, clean_docker, team):
    sandbox = make_sandbox("held-back")
    secrets.secret_set(actor=ACTOR, team=team, name="API", value="TEAMVAL")
    own = secrets.secret_set(actor=ACTOR, sandbox=sandbox, name="API", value="MINE")
    secrets.secret_enable(actor=ACTOR, secret=own, enabled=False)
    secrets.secret_set(actor=ACTOR, sandbox=sandbox, name="API", value="MINE2")  # rotated, still disabled
    assert not Secret.objects.get(pk=own.pk).enabled
    sandbox = act(sandbox, "restart")
    assert inside(sandbox, 'echo "[$API]"') == "[]"


def test_a_broken_gitconfig_never_blocks_a_start(make_sandbox, clean_docker):
    sandbox = make_sandbox("gitconfig")
    secrets.git_identity_set(actor=ACTOR, sandbox=sandbox, name="Agent", email="agent@example.com")
    sandbox = act(sandbox, "restart")
    docker_cli("exec", sandbox.container_id, "sh", "-c", "printf 'garbage [[[\\n' > /home/claude/.gitconfig")
    sandbox = act(sandbox, "restart")
    assert sandbox.status == "running", sandbox.status_detail
    assert inside(sandbox, 'echo "$GIT_AUTHOR_NAME <$GIT_COMMITTER_EMAIL>"') == "Agent <agent@example.com>"


def test_a_malformed_secret_id_is_a_404(make_sandbox, clean_docker, client, admin_user):
    sandbox = make_sandbox("bad-id")
    client.force_login(admin_user)
    assert client.post(f"/sandboxes/{sandbox.pk}/secrets/", {"op": "disable", "secret": "abc"}).status_code == 404


def test_a_secret_may_not_take_the_name_of_the_ssh_keys_file(make_sandbox, clean_docker):
    sandbox = make_sandbox("key-name")
    with pytest.raises(services.InvalidInput):
        secrets.secret_set(actor=ACTOR, sandbox=sandbox, name="ID_ED25519", value="x", delivery="file")


def test_a_sandbox_holds_at_most_max_secrets(make_sandbox, clean_docker):
    sandbox = make_sandbox("capped")
    for n in range(secrets.MAX_SECRETS):
        secrets.secret_set(actor=ACTOR, sandbox=sandbox, name=f"S{n}", value="v")
    with pytest.raises(services.InvalidInput, match="At most"):
        secrets.secret_set(actor=ACTOR, sandbox=sandbox, name="ONE_TOO_MANY", value="v")


def test_a_vault_key_file_shorter_than_32_bytes_is_refused(settings, tmp_path):
    short = tmp_path / "short_key"
    short.write_text("   \n")
    short.chmod(0o600)
    settings.SECRETS_KEY_FILE = str(short)
    with pytest.raises(secrets.VaultError, match="at least 32"):
        secrets.seal("x")
