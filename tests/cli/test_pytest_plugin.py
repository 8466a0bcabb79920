"""The pytest plugin as a user's test suite sees it: fixtures found through the
``pytest11`` entry point, in a separate pytest run, with warnings as errors and
without pytest-asyncio."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = '''
import socket
import time

from udpkit.testing import Impairments


def test_udp_proxy_in_front_of_a_plain_socket_service(udp_proxy):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as service, \\
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        service.bind(("127.0.0.1", 0))
        service.settimeout(10)
        client.settimeout(10)
        proxy = udp_proxy(service.getsockname(), down=Impairments(duplicate=1.0), seed=3)
        client.sendto(b"ping", proxy.address)
        data, source = service.recvfrom(100)
        assert data == b"ping"
        service.sendto(b"pong", source)
        assert client.recv(100) == b"pong"
        assert client.recv(100) == b"pong"  # duplicated on the way back
        stats = proxy.stats()
        assert stats.up.forwarded == 1
        assert stats.down.duplicated == 1
        proxy.set_impairments(up=Impairments(loss=1.0))
        client.sendto(b"lost", proxy.address)
        client.sendto(b"lost", proxy.address)
        assert proxy.stats().up.dropped_loss == 2


def test_several_named_proxies(udp_proxy):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as service, \\
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        service.bind(("127.0.0.1", 0))
        service.settimeout(10)
        client.settimeout(10)
        upstream = "127.0.0.1:%d" % service.getsockname()[1]
        proxies = udp_proxy.named(
            {"name": "twice", "upstream": upstream, "protocol": "udp",
             "toxics": [{"type": "duplicate", "stream": "upstream"}]},
            {"name": "plain", "upstream": upstream, "protocol": "udp"},
            seed=3)
        assert proxies.address_of("twice") != proxies.address_of("plain")
        client.sendto(b"a", proxies.address_of("twice"))
        assert [service.recv(10), service.recv(10)] == [b"a", b"a"]
        client.sendto(b"b", proxies.address_of("plain"))
        assert service.recv(10) == b"b"
        proxies.add_toxic("plain", {"type": "loss", "stream": "upstream"})
        client.sendto(b"lost", proxies.address_of("plain"))
        for _ in range(100):  # the proxy's thread reads it soon
            if proxies.named_summary("plain")["toxics"]["loss_upstream"]["dropped"]:
                break
            time.sleep(0.05)
        assert proxies.named_summary("plain")["toxics"]["loss_upstream"]["dropped"] == 1


def test_fake_net(fake_net):
    a, b = fake_net.endpoint(), fake_net.endpoint()
    fake_net.link(a.address, b.address, up=Impairments(delay=0.5, loss=0.5))
    for i in range(100):
        a.send(b"%d" % i, b.address)
    assert fake_net.advance(0.4) == 0
    fake_net.advance(0.2)
    stats = fake_net.stats(a.address, b.address)
    assert len(b.receive_all()) == stats.forwarded == 100 - stats.dropped
    assert 30 < stats.forwarded < 70
'''


def test_the_fixtures_work_in_a_users_suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess(
        "-p", "no:asyncio", "-p", "no:cacheprovider", "-W", "error", "-q", timeout=60)
    result.assert_outcomes(passed=3)


def test_the_plugin_is_registered_by_its_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nothing="def test_nothing(): pass")
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider", timeout=60)
    result.stdout.fnmatch_lines(["*udp_proxy*", "*fake_net*"])
    assert result.ret == 0
