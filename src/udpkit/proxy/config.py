"""Every setting of a proxy, apart from the running proxy.

Rule: one dataclass, a docstring per field; ``udpkit proxy`` maps its flags
onto these fields, so a library user can do all a command-line user can.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from udpkit.core.errors import UsageError
from udpkit.core.impairment import LinkSettings
from udpkit.core.toxiproxy import ProxySpec


@dataclass(kw_only=True)
class ProxyConfig:
    """How to run an impairment proxy."""

    upstream_host: str = "127.0.0.1"
    """Where the proxied service is (host name or address)."""
    upstream_port: int | None = 9999
    """The service's port (UDP and TCP); ``None``: no anonymous proxy, only the named
    proxies of :attr:`proxies` and of the control API."""
    host: str = "127.0.0.1"
    """Address or host name the proxy listens on."""
    port: int = 0
    """Port for UDP and TCP; 0 picks one free port for both."""
    impairments: LinkSettings = field(default_factory=LinkSettings)
    """What each direction does to traffic; changeable while running."""
    seed: int | None = None
    """Seed of the decisions; ``None``: a random one (reported, so a run can be replayed)."""
    udp: bool = True
    """Proxy UDP."""
    tcp: bool = True
    """Proxy TCP on the same port number."""
    control_host: str = "127.0.0.1"
    """Address of the HTTP control API."""
    control_port: int | None = None
    """Port of the HTTP control API; ``None``: no control API; 0: pick a free one."""
    idle_timeout: float = 60.0
    """Seconds a UDP client may stay silent (both ways) before its session is closed."""
    max_sessions: int = 1024
    """UDP clients tracked at once; a new client beyond it evicts the least recently active."""
    max_connections: int = 1024
    """TCP connections at once; beyond it new ones are refused (reset)."""
    connect_timeout: float = 5.0
    """Seconds to open the upstream TCP connection before giving up on a client."""
    proxies: list[ProxySpec] = field(default_factory=list)
    """Named proxies to create at start (``--config``), each with its toxics."""
    pcap: str | None = None
    """Record every datagram and TCP segment forwarded, both ways, to this pcap file
    (:mod:`udpkit.capture.writer`)."""

    def __post_init__(self) -> None:
        for name in ("port", "upstream_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise UsageError(f"{name} must be in 0..65535 (got {value})")
        if self.upstream_port == 0:
            raise UsageError("upstream port cannot be 0")
        if self.control_port is not None and not 0 <= self.control_port <= 65535:
            raise UsageError(f"control port must be in 0..65535 (got {self.control_port})")
        if not (self.udp or self.tcp):
            raise UsageError("nothing to proxy: both UDP and TCP are off")
        if not (math.isfinite(self.idle_timeout) and self.idle_timeout > 0):
            raise UsageError(f"idle timeout must be > 0 (got {self.idle_timeout})")
        if self.max_sessions < 1 or self.max_connections < 1:
            raise UsageError("max_sessions and max_connections must be >= 1")
        if not self.connect_timeout > 0:
            raise UsageError(f"connect timeout must be > 0 (got {self.connect_timeout})")
