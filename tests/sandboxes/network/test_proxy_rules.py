"""The credential proxy's pure parts, without Docker: HTTP rules in the allowlist, proxy secrets
(their checks, the placeholder, the bindings), the rule that lets a sandbox reach the proxy, and
the proxy's judgement and decision rows."""

import asyncio

import pytest

from audit.models import AuditEvent
from sandboxes import network, secrets, services
from sandboxes.models import EgressDenial, Secret
from sandboxes.network import allowlist, proxy, proxy_ca

ACTOR = services.SystemActor("test")
KEY = "sk-fast-tier-secret-value-42"


def test_http_rules_follow_a_name_and_the_old_syntax_still_works():
    entries, errors = allowlist.parse("github.com GET,POST /myorg/*\napi.example.com:8443 registry.npmjs.org\n198.51.100.0/24")
    assert not errors
    ruled = entries[0]
    assert (ruled.text, ruled.ports, ruled.methods, ruled.path, ruled.ruled) == ("github.com", (443,), ("GET", "POST"), "/myorg/*", True)
    assert [(e.text, e.ports, e.ruled) for e in entries[1:]] == [
        ("api.example.com", (8443,), False),
        ("registry.npmjs.org", (443,), False),
        ("198.51.100.0/24", (443,), False),
    ]
    assert entries[3].network is not None
    assert allowlist.http_verdict("github.com", "GET", "/myorg/repo.git/info/refs", entries) is True
    assert allowlist.http_verdict("github.com", "POST", "/myorg/x", entries) is True
    assert allowlist.http_verdict("github.com", "GET", "/other/x", entries) is False
    assert allowlist.http_verdict("github.com", "DELETE", "/myorg/x", entries) is False
    assert allowlist.http_verdict("api.example.com", "DELETE", "/", entries) is None  # no rules: nothing to judge
    assert [e.text for e in allowlist.direct(entries)] == ["api.example.com", "registry.npmjs.org", "198.51.100.0/24"]
    # A path alone, methods alone; a plain entry of the same name allows everything.
    only_path, _ = allowlist.parse("a.example.com /v1/*")
    assert allowlist.http_verdict("a.example.com", "PUT", "/v1/x", only_path) and not allowlist.http_verdict(
        "a.example.com", "GET", "/", only_path
    )
    both, _ = allowlist.parse("a.example.com GET\na.example.com")
    assert allowlist.http_verdict("a.example.com", "DELETE", "/", both) is True


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("GET github.com", "follow a name"),
        ("198.51.100.0/24 GET", "follow a name"),
        ("github.com PUSH", "not an HTTP method"),
        ("github.com GET POST", "one list of methods and one path"),
        ("github.com /a /b", "one list of methods and one path"),
        ("github.com /a\x7fb", "a URL path"),
    ],
)
def test_bad_http_rules_are_refused_in_words_and_the_entry_is_dropped(text, why):
    entries, errors = allowlist.parse(text)
    assert errors and why in errors[0], errors
    if text.startswith("github.com"):
        assert not [e for e in entries if e.name == "github.com"]  # never an entry wider than written


def test_the_bridges_input_chain_lets_a_sandbox_reach_the_proxy_port_only():
    c = network.chains("ccpunit0")
    rules = network.wanted_rules(c, ["10.1.2.3"], [*network.BLOCKED_RANGES], panel_dns="172.31.1.1", proxy="172.31.0.1:3128")
    assert rules[c.input][2] == "-A CCP-I-ccpunit0 -d 172.31.0.1/32 -p tcp -m tcp --dport 3128 -j RETURN"
    assert rules[c.input][-1] == "-A CCP-I-ccpunit0 -j CCP-D-ccpunit0"
    a = network.allow_chains()
    allow = network.wanted_allow_rules(a, "172.31.1.1", [*network.BLOCKED_RANGES], proxy="172.31.1.1:3128")
    assert f"-A {a.input} -d 172.31.1.1/32 -p tcp -m tcp --dport 3128 -j RETURN" in allow[a.input]


def test_a_sandbox_is_pointed_at_the_proxy_in_internet_and_allowlist_mode_only(settings):
    settings.SANDBOX_PROXY = True
    env = proxy_ca.environment("internet")
    assert env["HTTPS_PROXY"] == f"http://{network.internet_bridge().gateway}:{settings.SANDBOX_PROXY_PORT}" == env["http_proxy"]
    assert env["NODE_EXTRA_CA_CERTS"] == "/run/ccpanel/ca.pem" and env["SSL_CERT_FILE"] == "/run/ccpanel/bundle.pem"
    assert proxy_ca.environment("allowlist")["HTTPS_PROXY"].startswith(f"http://{network.allow_gateway()}:")
    assert proxy_ca.environment("none") == {}
    settings.SANDBOX_PROXY = False
    assert proxy_ca.environment("internet") == {}


def test_the_ca_is_made_once_with_its_key_private(settings, tmp_path):
    settings.SANDBOX_PROXY_CA_DIR = str(tmp_path / "ca")
    pem = proxy_ca.ensure()
    assert pem.startswith("-----BEGIN CERTIFICATE-----") and proxy_ca.ensure() == pem
    assert (tmp_path / "ca").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "ca" / proxy_ca.KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert "PRIVATE KEY" in (tmp_path / "ca" / proxy_ca.KEY_FILE).read_text() and "PRIVATE KEY" not in pem
    settings.SANDBOX_PROXY = True
    label = proxy_ca.labels("internet")[proxy_ca.LABEL_CA]
    assert label == f"{proxy_ca.fingerprint(pem)}@{proxy_ca.address('internet')}"  # either changed: the container is made anew
    assert proxy_ca.labels("none") == {}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("hosts", "header", "field"),
    [
        ("", "x-api-key", "hosts"),
        ("not a host!", "x-api-key", "hosts"),
        ("*.*.example.com", "x-api-key", "hosts"),
        ("api.example.com", "", "header"),
        ("api.example.com", "x-api-key: Sneaky", "header"),
        ("api.example.com", "Host", "header"),
        ("api.example.com", "bad header\r\nx: y", "header"),
    ],
)
def test_bad_proxy_bindings_are_refused_and_change_nothing(hosts, header, field, team):
    with pytest.raises(services.InvalidInput) as caught:
        secrets.secret_set(actor=ACTOR, team=team, name="API_KEY", value=KEY, delivery="proxy", hosts=hosts, header=header)
    assert field in caught.value.errors and KEY not in str(caught.value.errors)
    assert not Secret.objects.exists()


@pytest.mark.django_db
def test_a_proxy_secret_is_a_placeholder_in_the_sandbox_and_audited_by_name(team):
    secret = secrets.secret_set(
        actor=ACTOR,
        team=team,
        name="API_KEY",
        value=KEY,
        delivery="proxy",
        hosts="API.example.com *.forge.test",
        header="Authorization: Bearer",
    )
    assert (secret.hosts, secret.header) == ("api.example.com *.forge.test", "Authorization: Bearer")
    holder = secrets.placeholder(secret)
    assert holder.startswith("ccp-placeholder-") and KEY not in holder
    rotated = secrets.secret_set(
        actor=ACTOR, team=team, name="API_KEY", value=KEY + "2", delivery="proxy", hosts="api.example.com", header="x-api-key"
    )
    assert secrets.placeholder(rotated) == holder  # stable: a rotation needs no new container
    event = AuditEvent.objects.filter(action="secret.rotated").get()
    assert event.details["hosts"] == "api.example.com" and KEY not in str(event.details)
    bindings = secrets.proxy_secrets_for({999: team.pk})[999]
    assert [(b.name, b.hosts, b.header, b.header_value()) for b in bindings] == [("API_KEY", ("api.example.com",), "x-api-key", KEY + "2")]
    assert bindings[0].binds("API.example.com.") and not bindings[0].binds("evil-api.example.com")
    assert KEY not in repr(bindings[0])


def _client(entries_text: str | None) -> proxy.Client:
    entries = allowlist.parse(entries_text)[0] if entries_text is not None else None
    return proxy.Client(sandbox_id=1, mode="allowlist" if entries is not None else "internet", entries=entries)


def test_the_proxy_judges_by_the_sandboxs_mode_and_list(monkeypatch):
    addresses = {"listed.example.test": ["198.18.7.7"], "private.example.test": ["10.0.0.5"], "other.example.test": ["198.18.7.8"]}
    monkeypatch.setattr(proxy.Names, "_ask", staticmethod(lambda name, plain: (addresses.get(name, []), 30)))
    monkeypatch.setattr(proxy.host, "dropped_ranges", lambda: [*network.BLOCKED_RANGES, "198.18.9.0/24"])
    monkeypatch.setattr(proxy.host, "host_addresses", lambda: ["198.18.7.1"])
    addon = proxy.CredentialProxy()

    def judge(client, name, port=443):
        return asyncio.run(addon.judge(client, name, port))

    listed = _client("listed.example.test private.example.test 198.18.7.0/24:8443")
    assert judge(listed, "listed.example.test") == ("198.18.7.7", "")
    assert judge(listed, "listed.example.test", 22) == (None, "port 22 is not listed for listed.example.test")
    assert judge(listed, "other.example.test") == (None, "not on the sandbox's list")
    assert judge(listed, "private.example.test")[0] is None  # listed, but a private address
    assert judge(listed, "198.18.7.9", 8443) == ("198.18.7.9", "")  # a listed CIDR, on its port
    internet = _client(None)
    assert judge(internet, "other.example.test") == ("198.18.7.8", "")
    assert judge(internet, "198.18.9.4")[0] is None  # the host's LAN
    assert judge(internet, "198.18.7.1")[0] is None  # the host itself
    assert judge(internet, "nowhere.example.test") == (None, "does not resolve")


@pytest.mark.django_db
def test_alike_decisions_fold_into_one_row_with_a_count(make_sandbox, fake_engine, clean_workspace):
    sandbox = make_sandbox("decider")
    decisions = proxy.Decisions()
    for _ in range(5):
        decisions.record(sandbox.pk, "proxy", False, name="x.example.test", port=443, method="CONNECT", reason="not on the sandbox's list")
    decisions.record(sandbox.pk, "http", False, name="x.example.test", port=443, method="GET", path="/a?token=t", reason="forbidden")
    assert decisions.flush() == 2
    rows = {r.kind: r for r in EgressDenial.objects.filter(sandbox=sandbox)}
    assert rows["proxy"].count == 5 and not rows["proxy"].allowed and rows["proxy"].method == "CONNECT"
    assert rows["http"].path == "/a"  # never the query, which may carry a token


@pytest.mark.django_db
def test_the_secrets_page_sets_a_proxy_secret_and_shows_where_it_goes(
    client, django_user_model, make_sandbox, fake_engine, clean_workspace
):
    from django.urls import reverse

    sandbox = make_sandbox("paged")
    client.force_login(django_user_model.objects.create_superuser("root", "", "pw-123456789"))
    url = reverse("sandbox_secrets", args=[sandbox.pk])
    form = {"op": "set", "name": "API_KEY", "value": KEY, "delivery": "proxy", "hosts": "api.example.com", "header": "x-api-key"}
    client.post(url, form)
    secret = Secret.objects.get()
    assert (secret.delivery, secret.hosts, secret.header) == ("proxy", "api.example.com", "x-api-key")
    refused = client.post(url, {**form, "name": "OTHER", "header": "Content-Length"}, follow=True).content.decode()
    assert "does not set Content-Length" in refused and Secret.objects.count() == 1
    page = client.get(url).content.decode()
    assert "api.example.com" in page and "x-api-key" in page and KEY not in page


class _Impostor:
    """Something other than the panel's proxy on a port: it answers every request with 200."""

    def __init__(self, address: str, port: int = 0):
        import socket
        import threading

        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND
        self.sock.bind((address, port))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            c.recv(4096)
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            c.close()

    def close(self):
        import socket

        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept(): a close alone leaves it listening
        self.sock.close()
        self.thread.join(5)


def test_the_probe_tells_the_panels_proxy_from_an_impostor_and_from_nothing():
    running = proxy.start_thread(["127.0.0.1"], 18961)
    try:
        assert proxy.probe("127.0.0.1", 18961) is None
    finally:
        running.stop()
    assert "does not answer" in (proxy.probe("127.0.0.1", 18961) or "")
    impostor = _Impostor("127.0.0.1")
    try:
        assert (proxy.probe("127.0.0.1", impostor.port) or "").startswith(proxy.IMPOSTOR)
    finally:
        impostor.close()


@pytest.mark.parametrize(
    "path",
    ["/allowed/../secret/x", "/allowed/%2e%2e/secret", "/allowed/%2E./secret", "/allowed/..%2fsecret", "/allowed/..;/secret",
     "/allowed/x/./../../secret", "/allowed/..\\secret", "/allowed/%c0%ae%c0%ae/secret", "/allowed/%252e%252e/secret",
     "/allowed/x#/../../secret", "/allowed/x\x00"],
)  # fmt: skip
def test_a_ruled_path_is_judged_as_a_server_reads_it_and_refused_when_it_may_be_read_otherwise(path):
    entries, _ = allowlist.parse("ruled.example.test GET /allowed/*")
    assert allowlist.http_verdict("ruled.example.test", "GET", path, entries) is False
    assert allowlist.http_verdict("ruled.example.test", "GET", "/allowed/a%20b/.well-known", entries) is True
    assert allowlist.http_verdict("ruled.example.test", "GET", "/%61llowed/x", entries) is True  # decoded: what the server reads
    plain, _ = allowlist.parse("ruled.example.test GET /allowed/*\nruled.example.test")
    assert allowlist.http_verdict("ruled.example.test", "GET", path, plain) is True  # a plain entry of the name allows all


def test_a_sandbox_asking_names_whose_servers_never_answer_holds_up_no_other(settings):
    import socket
    import time

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.98", 53))  # a name server that answers nothing (each lookup waits it out)
    settings.SANDBOX_DNS_UPSTREAM = ["127.0.0.98"]
    addon = proxy.CredentialProxy()
    attacker = proxy.Client(1, "internet", None)

    async def main() -> float:
        asked = [asyncio.create_task(addon.judge(attacker, f"n{i}.black-hole.example.test", 443)) for i in range(30)]
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await asyncio.to_thread(lambda: None)  # where the proxy reads who is who, for every sandbox
        waited = time.monotonic() - started
        for task in asked:
            task.cancel()
        return waited

    try:
        assert asyncio.run(main()) < 0.5
    finally:
        silent.close()
