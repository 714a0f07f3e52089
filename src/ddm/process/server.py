"""One worker's MySQL server: accepts clients on listening sockets it is given, owns the pools of its snapshot.

The configuration is an immutable snapshot; `apply_config` swaps it atomically. Clients pick the new snapshot up at
their next statement outside a transaction (a transaction finishes on the snapshot it started with). Pools of data
nodes whose settings changed are replaced; the old ones stop lending and close their connections as they come back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import ssl
import time

from ddm import SERVER_VERSION, __version__
from ddm.config import Config
from ddm.execute.executor import ShardingContext
from ddm.execute.pipeline import Pipelines
from ddm.execute.pool import PoolSet
from ddm.frontend.connection import ClientConnection
from ddm.frontend.idle import IdleWatch
from ddm.protect.limits import LoginThrottle, PreauthGate
from ddm.wire import auth, tls
from ddm.wire.rowcodec import split_text_row
from ddm.wire.session import COLLATIONS_QUERY, DEFAULTS_QUERY, CharsetTable

log = logging.getLogger("ddm.process.server")
DRAIN_SETTLE = 0.3  # seconds a draining worker waits before closing idle clients (see Server.drain)


class Server:
    def __init__(self, config: Config, worker_id: int = 0) -> None:
        self.config = config
        self.worker_id = worker_id
        self.loop = asyncio.get_event_loop()
        self.clients: set[ClientConnection] = set()
        self.pools = PoolSet(dict(config.nodes))
        self.servers: list[asyncio.AbstractServer] = []
        self.started = time.monotonic()
        self.auth_failures = 0
        self.preauth = PreauthGate()  # unauthenticated connections (ddm.protect.limits)
        self.login_throttle = LoginThrottle()  # failed logins per (user, address); settings from the config in use
        self._ids = itertools.count(1)  # connection ids: see next_connection_id
        self._id_base = (worker_id & 0x3FF) << 22
        self.sharding = ShardingContext(self)
        self.node_version = ""
        self.node_ext_caps = 0
        self.charsets: CharsetTable | None = None  # the nodes' collations (charset_table)
        self._charsets_tried = 0.0
        self.tls_context: ssl.SSLContext | None = None
        self.rsa_keys: auth.RSAKeyPair | None = None
        self._setup_keys()
        self.idle_watch = IdleWatch(self)  # wait_timeout (ddm.frontend.idle)
        self.pipelines = Pipelines(self)  # shared connections of nodes with pool.pipelining (ddm.execute.pipeline)

    def _setup_keys(self) -> None:
        cfg = self.config.server.tls
        key_dir = cfg.auto_dir or os.path.join(os.path.dirname(os.path.abspath(self.config.source or ".")),
                                               "ddm-keys")
        if cfg.enabled:
            if cfg.cert and cfg.key:
                cert, key = cfg.cert, cfg.key
            else:
                cert, key = tls.ensure_self_signed(key_dir)
            self.tls_context = tls.server_context(cert, key)
        self.rsa_keys = tls.ensure_rsa_keypair(key_dir)

    def version_string(self) -> str:
        # Behind MariaDB, say so: drivers pick SQL dialect and features from the version (a MySQL 8 string would
        # make them send MySQL-only syntax). The -ddm- part tells ddm's versions apart.
        if self.node_version:
            return f"{self.node_version}-ddm-{__version__}"
        return SERVER_VERSION

    async def _probe_node_version(self) -> None:
        """The first data node's version (for the greeting) and collations (ddm.wire.session.CharsetTable)."""
        node = next(iter(self.config.nodes), None)
        if node is None:
            return
        self._charsets_tried = time.monotonic()
        try:
            conn = await asyncio.wait_for(self.pools.get(node, 0).acquire(), 2.0)
        except Exception as exc:  # the node may be down at start: keep the default string
            log.warning("cannot read the version of data node %s: %s", node, exc)
            return
        if not self.config.server.server_version:
            self.node_version = conn.server_version.decode("utf-8", "replace")
        self.node_ext_caps = conn.server_ext_caps  # what the greeting offers of MariaDB's extended capabilities
        try:
            rows = (await conn.query(COLLATIONS_QUERY)).rows
            defaults = (await conn.query(DEFAULTS_QUERY)).rows
            self.charsets = CharsetTable.from_rows([split_text_row(r, 3) for r in rows],
                                                   tuple(split_text_row(defaults[0], 3)) if defaults else None)
        except Exception as exc:
            log.warning("cannot read the collations of data node %s: %s", node, exc)
        finally:
            conn.pool.release(conn)

    def charset_table(self) -> CharsetTable | None:
        """The data nodes' collations; None until a node has answered (then asked again, at most every 10 s)."""
        table = self.charsets
        if table is None and time.monotonic() - self._charsets_tried > 10:
            self._charsets_tried = time.monotonic()
            self.loop.create_task(self._probe_node_version())
        return table

    def next_connection_id(self) -> int:
        """10 bits of worker id over a 22-bit counter (like snowflake), so ids are unique across workers and KILL can
        name one. The counter wraps inside this worker's range, never into the next worker's, and then skips ids
        still held by a client."""
        while True:
            n = next(self._ids)
            low = n & 0x3FFFFF
            if low == 0:
                continue
            cid = self._id_base | low
            if n <= 0x3FFFFF or all(c.conn_id != cid for c in self.clients):
                return cid

    def questions(self) -> int:
        return sum(c.queries for c in self.clients)

    # --- lifecycle --------------------------------------------------------------------------------------------
    async def start(self, sockets: list[socket.socket]) -> None:
        await self._probe_node_version()
        self.sharding.xa.start()  # XA recovery (ddm.execute.xa): at start, then periodically
        for sock in sockets:
            srv = await self.loop.create_server(lambda: ClientConnection(self), sock=sock, backlog=1024)
            self.servers.append(srv)
        log.info("worker %d serving on %s", self.worker_id,
                 ", ".join(str(s.getsockname()) for s in sockets))

    def apply_config(self, config: Config) -> None:
        old = self.config
        changed = {name for name, node in config.nodes.items() if old.nodes.get(name) != node}
        removed = set(old.nodes) - set(config.nodes)
        for key, pool in list(self.pools.pools.items()):
            if key[0] in changed or key[0] in removed:
                del self.pools.pools[key]
                self.loop.create_task(pool.close())
        self.pools.nodes = dict(config.nodes)
        self.config = config
        self.pipelines.configure(config, changed | removed)

    async def stop_accepting(self) -> None:
        for srv in self.servers:
            srv.close()
        self.servers = []

    async def drain(self, timeout: float) -> None:
        """Close clients as they reach a transaction boundary; give up on the rest after `timeout`."""
        deadline = time.monotonic() + timeout
        if self.clients:
            # The master tells every worker of a retiring generation to stop at once, but each hears it on its own
            # schedule: a client closed here reconnects at once and must land on the successor, not on a sibling
            # that still accepts (it would be closed a second time). Wait until every sibling has stopped.
            await asyncio.sleep(min(DRAIN_SETTLE, timeout))
        while self.clients and time.monotonic() < deadline:
            now = time.monotonic()
            for client in list(self.clients):
                # Only a logged-in client between transactions is closed, and not a young one: a client that
                # connects per transaction is about to send its next statement and will leave by itself.
                if client.at_boundary() and now - client.started > 1.0:
                    client.close()
            if self.clients:
                await asyncio.sleep(0.02)
        for client in list(self.clients):
            client.close()

    async def close(self) -> None:
        self.idle_watch.stop()
        await self.stop_accepting()
        for client in list(self.clients):
            client.close()
        self.pipelines.close()
        await self.sharding.xa.close()
        await self.pools.close()

    def stats(self) -> dict:
        return {"worker": self.worker_id, "connections": len(self.clients), "questions": self.questions(),
                "auth_failures": self.auth_failures, "pools": self.pools.stats(),
                "pipelines": self.pipelines.stats(),
                "config_generation": self.config.generation}
