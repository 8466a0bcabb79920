"""The servers `make bench` compares udpkit with, each the idiomatic way for its library.

Rule: every peer serves the same greeting with the same framing as udpkit
(`greet` below is byte for byte udpkit's), prints ``ready PORT`` on stdout
once it listens, and runs until SIGINT/SIGTERM.  Nothing here is tuned
beyond what the library's own documentation shows.

    python benchmarks/peers.py udp-asyncio --port 29999
    python benchmarks/peers.py tcp-uvloop --port 29999
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import socketserver
import sys
from collections.abc import Callable
from typing import Any


def greet(name: bytes) -> bytes:
    if name.endswith(b"\n"):
        if name.endswith(b"\r\n"):
            return b"Hello, " + name[:-2] + b"!\r\n"
        return b"Hello, " + name[:-1] + b"!\n"
    return b"Hello, " + name + b"!"


def ready(port: int) -> None:
    print(f"ready {port}", flush=True)


# -- UDP ------------------------------------------------------------------------


def udp_tutorial(host: str, port: int) -> None:
    """The tutorial's server loop: blocking recvfrom, sendto."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, port))
    ready(port)
    while True:
        data, addr = sock.recvfrom(1024)
        sock.sendto(b"Hello, " + data + b"!", addr)


def udp_socketserver(host: str, port: int) -> None:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            sock.sendto(greet(data), self.client_address)

    with socketserver.UDPServer((host, port), Handler) as server:
        ready(port)
        server.serve_forever()


class GreetingDatagram(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(greet(data), addr)


async def _udp_asyncio(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(GreetingDatagram, local_addr=(host, port))
    ready(port)
    await asyncio.Event().wait()


def udp_twisted(host: str, port: int) -> None:
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    class Greeting(DatagramProtocol):
        def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:  # noqa: N802
            self.transport.write(greet(data), addr)

    reactor.listenUDP(port, Greeting(), interface=host)  # type: ignore[attr-defined]
    reactor.callWhenRunning(ready, port)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


def udp_trio(host: str, port: int) -> None:
    import trio

    async def main() -> None:
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await sock.bind((host, port))
        ready(port)
        while True:
            data, addr = await sock.recvfrom(2048)
            await sock.sendto(greet(data), addr)

    trio.run(main)


# -- TCP (line framing: "Welcome!\n", then one reply line per request line) -----


class GreetingLines(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport
        self.buffer = b""
        self.transport.write(b"Welcome!\n")

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        end = buffer.rfind(b"\n")
        if end < 0:
            self.buffer = buffer
            return
        self.buffer = buffer[end + 1 :]
        self.transport.writelines(
            [greet(line.rstrip(b"\r")) + b"\n" for line in buffer[:end].split(b"\n")]
        )


async def _tcp_protocol(host: str, port: int) -> None:
    server = await asyncio.get_running_loop().create_server(GreetingLines, host, port)
    ready(port)
    async with server:
        await server.serve_forever()


async def _tcp_streams(host: str, port: int) -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Welcome!\n")
        while line := await reader.readline():
            writer.write(greet(line.rstrip(b"\r\n")) + b"\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(client, host, port)
    ready(port)
    async with server:
        await server.serve_forever()


def tcp_twisted(host: str, port: int) -> None:
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory
    from twisted.protocols.basic import LineReceiver

    class Greeting(LineReceiver):
        delimiter = b"\n"

        def connectionMade(self) -> None:  # noqa: N802
            self.sendLine(b"Welcome!")

        def lineReceived(self, line: bytes) -> None:  # noqa: N802
            self.sendLine(greet(line.rstrip(b"\r")))

    reactor.listenTCP(port, Factory.forProtocol(Greeting), interface=host)  # type: ignore[attr-defined]
    reactor.callWhenRunning(ready, port)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


def _on_loop(main: Callable[[str, int], Any], loop: str) -> Callable[[str, int], None]:
    def run(host: str, port: int) -> None:
        if loop == "uvloop":
            import uvloop

            uvloop.run(main(host, port))
        else:
            asyncio.run(main(host, port))

    return run


PEERS: dict[str, Callable[[str, int], None]] = {
    "udp-tutorial": udp_tutorial,
    "udp-socketserver": udp_socketserver,
    "udp-asyncio": _on_loop(_udp_asyncio, "asyncio"),
    "udp-uvloop": _on_loop(_udp_asyncio, "uvloop"),
    "udp-twisted": udp_twisted,
    "udp-trio": udp_trio,
    "tcp-asyncio": _on_loop(_tcp_protocol, "asyncio"),
    "tcp-uvloop": _on_loop(_tcp_protocol, "uvloop"),
    "tcp-streams": _on_loop(_tcp_streams, "asyncio"),
    "tcp-twisted": tcp_twisted,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        PEERS[args.peer](args.host, args.port)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
