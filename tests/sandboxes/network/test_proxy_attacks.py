"""The credential proxy against a sandbox that tries to get its secrets out of it: what an agent
inside may send the proxy by hand (helpers.credential_proxy's stand-ins, a real sandbox)."""

import subprocess
import sys
import time

import pytest

from sandboxes import secrets as vault_secrets
from tests.sandboxes.network.helpers import ACTOR, _slot
from tests.support.docker import docker_cli
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.django_db(transaction=True)]
IMAGE = "ccpanel/claude-code:latest"
KEY = "sk-real-key-attack-0123456789"

# A plain-HTTP service that answers each request with the bytes it received (a reflecting page).
ECHO = r"""
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
def handle(c):
    c.settimeout(5); data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(data) + data)
    except OSError:
        pass
    c.close()
while True:
    c, _ = s.accept(); threading.Thread(target=handle, args=(c,), daemon=True).start()
"""

# By hand, as an agent would: CONNECT to the bound name, then plain HTTP inside the tunnel.
PLAIN_IN_TUNNEL = r"""
import os, socket, urllib.parse
p = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
s = socket.create_connection((p.hostname, p.port), timeout=10)
s.sendall(b"CONNECT bound.example.test:80 HTTP/1.1\r\nHost: bound.example.test:80\r\n\r\n")
print(s.recv(4096).split(b"\r\n")[0].decode())
s.sendall(b"GET /x HTTP/1.1\r\nHost: bound.example.test\r\nx-api-key: " + os.environ["API_KEY"].encode() + b"\r\nConnection: close\r\n\r\n")
data = b""
while True:
    try:
        chunk = s.recv(65536)
    except OSError:
        break
    if not chunk:
        break
    data += chunk
print(data.decode("latin-1"))
"""


@pytest.fixture
def echo_on_80(credential_proxy):
    inet, ns = credential_proxy["internet"], f"ccp-inet{100 + _slot()}"
    server = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", ECHO, inet, "80"])
    try:
        wait_for(lambda: f"{inet}:80" in subprocess.run(["ip", "netns", "exec", ns, "ss", "-lnt"], capture_output=True, text=True).stdout,
                 timeout=10, what="the echo listening")  # fmt: skip
        yield inet
    finally:
        server.kill()
        server.wait()


def test_a_secret_never_goes_in_clear_text_inside_a_connect_tunnel(make_sandbox, clean_docker, credential_proxy, echo_on_80, team):
    vault_secrets.secret_set(
        actor=ACTOR, team=team, name="API_KEY", value=KEY, delivery="proxy", hosts="bound.example.test", header="x-api-key"
    )
    s = make_sandbox("attp-plain", image=IMAGE, memory_mb=512)
    assert s.status == "running", s.status_detail
    done = docker_cli("exec", s.container_id, "python3", "-c", PLAIN_IN_TUNNEL, check=False)
    out = done.stdout + done.stderr
    assert KEY not in out  # neither sent over the wire in clear, nor reflected back to the sandbox
    assert "ccp-placeholder-" in out or "403" in out, out


def test_a_ruled_path_is_judged_as_the_server_reads_it(make_sandbox, clean_docker, credential_proxy, team):
    s = make_sandbox("attp-ruled", image=IMAGE, memory_mb=512, network_mode="allowlist", egress_allow="ruled.example.test GET /allowed/*")
    assert s.status == "running", s.status_detail
    for path in ("/allowed/../secret/x", "/allowed/%2e%2e/secret/x", "/allowed/..%2fsecret", "/allowed/..;/secret/x"):
        script = (
            "import http.client,os,ssl,urllib.parse; p=urllib.parse.urlsplit(os.environ['HTTPS_PROXY']);"
            "c=http.client.HTTPSConnection(p.hostname,p.port,context=ssl.create_default_context(),timeout=10);"
            f"c.set_tunnel('ruled.example.test',443); c.request('GET','{path}'); print(c.getresponse().status)"
        )
        done = docker_cli("exec", s.container_id, "python3", "-c", script, check=False)
        assert done.stdout.strip() == "403", (path, done.stdout, done.stderr)
    # A method the rules forbid, asked for by a header many frameworks honour, is refused too.
    for headers, status in (({}, "200"), ({"X-HTTP-Method-Override": "DELETE"}, "403"), ({"x-method-override": "GET"}, "200")):
        script = (
            "import http.client,os,ssl,urllib.parse; p=urllib.parse.urlsplit(os.environ['HTTPS_PROXY']);"
            "c=http.client.HTTPSConnection(p.hostname,p.port,context=ssl.create_default_context(),timeout=10);"
            f"c.set_tunnel('ruled.example.test',443); c.request('GET','/allowed/x',headers={headers!r}); print(c.getresponse().status)"
        )
        done = docker_cli("exec", s.container_id, "python3", "-c", script, check=False)
        assert done.stdout.strip() == status, (headers, done.stdout, done.stderr)


# Two requests on one kept-alive connection through the proxy, the second when told (a line on stdin).
KEPT_ALIVE = r"""
import http.client, json, os, ssl, sys, urllib.parse
p = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
c = http.client.HTTPSConnection(p.hostname, p.port, context=ssl.create_default_context(), timeout=10)
c.set_tunnel("bound.example.test", 443)
for _ in range(2):
    c.request("GET", "/", headers={"x-api-key": os.environ["API_KEY"]})
    r = c.getresponse()
    body = r.read().decode()
    print(json.loads(body)["headers"].get("x-api-key") if r.status == 200 else r.status, flush=True)
    sys.stdin.readline()
"""


def test_a_disabled_secret_is_no_longer_injected_on_a_connection_opened_before(make_sandbox, clean_docker, credential_proxy, team):
    secret = vault_secrets.secret_set(
        actor=ACTOR, team=team, name="API_KEY", value=KEY, delivery="proxy", hosts="bound.example.test", header="x-api-key"
    )
    s = make_sandbox("attp-revoke", image=IMAGE, memory_mb=512)
    assert s.status == "running", s.status_detail
    client = subprocess.Popen(["docker", "exec", "-i", s.container_id, "python3", "-c", KEPT_ALIVE],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert client.stdout.readline().strip() == KEY  # injected while in force
        vault_secrets.secret_enable(actor=ACTOR, secret=secret, enabled=False)
        time.sleep(1.5)  # the proxy reads who holds what every half second
        client.stdin.write("\n")
        client.stdin.flush()
        second = client.stdout.readline().strip()
        assert second and second != KEY, client.stderr.read() if not second else second
    finally:
        client.kill()
        client.wait()


# A large upload through the proxy, made as it goes (never whole in the sandbox's memory either).
UPLOAD = r"""
import os, socket, ssl, sys, urllib.parse
url, size = urllib.parse.urlsplit(sys.argv[1]), int(sys.argv[2])
p = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
s = socket.create_connection((p.hostname, p.port), timeout=30)
path = sys.argv[1]
if url.scheme == "https":
    s.sendall(f"CONNECT {url.hostname}:443 HTTP/1.1\r\n\r\n".encode()); s.recv(4096)
    s = ssl.create_default_context().wrap_socket(s, server_hostname=url.hostname)
    path = url.path
head = f"POST {path} HTTP/1.1\r\nHost: {url.hostname}\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
s.sendall(head.encode())
chunk = b"x" * 65536
try:
    for _ in range(size // len(chunk)):
        s.sendall(chunk)
    data = b""
    while c := s.recv(65536):
        data += c
    print(data.decode("latin-1"))
except OSError as e:
    print("cut:", e)
"""


def test_a_large_body_goes_through_the_proxy_as_it_comes(make_sandbox, clean_docker, credential_proxy, echo_on_80, team):
    import resource

    vault_secrets.secret_set(
        actor=ACTOR, team=team, name="API_KEY", value=KEY, delivery="proxy", hosts="bound.example.test", header="x-api-key"
    )
    s = make_sandbox("attp-large", image=IMAGE, memory_mb=512)
    assert s.status == "running", s.status_detail
    # Streamed, a request to the bound host still gets its key (set before its body goes).
    done = docker_cli("exec", s.container_id, "python3", "-c", UPLOAD, "https://bound.example.test/up", str(4 * 1024 * 1024), check=False)
    assert f'"x-api-key": "{KEY}"' in done.stdout, done.stdout[-500:] + done.stderr
    # The proxy (in this process) never holds a large upload whole: 300 MB go through it.
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    docker_cli("exec", s.container_id, "python3", "-c", UPLOAD, "http://bound.example.test/up", str(300 * 1024 * 1024), check=False)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, grown_mb


# Many connections to the proxy held open at once; how many were served, and whether a new one
# is once they are closed.
HOARD = r"""
import os, socket, sys, urllib.parse
p = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
held, served = [], 0
for _ in range(int(sys.argv[1])):
    try:
        held.append(socket.create_connection((p.hostname, p.port), timeout=5))
    except OSError:
        pass
for s in held:
    try:
        s.sendall(b"CONNECT other.example.test:443 HTTP/1.1\r\n\r\n")
        served += s.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        pass
for s in held:
    s.close()
again = socket.create_connection((p.hostname, p.port), timeout=5)
again.sendall(b"CONNECT other.example.test:443 HTTP/1.1\r\n\r\n")
print(served, again.recv(100).startswith(b"HTTP/1.1 200"))
"""


def test_a_sandbox_holds_at_most_its_share_of_the_proxys_connections(make_sandbox, clean_docker, credential_proxy, team):
    from sandboxes.network import proxy

    s = make_sandbox("attp-hoard", image=IMAGE, memory_mb=512)
    assert s.status == "running", s.status_detail
    done = docker_cli("exec", s.container_id, "python3", "-c", HOARD, str(proxy.MAX_CONNECTIONS + 100), check=False)
    assert done.stdout.split() == [str(proxy.MAX_CONNECTIONS), "True"], done.stdout + done.stderr[-500:]
