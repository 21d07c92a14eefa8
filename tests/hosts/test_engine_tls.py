"""How the panel's pages and websockets reach the engine of a host on another machine: its TCP
endpoint with TLS both ways (Docker's --tlsverify), the panel's client certificate from
HOSTS_TLS_DIR/<name>/. Against the second host's real dockerd: logs, stats and a terminal
through it; nothing without the files, a wrong CA or a readable key."""

import shutil
import time

import pytest

from sandboxes import engine
from tests.support.docker import TEST_IMAGE

pytestmark = pytest.mark.docker


@pytest.fixture
def certs(second_host, settings, tmp_path):
    """The panel's TLS files for a host named "far", where the settings look for them."""
    settings.HOSTS_TLS_DIR = tmp_path / "hosts"
    folder = settings.HOSTS_TLS_DIR / "far"
    shutil.copytree(second_host.docker_client_certs, folder)
    (folder / "key.pem").chmod(0o600)
    return folder


def far(second_host, **kwargs) -> engine.Engine:
    return engine.EngineClient(engine.Host("far", second_host.docker_tls_url, 10))


def test_logs_stats_and_a_terminal_through_the_engines_tls_endpoint(second_host, certs):
    docker = far(second_host)
    assert docker.ping()
    container = second_host.docker("run", "-d", TEST_IMAGE, "sh", "-c", "echo hello-from-far; sleep 300").stdout.strip()
    try:
        deadline = time.monotonic() + 10
        while "hello-from-far" not in docker.logs(container) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "hello-from-far" in docker.logs(container)
        assert docker.stats_once(container)["memory_stats"]["usage"] > 0
        terminal = docker.open_terminal(container, user="", workdir="/", cmd=["sh"], env={})
        try:
            assert terminal.send(b"echo $((6*7))-typed\n")
            seen = b""
            deadline = time.monotonic() + 10
            while b"42-typed" not in seen and time.monotonic() < deadline:
                seen += terminal.read()
            assert b"42-typed" in seen
        finally:
            terminal.close()
    finally:
        second_host.docker("rm", "-f", container, check=False)


def test_no_tls_files_no_connection(second_host, settings, tmp_path):
    settings.HOSTS_TLS_DIR = tmp_path / "none"
    with pytest.raises(engine.EngineUnavailable, match="only with TLS"):
        far(second_host).ping()


def test_a_readable_key_is_refused(second_host, certs):
    (certs / "key.pem").chmod(0o644)
    with pytest.raises(engine.EngineUnavailable, match="chmod 600"):
        far(second_host).ping()


def test_an_engine_whose_certificate_another_ca_signed_is_refused(second_host, certs):
    # The client's own certificate stands for a CA here: it did not sign the engine's.
    shutil.copy(certs / "cert.pem", certs / "ca.pem")
    with pytest.raises(engine.EngineError):
        far(second_host).ping()
