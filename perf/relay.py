"""A bare uvloop byte relay (no MySQL parsing at all): the floor a Python proxy on this machine cannot go below.

    python perf/relay.py LISTEN_PORT TARGET_HOST TARGET_PORT

perf/bench.py --relay runs it next to ddm and reports its CPU per query in the same run, so ddm's cost can be read
against what the kernel and the event loop alone cost here (reference/baselines.md measured 10 us on a quiet box).
"""

from __future__ import annotations

import asyncio
import socket
import sys

import uvloop


class Upstream(asyncio.Protocol):
    def __init__(self, down: Downstream) -> None:
        self.down = down
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.down.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.down.transport.close()


class Downstream(asyncio.Protocol):
    target: tuple[str, int] = ("127.0.0.1", 3306)

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending: list[bytes] = []
        self.up: Upstream | None = None
        asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(lambda: Upstream(self), *self.target)
        except OSError:
            self.transport.close()
            return
        self.up = up
        for chunk in self.pending:
            up.transport.write(chunk)

    def data_received(self, data: bytes) -> None:
        if self.up is not None:
            self.up.transport.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.close()


async def main(port: int, host: str, target_port: int) -> None:
    Downstream.target = (host, target_port)
    server = await asyncio.get_running_loop().create_server(Downstream, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
