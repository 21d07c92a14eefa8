"""The host's name servers as Docker reads them, from resolv.conf files of the test's own."""

from sandboxes import network


def test_docker_asks_a_loopback_server_only_where_the_host_has_one(tmp_path):
    conf, resolved = tmp_path / "resolv.conf", tmp_path / "resolved.conf"
    conf.write_text("nameserver 10.1.2.3\n")
    assert not network.docker_asks_loopback(str(conf), str(resolved))
    conf.write_text("nameserver 127.0.0.1\nnameserver 10.1.2.3\n")  # dnsmasq first
    assert network.docker_asks_loopback(str(conf), str(resolved))
    conf.write_text("nameserver 127.0.0.53\n")  # systemd-resolved's stub: Docker reads its upstreams
    resolved.write_text("nameserver 10.9.9.9\n")
    assert not network.docker_asks_loopback(str(conf), str(resolved))
    resolved.unlink()
    assert network.docker_asks_loopback(str(conf), str(resolved))


def test_only_private_resolvers_get_the_dns_hole(tmp_path):
    conf, resolved = tmp_path / "resolv.conf", tmp_path / "resolved.conf"
    servers = ["10.255.255.53", "127.0.0.53", "8.8.8.8", "fd00::1", "bogus"]
    conf.write_text("".join(f"nameserver {s}\n" for s in servers) + "# nameserver 192.168.1.1\n")
    assert network.host_resolvers(str(conf), str(resolved)) == ["10.255.255.53"]  # public: not dropped anyway
    assert network.host_resolvers(str(tmp_path / "missing"), str(resolved)) == []
    # systemd-resolved: resolv.conf names only its stub; Docker forwards to the upstreams.
    conf.write_text("nameserver 127.0.0.53\n")
    resolved.write_text("nameserver 192.168.1.1\nnameserver 9.9.9.9\n")
    assert network.host_resolvers(str(conf), str(resolved)) == ["192.168.1.1"]
