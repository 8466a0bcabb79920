"""Stand-ins for an asyncio transport, for driving a TcpConnection without an event loop's
sockets (tests/unit) or over one end of a socketpair (tests/net)."""

from __future__ import annotations

from typing import Any


class FakeTransport:
    """Records what is written; peer 127.0.0.1:4321; flow control does nothing."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 4321) if name == "peername" else None

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass
