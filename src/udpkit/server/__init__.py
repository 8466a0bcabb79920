"""The asyncio server: thin glue between sockets and the sans-IO core.

``config`` holds the settings, ``binding`` opens the sockets, ``udp`` and
``tcp`` feed requests to the handler and send replies, ``runner`` owns the
life cycle (startup, serving, graceful shutdown, signals).
"""

from udpkit.server.config import ServerConfig
from udpkit.server.runner import Server, serve

__all__ = ["Server", "ServerConfig", "serve"]
