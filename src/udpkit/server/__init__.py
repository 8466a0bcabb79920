"""The asyncio server: thin glue between sockets and the sans-IO core.

``config`` holds the settings, ``binding`` opens the sockets, ``udp`` and
``tcp`` feed requests to the handler and send replies, ``runner`` owns the
running server (its life cycle is :class:`udpkit.service.Service`'s), and
``supervisor`` runs several of them on one port (``serve --workers``).
"""

from udpkit.server.config import ServerConfig
from udpkit.server.runner import Server, serve

__all__ = ["Server", "ServerConfig", "serve"]
