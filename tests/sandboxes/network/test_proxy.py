"""The credential proxy from inside real sandboxes: the key reaches only the bound host, the
sandbox holds only a placeholder, TLS is intercepted only where it must be, and HTTP rules and
the allowlist are enforced; every decision is in the decision log.

The "internet" namespace (helpers.internet) serves names (helpers.upstream_dns) and a stand-in
HTTPS service with a CA of the test's own (standin.py) that echoes the headers it received.
"""

import base64
import json
import subprocess
import time

import pytest
from cryptography import x509
from django.conf import settings

from sandboxes import network
from sandboxes import secrets as vault_secrets
from sandboxes.models import EgressDenial, Sandbox
from sandboxes.network import proxy_ca
from tests.sandboxes.network import standin
from tests.sandboxes.network.helpers import ACTOR
from tests.support.docker import docker_cli
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]
IMAGE = "ccpanel/claude-code:latest"  # it has python3, the client below
KEY = "sk-real-key-0123456789-proxy-test"

# The client inside the sandbox: one HTTPS request, through the proxy (HTTPS_PROXY) or straight
# to an address; prints what came back as JSON, and the certificate the sandbox was shown.
CLIENT = r"""
import base64, http.client, json, os, ssl, sys, urllib.parse
a = json.loads(sys.argv[1])
u = urllib.parse.urlsplit(a["url"])
ctx = ssl.create_default_context()
if a.get("insecure"):
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
headers = {k: os.environ[v[1:]] if v.startswith("$") else v for k, v in a.get("headers", {}).items()}
out = {}
try:
    if "connect_to" in a:
        c = http.client.HTTPSConnection(a["connect_to"], u.port or 443, context=ctx, timeout=10)
        headers["Host"] = u.hostname
    else:
        p = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
        c = http.client.HTTPSConnection(p.hostname, p.port, context=ctx, timeout=10)
        c.set_tunnel(u.hostname, u.port or 443)
    c.request(a.get("method", "GET"), u.path or "/", headers=headers)
    r = c.getresponse()
    out = {"status": r.status, "body": r.read().decode("utf-8", "replace")}
    out["cert"] = base64.b64encode(c.sock.getpeercert(binary_form=True)).decode()
except Exception as e:
    out = {"error": repr(e)}
print(json.dumps(out))
"""


def ask(sandbox: Sandbox, url: str, **kwargs) -> dict:
    done = docker_cli("exec", sandbox.container_id, "python3", "-c", CLIENT, json.dumps({"url": url, **kwargs}), check=False)
    lines = done.stdout.strip().splitlines()
    assert lines, done.stderr
    return json.loads(lines[-1])


def issuer(answer: dict) -> str:
    cert = x509.load_der_x509_certificate(base64.b64decode(answer["cert"]))
    return cert.issuer.rfc4514_string()


def echoed(answer: dict) -> dict:
    assert answer.get("status") == 200, answer
    return json.loads(answer["body"])["headers"]


def test_the_key_reaches_only_the_bound_host_and_the_sandbox_holds_a_placeholder(make_sandbox, clean_docker, credential_proxy, team):
    inet = credential_proxy["internet"]
    vault_secrets.secret_set(
        actor=ACTOR, team=team, name="API_KEY", value=KEY, delivery="proxy", hosts="bound.example.test", header="x-api-key"
    )
    vault_secrets.secret_set(actor=ACTOR, team=team, name="FORGE", value=KEY + "-forge", delivery="proxy", hosts="*.forge.example.test",
                             header="Authorization: Bearer")  # fmt: skip
    s = make_sandbox("proxy-inject", image=IMAGE, memory_mb=512)
    assert s.status == "running", s.status_detail
    # The sandbox holds the placeholder only: in its container's environment and its processes'.
    env = json.loads(docker_cli("inspect", "-f", "{{json .Config.Env}}", s.container_id).stdout)
    placeholder = next(e.split("=", 1)[1] for e in env if e.startswith("API_KEY="))
    assert placeholder.startswith("ccp-placeholder-") and KEY not in json.dumps(env)
    environ = docker_cli("exec", s.container_id, "cat", "/proc/1/environ").stdout
    assert placeholder in environ and KEY not in environ
    assert f"HTTPS_PROXY={proxy_ca.address('internet')}" in env
    # The CA is root's, read-only for the sandbox's user, and in the bundle it trusts.
    listing = docker_cli("exec", s.container_id, "ls", "-ln", proxy_ca.DIR_IN_SANDBOX).stdout
    assert " 0 0 " in listing and "ca.pem" in listing and "bundle.pem" in listing, listing
    assert docker_cli("exec", s.container_id, "sh", "-c", f"echo x > {proxy_ca.CA_FILE}", check=False).returncode != 0
    # (a) Through the proxy, the bound host receives the real value (its certificate is the panel CA's).
    answer = ask(s, "https://bound.example.test/v1/messages", headers={"x-api-key": "$API_KEY"})
    assert echoed(answer)["x-api-key"] == KEY
    assert "mitmproxy" in issuer(answer)
    # Node (Claude Code's runtime) goes through the proxy and trusts the CA as it stands.
    script = "fetch('https://bound.example.test/').then(r => r.json()).then(b => console.log(b.headers['x-api-key']))"
    node = docker_cli("exec", s.container_id, "node", "-e", script, check=False)
    assert node.stdout.strip() == KEY, node.stdout + node.stderr
    # git over HTTPS too (libcurl: https_proxy, GIT_SSL_CAINFO); the stand-in is no git server,
    # but the injected request is in the decision log, with its path.
    docker_cli("exec", s.container_id, "git", "ls-remote", "https://bound.example.test/org/repo.git", check=False)
    wait_for(lambda: EgressDenial.objects.filter(sandbox=s, path="/org/repo.git/info/refs", reason="injected API_KEY").exists(),
             timeout=5, what="git's request injected")  # fmt: skip
    # (b) A host bound by no secret is not intercepted: the sandbox sees the host's own certificate.
    answer = ask(s, "https://other.example.test/", headers={"x-api-key": "$API_KEY"}, insecure=True)
    assert standin.CA_NAME in issuer(answer)
    # (d) ... and the placeholder sent there arrives as the placeholder.
    assert echoed(answer)["x-api-key"] == placeholder
    # (c) A bypass of the proxy (straight to the address) carries only the placeholder.
    answer = ask(s, "https://bound.example.test/", connect_to=inet, headers={"x-api-key": "$API_KEY"}, insecure=True)
    assert echoed(answer)["x-api-key"] == placeholder
    # Every decision is in the log, the secret by name, its value nowhere.
    wait_for(lambda: EgressDenial.objects.filter(sandbox=s, kind="proxy", allowed=True, reason__contains="API_KEY").exists(),
             timeout=5, what="the injection logged")  # fmt: skip
    connect = EgressDenial.objects.filter(sandbox=s, kind="proxy", method="CONNECT", name="other.example.test", allowed=True)
    wait_for(connect.exists, timeout=5, what="the passed-through CONNECT logged")
    rows = list(EgressDenial.objects.filter(sandbox=s).values())
    assert KEY not in json.dumps(rows, default=str)
    # A host's own address, the host and a private range are refused (internet mode).
    for target in (proxy_ca.address("internet").split("//")[1].split(":")[0], "10.1.2.3", "127.0.0.1"):
        assert "403" in ask(s, f"https://{target}/").get("error", ""), target


def test_http_rules_and_the_allowlist_are_enforced_by_the_proxy(make_sandbox, clean_docker, credential_proxy, team):
    allow = "ruled.example.test GET /allowed/*\nbound.example.test"
    vault_secrets.secret_set(
        actor=ACTOR, team=team, name="API_KEY", value=KEY, delivery="proxy", hosts="bound.example.test", header="x-api-key"
    )
    s = make_sandbox("proxy-rules", image=IMAGE, memory_mb=512, network_mode="allowlist", egress_allow=allow)
    assert s.status == "running", s.status_detail
    # (e) A permitted method and path pass; a forbidden path or method gets 403 from the proxy.
    assert json.loads(ask(s, "https://ruled.example.test/allowed/x")["body"])["line"] == "GET /allowed/x HTTP/1.1"
    refused = ask(s, "https://ruled.example.test/secret/x")
    assert refused["status"] == 403 and "not allowed by the sandbox's list" in refused["body"]
    assert ask(s, "https://ruled.example.test/allowed/x", method="DELETE")["status"] == 403
    wait_for(lambda: EgressDenial.objects.filter(sandbox=s, kind="http", allowed=False, path="/secret/x").exists(),
             timeout=5, what="the HTTP rule's refusal logged")  # fmt: skip
    # The ruled name is not granted by the resolver: only the proxy reaches it.
    assert not [g for g in network.grants() if g.comment == "ruled.example.test"]
    # Injection works in allowlist mode too, for a listed bound host.
    assert echoed(ask(s, "https://bound.example.test/", headers={"x-api-key": "$API_KEY"}))["x-api-key"] == KEY
    # (f) An unlisted name is refused at CONNECT, and logged as the proxy's refusal.
    assert "403" in ask(s, "https://unlisted.example.test/")["error"]
    wait_for(lambda: EgressDenial.objects.filter(sandbox=s, kind="proxy", allowed=False, name="unlisted.example.test").exists(),
             timeout=5, what="the CONNECT refusal logged")  # fmt: skip
    assert "403" in ask(s, "https://bound.example.test:8443/")["error"]  # an unlisted port of a listed name


PROBE = (
    "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5);"
    "s.sendall(b'CONNECT a.test:443 HTTP/1.1\\r\\n\\r\\n'); import time; time.sleep(0.5); print(s.recv(400))"
)


def test_a_client_that_is_no_sandbox_is_refused(credential_proxy):
    gateway = network.internet_bridge().gateway
    out = subprocess.run(["python3", "-c", PROBE, gateway, str(settings.SANDBOX_PROXY_PORT)], capture_output=True, text=True, timeout=20)
    assert "403" in out.stdout and "only the panel's sandboxes" in out.stdout, out
    time.sleep(0.6)
    assert not EgressDenial.objects.exists()


def test_a_proxied_sandbox_starts_only_beside_the_panels_proxy_and_stops_for_an_impostor(
    make_sandbox, clean_docker, credential_proxy, settings
):
    from audit.models import AuditEvent
    from sandboxes import services
    from tests.sandboxes.network.test_proxy_rules import _Impostor

    s = make_sandbox("proxy-gated", image=IMAGE, memory_mb=512)
    assert s.status == "running", s.status_detail
    # With the panel's proxy gone and something else on its port, the periodic check stops it.
    credential_proxy["proxy"].stop()
    impostor = _Impostor(network.internet_bridge().gateway, settings.SANDBOX_PROXY_PORT)
    try:
        services.proxy_check()
        s = Sandbox.objects.get(pk=s.pk)
        assert s.status != "running" and "something other than the panel's credential proxy" in s.status_detail, s.status_detail
        assert AuditEvent.objects.filter(action="egress.proxy_impostor").exists()
        # ... and a start is refused, saying why.
        s = make_sandbox("proxy-refused", image=IMAGE, memory_mb=512)
        assert s.status == "error" and "something other than the panel's credential proxy" in s.status_detail, s.status_detail
    finally:
        impostor.close()
    s = make_sandbox("proxy-absent", image=IMAGE, memory_mb=512)
    assert s.status == "error" and "does not answer" in s.status_detail, s.status_detail
