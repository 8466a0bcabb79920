"""Clients: :class:`AsyncClient` (asyncio) and :class:`Client` (blocking).

Both take one overall deadline per request, retry with backoff inside it,
accept a reply only from the server and only when it matches the request, and
say whether a failure was a timeout, a refusal or an unacceptable reply.
"""

from udpkit.client.aio import AsyncClient
from udpkit.client.blocking import Client

__all__ = ["AsyncClient", "Client"]
