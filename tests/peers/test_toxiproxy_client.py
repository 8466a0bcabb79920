"""Tier (e): udpkit driven by ``toxiproxy-python``, Toxiproxy's own Python client from PyPI.

Proxies are created, changed, disabled, reset, populated and deleted through the
client; each toxic is then measured through the proxy against an echo service on
loopback (TCP and UDP on one port).  UDP proxies need the ``protocol`` field the
client cannot send: :class:`UdpToxiproxy` is a three-line subclass that posts it
through the client's own ``APIConsumer``.  Timings are relative (through the proxy
minus direct) against values large enough (200 ms, 1 s) that the issue's +-20 %
holds on a loaded two-core machine; the lower bounds are what the toxic promises.
"""

from __future__ import annotations

import json
import socket
import socketserver
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from toxiproxy import Toxiproxy
from toxiproxy.api import APIConsumer
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists
from toxiproxy.proxy import Proxy as ClientProxy

from udpkit.proxy.config import ProxyConfig
from udpkit.testing.background import BackgroundProxy

pytestmark = pytest.mark.peers


class UdpToxiproxy(Toxiproxy):  # type: ignore[misc]
    """The client, plus the one field it cannot send: ``protocol``."""

    def create_with_protocol(self, upstream: str, name: str, protocol: str) -> Any:
        info = APIConsumer.post("/proxies", json={"name": name, "upstream": upstream,
                                                  "listen": "127.0.0.1:0",
                                                  "protocol": protocol}).json()
        return ClientProxy(**info)


# --------------------------------------------------------------------------- the service


class _TcpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        try:
            while data := sock.recv(65536):
                sock.sendall(data)
        except OSError:
            pass


class _UdpEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data, self.client_address)


class _Threaded(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture(scope="module")
def echo() -> Iterator[int]:
    """An echo service on 127.0.0.1, TCP and UDP on the same port."""
    tcp = _Threaded(("127.0.0.1", 0), _TcpEcho)
    port = tcp.server_address[1]
    udp = socketserver.ThreadingUDPServer(("127.0.0.1", port), _UdpEcho)
    udp.daemon_threads = True
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (tcp, udp)]
    for thread in threads:
        thread.start()
    yield port
    for server in (tcp, udp):
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundProxy]:
    """``udpkit proxy`` as a Toxiproxy server (no anonymous proxy), API on a free port."""
    with BackgroundProxy(ProxyConfig(upstream_port=None, control_port=0, seed=7)) as running:
        yield running


@pytest.fixture
def client(server: BackgroundProxy) -> Iterator[UdpToxiproxy]:
    assert server.proxy.control_port is not None
    client = UdpToxiproxy()
    client.update_api_consumer("127.0.0.1", server.proxy.control_port)
    client.destroy_all()
    yield client
    client.destroy_all()


def address(proxy: Any) -> tuple[str, int]:
    host, _, port = proxy.listen.rpartition(":")
    return host, int(port)


def tcp_round_trip(target: tuple[str, int], payload: bytes = b"ping") -> float:
    with socket.create_connection(target, timeout=5) as sock:
        start = time.perf_counter()
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(65536)
            assert chunk, "closed early"
            got += chunk
        return time.perf_counter() - start


def udp_round_trip(target: tuple[str, int], payload: bytes = b"ping") -> float:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        start = time.perf_counter()
        sock.sendto(payload, target)
        assert sock.recv(65536) == payload
        return time.perf_counter() - start


def added_latency(direct: tuple[str, int], proxied: tuple[str, int], udp: bool) -> float:
    trip = udp_round_trip if udp else tcp_round_trip
    base = statistics.median(trip(direct) for _ in range(3))
    return statistics.median(trip(proxied) for _ in range(5)) - base


def get_json(server: BackgroundProxy, path: str) -> Any:
    with urllib.request.urlopen(f"{server.control_url}{path}", timeout=5) as response:
        return json.loads(response.read())


# --------------------------------------------------------------------------- the API


def test_create_list_get_and_destroy_proxies(client: UdpToxiproxy, echo: int) -> None:
    proxy = client.create(upstream=f"127.0.0.1:{echo}", name="echo")
    assert proxy.enabled is True
    assert proxy.listen.startswith("127.0.0.1:")
    assert not proxy.listen.endswith(":0")
    assert tcp_round_trip(address(proxy)) >= 0
    assert set(client.proxies()) == {"echo"}
    assert client.get_proxy("echo").upstream == f"127.0.0.1:{echo}"
    with pytest.raises(ProxyExists):
        APIConsumer.post("/proxies", json={"name": "echo", "upstream": f"127.0.0.1:{echo}"})
    assert proxy.destroy() is True
    assert client.proxies() == {}
    with pytest.raises(NotFound):
        APIConsumer.get("/proxies/echo")


def test_errors_have_toxiproxys_shape(client: UdpToxiproxy, echo: int) -> None:
    response = APIConsumer.get("/version")
    assert response.json()["version"].startswith("udpkit ")
    with pytest.raises(NotFound) as missing:
        APIConsumer.get("/proxies/nope")
    assert json.loads(missing.value.args[0]) == {"error": "proxy not found", "status": 404}
    with pytest.raises(InvalidToxic) as no_name:
        APIConsumer.post("/proxies", json={"upstream": f"127.0.0.1:{echo}"})
    assert json.loads(no_name.value.args[0]) == {"error": "missing required field: name",
                                                 "status": 400}
    proxy = client.create(upstream=f"127.0.0.1:{echo}", name="echo")
    with pytest.raises(InvalidToxic) as bad_type:
        proxy.add_toxic(type="no_such_toxic")
    assert json.loads(bad_type.value.args[0]) == {"error": "invalid toxic type", "status": 400}
    with pytest.raises(InvalidToxic) as bad_stream:
        proxy.add_toxic(type="latency", stream="sideways")
    assert json.loads(bad_stream.value.args[0])["error"].startswith("stream was invalid")
    proxy.add_toxic(type="latency", attributes={"latency": 1})
    with pytest.raises(ProxyExists) as twice:
        proxy.add_toxic(type="latency", attributes={"latency": 1})
    assert json.loads(twice.value.args[0]) == {"error": "toxic already exists", "status": 409}
    with pytest.raises(NotFound) as no_toxic:
        APIConsumer.get("/proxies/echo/toxics/nope")
    assert json.loads(no_toxic.value.args[0]) == {"error": "toxic not found", "status": 404}


def test_toxics_are_added_updated_and_removed(client: UdpToxiproxy, echo: int) -> None:
    proxy = client.create(upstream=f"127.0.0.1:{echo}", name="echo")
    proxy.add_toxic(type="latency", attributes={"latency": 100, "jitter": 5})
    proxy.add_toxic(type="bandwidth", stream="upstream", name="slow", toxicity=0.5,
                    attributes={"rate": 1000})
    toxics = proxy.toxics()
    assert set(toxics) == {"latency_downstream", "slow"}
    assert toxics["latency_downstream"].attributes == {"latency": 100, "jitter": 5}
    assert toxics["slow"].stream == "upstream"
    assert toxics["slow"].toxicity == 0.5
    updated = APIConsumer.post("/proxies/echo/toxics/slow",
                               json={"attributes": {"rate": 50}}).json()
    assert updated["attributes"] == {"rate": 50}
    assert updated["toxicity"] == 0.5
    patch = urllib.request.Request(
        f"http://127.0.0.1:{APIConsumer.port}/proxies/echo/toxics/slow", method="PATCH",
        data=json.dumps({"toxicity": 1}).encode())
    with urllib.request.urlopen(patch, timeout=5) as response:
        assert json.loads(response.read())["toxicity"] == 1
    assert proxy.destroy_toxic("slow") is True
    assert list(proxy.toxics()) == ["latency_downstream"]


def test_disable_enable_reset(client: UdpToxiproxy, echo: int) -> None:
    proxy = client.create(upstream=f"127.0.0.1:{echo}", name="echo")
    target = address(proxy)
    with socket.create_connection(target, timeout=5) as open_before:
        with proxy.down():
            assert client.get_proxy("echo").enabled is False
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(target, timeout=5)
            open_before.settimeout(5)
            try:  # Toxiproxy's "down" also drops the open connections
                ended = open_before.recv(10)
            except ConnectionResetError:
                ended = b""
            assert ended == b""
        assert tcp_round_trip(target) >= 0  # listening again, on the same port
    proxy.add_toxic(type="timeout", attributes={"timeout": 0})
    proxy.disable()
    assert client.reset() is True
    assert client.get_proxy("echo").enabled is True
    assert proxy.toxics() == {}
    assert tcp_round_trip(target) >= 0


def test_populate_creates_and_keeps_or_replaces(client: UdpToxiproxy, echo: int) -> None:
    body = [{"name": "a", "upstream": f"127.0.0.1:{echo}", "listen": "127.0.0.1:0"},
            {"name": "b", "upstream": f"127.0.0.1:{echo}", "listen": "127.0.0.1:0",
             "protocol": "udp"}]
    response = APIConsumer.post("/populate", json=body)
    assert response.status_code == 201
    created = response.json()["proxies"]
    assert [p["name"] for p in created] == ["a", "b"]
    assert created[1]["protocol"] == "udp"
    a_listen = created[0]["listen"]
    again = APIConsumer.post("/populate", json=body[:1]).json()["proxies"]
    assert again[0]["listen"] == a_listen  # same listen and upstream: kept
    assert udp_round_trip(address(ClientProxy(**created[1]))) >= 0
    # the client's own populate (create per proxy) works against udpkit too
    made = client.populate([{"name": "c", "upstream": f"127.0.0.1:{echo}",
                             "listen": "127.0.0.1:0"}])
    assert [p.name for p in made] == ["c"]


def post_populate(server: BackgroundProxy, body: object) -> tuple[int, Any]:
    """Raw HTTP (the client raises on a 4xx before its body can be read)."""
    request = urllib.request.Request(f"{server.control_url}/populate", method="POST",
                                     data=json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_populate_that_fails_part_way_says_so_and_lists_what_it_made(
        client: UdpToxiproxy, server: BackgroundProxy, echo: int) -> None:
    """Regression: a populate stopped by a proxy that cannot listen answered with the
    error alone.  Toxiproxy (``api.go`` ``Populate``, ``PopulateJson``) stops at that
    proxy, keeps those made before it, and answers the error's status with
    ``{"error", "status", "proxies"}``: the ones made, ``null`` when none."""
    busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    taken = f"127.0.0.1:{busy.getsockname()[1]}"
    upstream = f"127.0.0.1:{echo}"
    try:
        body = [{"name": "one", "upstream": upstream, "listen": "127.0.0.1:0"},
                {"name": "two", "upstream": upstream, "listen": taken},
                {"name": "three", "upstream": upstream, "listen": "127.0.0.1:0"}]
        status, answer = post_populate(server, body)
        assert status == answer["status"] == 500
        assert "Address already in use" in answer["error"]
        assert [p["name"] for p in answer["proxies"]] == ["one"]
        assert sorted(APIConsumer.get("/proxies").json()) == ["one"]
        assert tcp_round_trip(address(client.get_proxy("one"))) >= 0
        # the first fails: nothing made, "proxies": null (Go's empty slice)
        assert post_populate(server, body[1:2])[1]["proxies"] is None
        # a body refused before anything starts: the same shape, Toxiproxy's 400
        status, bad = post_populate(server, [{"name": "x"}])
        assert (status, bad["status"], bad["proxies"]) == (400, 400, None)
        assert "upstream" in bad["error"]
        # a replacement that cannot start leaves the old proxy there, stopped
        status, moved = post_populate(server, [{**body[0], "listen": taken}])
        assert (status, moved["proxies"]) == (500, None)
        assert client.get_proxy("one").enabled is False
    finally:
        busy.close()


# --------------------------------------------------------------------------- TCP toxics


def test_tcp_latency_adds_what_it_says(client: UdpToxiproxy, echo: int) -> None:
    proxy = client.create(upstream=f"127.0.0.1:{echo}", name="echo")
    proxy.add_toxic(type="latency", attributes={"latency": 200})
    added = added_latency(("127.0.0.1", echo), address(proxy), udp=False)
    assert 0.16 <= added <= 0.24, added


def test_tcp_bandwidth_limits_the_rate(client: UdpToxiproxy, echo: int) -> None:
    proxy = client.create(upstream=f"127.0.0.1:{echo}", name="echo")
    proxy.add_toxic(type="bandwidth", attributes={"rate": 100})  # KB/s: 100 kB in 1 s
    elapsed = tcp_round_trip(address(proxy), b"x" * 100_000)
    assert 0.8 <= elapsed <= 1.2, elapsed


def test_tcp_timeout_holds_the_data_then_closes(client: UdpToxiproxy, echo: int) -> None:
    proxy = client.create(upstream=f"127.0.0.1:{echo}", name="echo")
    proxy.add_toxic(type="timeout", attributes={"timeout": 300})
    with socket.create_connection(address(proxy), timeout=5) as sock:
        start = time.perf_counter()
        sock.sendall(b"hello")
        assert sock.recv(10) == b""  # nothing came back, then the close
        assert time.perf_counter() - start >= 0.25
    proxy.destroy_toxic("timeout_downstream")
    proxy.add_toxic(type="timeout", attributes={"timeout": 0})
    with socket.create_connection(address(proxy), timeout=0.5) as sock:
        sock.sendall(b"hello")
        with pytest.raises(TimeoutError):  # 0: held for as long as the toxic is there
            sock.recv(10)


def test_tcp_reset_peer_resets(client: UdpToxiproxy, echo: int) -> None:
    proxy = client.create(upstream=f"127.0.0.1:{echo}", name="echo")
    proxy.add_toxic(type="reset_peer", stream="upstream", attributes={"timeout": 100})
    with socket.create_connection(address(proxy), timeout=5) as sock:
        start = time.perf_counter()
        sock.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            sock.recv(10)
        assert time.perf_counter() - start >= 0.08


def test_tcp_limit_data_closes_after_the_limit(client: UdpToxiproxy, echo: int) -> None:
    proxy = client.create(upstream=f"127.0.0.1:{echo}", name="echo")
    proxy.add_toxic(type="limit_data", attributes={"bytes": 1000})
    with socket.create_connection(address(proxy), timeout=5) as sock:
        sock.sendall(b"y" * 5000)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    assert got == b"y" * 1000


def test_tcp_slicer_writes_small_slices(client: UdpToxiproxy, echo: int) -> None:
    proxy = client.create(upstream=f"127.0.0.1:{echo}", name="echo")
    proxy.add_toxic(type="slicer", attributes={"average_size": 100, "size_variation": 0,
                                               "delay": 40_000})  # us
    sizes: list[int] = []
    with socket.create_connection(address(proxy), timeout=5) as sock:
        sock.sendall(b"z" * 800)
        while sum(sizes) < 800:
            sizes.append(len(sock.recv(65536)))
    assert len(sizes) >= 4, sizes
    assert statistics.median(sizes) == 100, sizes


def test_tcp_slow_close_delays_the_close(client: UdpToxiproxy, echo: int) -> None:
    proxy = client.create(upstream=f"127.0.0.1:{echo}", name="echo")
    proxy.add_toxic(type="slow_close", attributes={"delay": 300})
    with socket.create_connection(address(proxy), timeout=5) as sock:
        sock.sendall(b"bye")
        assert sock.recv(10) == b"bye"
        start = time.perf_counter()
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(10) == b""
        assert time.perf_counter() - start >= 0.25


# --------------------------------------------------------------------------- UDP toxics


def test_udp_latency_and_bandwidth(client: UdpToxiproxy, echo: int) -> None:
    proxy = client.create_with_protocol(f"127.0.0.1:{echo}", "dgram", "udp")
    assert proxy.listen.startswith("127.0.0.1:")
    proxy.add_toxic(type="latency", attributes={"latency": 200})
    added = added_latency(("127.0.0.1", echo), address(proxy), udp=True)
    assert 0.16 <= added <= 0.24, added
    proxy.destroy_toxic("latency_downstream")
    proxy.add_toxic(type="bandwidth", stream="upstream", attributes={"rate": 50})
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        start = time.perf_counter()
        for _ in range(50):  # 50 kB at 50 KB/s: the last one leaves after 1 s
            sock.sendto(b"d" * 1000, address(proxy))
        for _ in range(50):
            sock.recv(2000)
        elapsed = time.perf_counter() - start
    assert 0.8 <= elapsed <= 1.2, elapsed


def test_udp_datagram_toxics(client: UdpToxiproxy, server: BackgroundProxy, echo: int) -> None:
    proxy = client.create_with_protocol(f"127.0.0.1:{echo}", "dgram", "both")
    target = address(proxy)
    assert tcp_round_trip(target) >= 0  # "both": TCP on the same port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        proxy.add_toxic(type="duplicate", stream="upstream")
        sock.sendto(b"twice", target)
        assert [sock.recv(100), sock.recv(100)] == [b"twice", b"twice"]
        proxy.destroy_toxic("duplicate_upstream")
        proxy.add_toxic(type="truncate", stream="upstream")
        sock.sendto(b"a longer datagram", target)
        assert len(sock.recv(100)) < len(b"a longer datagram")
        proxy.destroy_toxic("truncate_upstream")
        proxy.add_toxic(type="corrupt")
        sock.sendto(b"clean", target)
        corrupted = sock.recv(100)
        assert corrupted != b"clean"
        assert len(corrupted) == 5
        proxy.destroy_toxic("corrupt_downstream")
        proxy.add_toxic(type="loss", stream="upstream", toxicity=1.0)
        sock.sendto(b"lost", target)
        sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            sock.recv(100)
    toxics = server.named_summary("dgram")["toxics"]
    assert isinstance(toxics, dict)
    assert toxics["loss_upstream"]["dropped"] == 1
    assert toxics["duplicate_upstream"]["duplicated"] == 1
    metrics = urllib.request.urlopen(f"{server.control_url}/metrics", timeout=5).read().decode()
    assert ('udpkit_toxic_events_total{proxy="dgram",toxic="loss_upstream",type="loss",'
            'stream="upstream",event="dropped"} 1') in metrics
    assert 'toxiproxy_proxy_received_bytes_total{direction="upstream"' in metrics


def test_a_disabled_udp_proxy_drops_and_counts(client: UdpToxiproxy, server: BackgroundProxy,
                                               echo: int) -> None:
    proxy = client.create_with_protocol(f"127.0.0.1:{echo}", "dgram", "udp")
    proxy.disable()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.3)
        sock.sendto(b"nobody", address(proxy))
        with pytest.raises(TimeoutError):
            sock.recv(100)
    proxy.enable()
    assert udp_round_trip(address(proxy)) >= 0
    upstream = server.named_summary("dgram")["upstream_stream"]
    assert isinstance(upstream, dict)
    assert upstream["dropped_disabled"] == 1
    assert get_json(server, "/proxies/dgram")["enabled"] is True
