"""Test helpers for udpkit users: a fake network, a background proxy, pytest fixtures.

Rule: the core library stays standard-library only; pytest is imported only
by :mod:`udpkit.testing.plugin`, which pytest loads by itself (entry point
``pytest11``) and which provides the ``udp_proxy`` and ``fake_net`` fixtures.
"""

from udpkit.core.impairment import GilbertElliott, Impairments, LinkSettings
from udpkit.testing.background import BackgroundProxy
from udpkit.testing.fake_net import Datagram, FakeEndpoint, FakeNetwork, ManualClock

__all__ = [
    "BackgroundProxy",
    "Datagram",
    "FakeEndpoint",
    "FakeNetwork",
    "GilbertElliott",
    "Impairments",
    "LinkSettings",
    "ManualClock",
]
