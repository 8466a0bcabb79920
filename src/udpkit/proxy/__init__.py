"""``udpkit proxy``: a seeded, rootless network-impairment proxy for UDP and TCP.

``config`` holds the settings, ``udp`` and ``tcp`` relay traffic through the
pure policy of :mod:`udpkit.core.impairment` (the ``--upstream`` proxy) or the
toxics of :mod:`udpkit.core.toxics` (named proxies), ``delay_line`` hands packets
over when the policy says, ``control`` is the HTTP JSON API (with
``toxiproxy_api``, Toxiproxy's), ``collection`` and ``named`` the named proxies,
and ``runner`` owns the life cycle.

    async with Proxy(ProxyConfig(upstream_port=9999, port=0, impairments=LinkSettings(
            up=Impairments(loss=0.1)))) as proxy:
        ...  # talk to 127.0.0.1:proxy.port
"""

from udpkit.core.impairment import GilbertElliott, Impairments, LinkSettings
from udpkit.proxy.config import ProxyConfig
from udpkit.proxy.runner import Proxy, run_proxy
from udpkit.proxy.stats import GlueStats, ProxyStats

__all__ = [
    "GilbertElliott",
    "GlueStats",
    "Impairments",
    "LinkSettings",
    "Proxy",
    "ProxyConfig",
    "ProxyStats",
    "run_proxy",
]
