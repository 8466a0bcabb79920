"""udpkit: build, run, probe and test request/response services over UDP,
with TCP on the same port.

The library needs only the standard library::

    from udpkit import Client
    with Client("127.0.0.1", 9999) as client:
        print(client.request(b"Michael"))   # b'Hello, Michael!'
"""

from udpkit.apps import App, echo, greet, greeting, load_app
from udpkit.bench import bench
from udpkit.client import AsyncClient, Client
from udpkit.core.counters import CounterSnapshot
from udpkit.core.errors import (
    AppLoadError,
    BadInput,
    ConnectionClosed,
    LocalProtocolError,
    RemoteProtocolError,
    RequestFailed,
    RequestRefused,
    RequestTimeout,
    UdpkitError,
    UnexpectedReply,
    UsageError,
)
from udpkit.core.exchange import Answered, ClientStats
from udpkit.core.handler import Address, Handler, Peer
from udpkit.core.matching import ExpectReply, NumberedReply, Predicate, ReplyRule
from udpkit.core.retry import RetryPolicy
from udpkit.server import Server, ServerConfig, serve

__version__ = "0.1.0"

__all__ = [
    "Address",
    "Answered",
    "App",
    "AppLoadError",
    "AsyncClient",
    "BadInput",
    "Client",
    "ClientStats",
    "ConnectionClosed",
    "CounterSnapshot",
    "ExpectReply",
    "Handler",
    "LocalProtocolError",
    "NumberedReply",
    "Peer",
    "Predicate",
    "RemoteProtocolError",
    "ReplyRule",
    "RequestFailed",
    "RequestRefused",
    "RequestTimeout",
    "RetryPolicy",
    "Server",
    "ServerConfig",
    "UdpkitError",
    "UnexpectedReply",
    "UsageError",
    "__version__",
    "bench",
    "echo",
    "greet",
    "greeting",
    "load_app",
    "serve",
]
