"""Fixtures for the pass-through integration tests: a data node, a running ddm in front of it, client helpers.

Import with `from ddm_fixtures import *  # noqa: F403`.

- `node0`: the data node. The `sandbox` fixture's n0 when tests/integration/conftest.py provides one, else a
  private single-node MariaDB started here (ports 35000-35999) and stopped at the end of the session.
- `ddm_proc`: ddm in front of node0 (session). Users ddm/ddm (caching_sha2_password) and native/nativepw
  (mysql_native_password); databases `sbtest` -> n0.ddmit_sbtest, `app` -> n0.app_phys, drv1/drv2 (driver suites), jdbc,
  and `downdb` -> a node whose port has nothing listening; TLS on with a generated certificate. Runs as a
  `ddm-server` subprocess, or in a thread of this process when the subprocess form cannot start.
- `connect(...)`: PyMySQL to ddm; `direct(...)`: PyMySQL straight to node0; `RawClient`: a raw protocol client.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest
import yaml

from ddm.tools import sandbox as sb

__all__ = [
    "DDM", "Node", "RawClient", "ServerError", "PHYS", "connect", "ddm_proc", "direct", "free_port", "node0",
    "private_node", "query_all", "start_ddm", "NO_TLS", "TLS", "two_level_database", "create_two_level_tables",
]

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PHYS = {"sbtest": "ddmit_sbtest", "app": "app_phys",  # logical -> physical database on node0
        "drv1": "drv1_phys", "drv2": "drv2_phys",  # the driver suites' two databases
        "jdbc": "jdbc_phys"}  # test_jdbc.py
USERS = [
    {"name": "ddm", "password": "ddm", "auth_plugin": "caching_sha2_password"},
    {"name": "native", "password": "nativepw", "auth_plugin": "mysql_native_password"},
]
TLS = {"ssl": {"check_hostname": False, "verify_mode": ssl.CERT_NONE}}
NO_TLS = {"ssl_disabled": True}
PORT_RANGE = (35000, 36000)


def free_port() -> int:
    """A free TCP port in 35000-35999 (nothing listening, bindable)."""
    start = PORT_RANGE[0] + (os.getpid() * 7) % 500
    for p in list(range(start, PORT_RANGE[1])) + list(range(PORT_RANGE[0], start)):
        if not sb.port_in_use(p):
            return p
    raise RuntimeError("no free port in 35000-35999")


@dataclass
class Node:
    name: str
    port: int
    socket: str | None
    user: str
    password: str
    pid: int | None = None
    home: str | None = None  # private sandbox dir (ours to stop)

    def conf(self) -> dict[str, Any]:
        d = {"host": "127.0.0.1", "port": self.port, "user": self.user, "password": self.password,
             "pool": {"min_size": 0, "max_size": 32, "acquire_timeout": 5, "connect_timeout": 3}}
        return d


def private_node(root: str, start: int = 35000) -> Node:
    """Start a single-node private MariaDB (via ddm.tools.sandbox) under `root`; stop it with sb.down(root)."""
    base = sb.find_free_base(start + (os.getpid() % 40) * 10, nodes=1, step=10, tries=80)
    box = sb.up(root, nodes=1, replicas=0, base_port=base, databases=())
    p = box.primary("n0")
    return Node("n0", p.port, p.socket, box.node_user, box.node_password, pid=p.pid, home=root)


@pytest.fixture(scope="session")
def node0(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    box = None
    if not os.environ.get("DDM_IT_PRIVATE_NODE"):
        try:
            box = request.getfixturevalue("sandbox")
        except pytest.FixtureLookupError:
            pass
        except Exception as exc:  # e.g. a port race with a concurrent run: a private node still works
            print(f"sandbox fixture failed ({exc!s:.200}); starting a private node", file=sys.stderr)
    if box is not None:
        p = box.primary("n0")
        node = Node("n0", p.port, p.socket, box.node_user, box.node_password, pid=p.pid)
    else:
        if not sb.mariadb_available():
            pytest.skip(f"MariaDB server not installed: {sb.APT_INSTALL}")
        node = private_node(str(tmp_path_factory.mktemp("node0")))
    with _direct(node, None) as c, c.cursor() as cur:
        for phys in PHYS.values():
            cur.execute(f"DROP DATABASE IF EXISTS `{phys}`")
            cur.execute(f"CREATE DATABASE `{phys}`")
        cur.execute("SET GLOBAL max_allowed_packet = 64 * 1024 * 1024")  # 20 MiB blobs; new connections only
    try:
        yield node
    finally:
        if node.home:
            sb.down(node.home)


def _direct(node: Node, db: str | None, **kw: Any) -> pymysql.connections.Connection:
    params = {"host": "127.0.0.1", "port": node.port, "user": node.user, "password": node.password,
              "database": db, "autocommit": True, "charset": "utf8mb4"}
    params.update(kw)
    return pymysql.connect(**params)


# ------------------------------------------------------------------------------------------------ ddm runner


def ddm_config(port: int, nodes: dict[str, dict[str, Any]], databases: dict[str, Any], **server: Any) -> dict:
    srv = {"listen": f"127.0.0.1:{port}", "workers": 1, "tls": {"cert": None, "key": None, "require": False},
           "log_level": "info", "drain_timeout": 2}
    srv.update(server)
    return {"server": srv, "users": [dict(u) for u in USERS], "nodes": nodes, "databases": databases}


@dataclass
class DDM:
    """A running ddm: `mode` is "subprocess" (ddm-server) or "thread"."""

    port: int
    workdir: Path
    mode: str = ""
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    _loop: Any = None
    _server: Any = None
    _thread: threading.Thread | None = None
    extra: dict = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.workdir / "ddm.yaml"

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self._thread is not None and self._thread.is_alive()

    def worker_pids(self) -> list[int]:
        if self.proc is None:
            return []
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return [int(x) for x in out.stdout.split()]

    def log(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-4000:]
        return ""

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        elif self._loop is not None:
            import asyncio

            fut = asyncio.run_coroutine_threadsafe(self._server.close(), self._loop)
            with contextlib.suppress(Exception):
                fut.result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def _wait_greeting(port: int, timeout: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                head = s.recv(5)
                if len(head) == 5 and head[4] == 0x0A:
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def _ddm_server_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "ddm-server"
    if exe.exists():
        return [str(exe)]
    if shutil.which("ddm-server"):
        return ["ddm-server"]
    return [sys.executable, "-m", "ddm.process.server_main"]


def start_ddm(workdir: Path, cfg: dict, mode: str | None = None) -> DDM:
    """Write cfg to workdir/ddm.yaml and start ddm on it: the subprocess form first, the thread form if that fails
    (or as `mode` / $DDM_IT_MODE says)."""
    workdir.mkdir(parents=True, exist_ok=True)
    d = DDM(port=int(cfg["server"]["listen"].rsplit(":", 1)[1]), workdir=workdir)
    d.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    mode = mode or os.environ.get("DDM_IT_MODE") or "subprocess"
    if mode == "subprocess":
        d.log_path = workdir / "ddm-server.log"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
        with open(d.log_path, "wb") as log:
            d.proc = subprocess.Popen([*_ddm_server_cmd(), "--config", str(d.config_path)], stdout=log,
                                      stderr=log, env=env, start_new_session=True)
        if _wait_greeting(d.port, 60, d.alive):
            d.mode = "subprocess"
            return d
        d.stop()
        d.proc = None
        print(f"ddm-server did not start, using the thread form:\n{d.log()}", file=sys.stderr)
    _start_thread(d)
    if not _wait_greeting(d.port, 30, d.alive):
        raise RuntimeError(f"ddm (thread form) did not start on port {d.port}")
    d.mode = "thread"
    return d


def _start_thread(d: DDM) -> None:
    import asyncio

    import uvloop

    from ddm import config as config_mod
    from ddm.process.server import Server

    cfg = config_mod.load(str(d.config_path))
    started = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", d.port))
            sock.listen(1024)
            d._server = Server(cfg)
            loop.run_until_complete(d._server.start([sock]))
            d._loop = loop
        except BaseException as exc:  # reported to the starting thread
            errors.append(exc)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.close()

    d._thread = threading.Thread(target=run, name="ddm-it", daemon=True)
    d._thread.start()
    started.wait(30)
    if errors:
        raise errors[0]


@pytest.fixture(scope="session")
def ddm_proc(node0: Node, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DDM]:
    port = free_port()
    down_port = _unused_port()
    nodes = {"n0": node0.conf(),
             "ndown": {"host": "127.0.0.1", "port": down_port, "user": "x", "password": "x",
                       "pool": {"connect_timeout": 2, "acquire_timeout": 3}}}
    dbs = {name: {"node": "n0", "database": phys} for name, phys in PHYS.items()}
    dbs["downdb"] = {"node": "ndown"}
    d = start_ddm(tmp_path_factory.mktemp("ddm"), ddm_config(port, nodes, dbs))
    d.extra["down_port"] = down_port
    try:
        yield d
    finally:
        d.stop()


def _unused_port() -> int:
    """A port with nothing listening (bound and released at once, outside the range other fixtures pick from)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def connect(ddm_proc: DDM) -> Iterator[Callable[..., pymysql.connections.Connection]]:
    """connect(database="sbtest", user="ddm", password=None, **pymysql_kwargs) -> PyMySQL connection to ddm."""
    made: list[pymysql.connections.Connection] = []

    def _connect(database: str | None = "sbtest", user: str = "ddm", password: str | None = None,
                 **kw: Any) -> pymysql.connections.Connection:
        if password is None:
            password = {"ddm": "ddm", "native": "nativepw"}.get(user, "")
        params: dict[str, Any] = {"host": "127.0.0.1", "port": ddm_proc.port, "user": user, "password": password,
                                  "database": database, "autocommit": True, "charset": "utf8mb4",
                                  "connect_timeout": 10, "read_timeout": 60}
        params.update(NO_TLS)
        params.update(kw)
        if "ssl" in kw:
            params.pop("ssl_disabled", None)
        conn = pymysql.connect(**params)
        made.append(conn)
        return conn

    yield _connect
    for c in made:
        with contextlib.suppress(Exception):
            c.close()


@pytest.fixture
def direct(node0: Node) -> Iterator[Callable[..., pymysql.connections.Connection]]:
    """direct(logical_db="sbtest") -> PyMySQL straight to node0, in the physical database behind `logical_db`."""
    made: list[pymysql.connections.Connection] = []

    def _connect(db: str | None = "sbtest", **kw: Any) -> pymysql.connections.Connection:
        conn = _direct(node0, PHYS.get(db, db), **kw)
        made.append(conn)
        return conn

    yield _connect
    for c in made:
        with contextlib.suppress(Exception):
            c.close()


def two_level_database(datasource_nodes: list[str], database: str, table: str, column: str,
                       tables: int = 2) -> dict[str, Any]:
    """Rules of a logical database whose `table` is split by `column` over one physical database per entry of
    datasource_nodes (`{database}_{i}`, on that node) x `tables` tables (`{table}_{t}`): database = key % D,
    table = key / D % T (the two-level scheme)."""
    n = len(datasource_nodes)
    nodes = "[" + ", ".join(repr(x) for x in datasource_nodes) + "]"
    return {"datasources": {f"ds${{0..{n - 1}}}": {"node": f"${{{nodes}}}", "database": f"{database}_${{0..{n - 1}}}"}},
            "tables": {table: {"nodes": f"ds${{0..{n - 1}}}.{table}_${{0..{tables - 1}}}",
                               "database_strategy": {"column": column, "algorithm": "mod"},
                               "table_strategy": {"column": column, "algorithm": "two_level"}}}}


def create_two_level_tables(node: Node, databases: int, database: str, table: str, columns: str,
                            tables: int = 2, rows: Callable[[int, int], str] | None = None) -> None:
    """Drop and create `{database}_{i}` (i < databases) on node, each with `{table}_{t}` (t < tables) of `columns`;
    rows(i, t), when given, is the VALUES list inserted into each table."""
    with _direct(node, None) as c, c.cursor() as cur:
        for i in range(databases):
            cur.execute(f"DROP DATABASE IF EXISTS {database}_{i}")
            cur.execute(f"CREATE DATABASE {database}_{i}")
            for t in range(tables):
                cur.execute(f"CREATE TABLE {database}_{i}.{table}_{t} ({columns}) ENGINE=InnoDB")
                if rows is not None:
                    cur.execute(f"INSERT INTO {database}_{i}.{table}_{t} VALUES {rows(i, t)}")


def query_all(conn: pymysql.connections.Connection, sql: str, args: Any = None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return list(cur.fetchall())


# ------------------------------------------------------------------------------------------------ raw client

CLIENT_LONG_PASSWORD, CLIENT_FOUND_ROWS, CLIENT_CONNECT_WITH_DB = 1, 2, 8
CLIENT_PROTOCOL_41, CLIENT_TRANSACTIONS, CLIENT_SECURE_CONNECTION = 0x200, 0x2000, 0x8000
CLIENT_MULTI_STATEMENTS, CLIENT_MULTI_RESULTS, CLIENT_PS_MULTI_RESULTS = 1 << 16, 1 << 17, 1 << 18
CLIENT_PLUGIN_AUTH, CLIENT_LONG_FLAG = 1 << 19, 4
RAW_CAPS = (CLIENT_LONG_PASSWORD | CLIENT_LONG_FLAG | CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION | CLIENT_MULTI_RESULTS | CLIENT_PS_MULTI_RESULTS | CLIENT_PLUGIN_AUTH)


class ServerError(Exception):
    def __init__(self, code: int, sqlstate: str, message: str) -> None:
        super().__init__(f"({code}, {sqlstate}) {message}")
        self.code, self.sqlstate, self.message = code, sqlstate, message


def native_scramble(password: bytes, salt: bytes) -> bytes:
    if not password:
        return b""
    h1 = hashlib.sha1(password).digest()
    h2 = hashlib.sha1(h1).digest()
    return bytes(a ^ b for a, b in zip(h1, hashlib.sha1(salt + h2).digest(), strict=True))


def sha2_scramble(password: bytes, salt: bytes) -> bytes:
    if not password:
        return b""
    p1 = hashlib.sha256(password).digest()
    p2 = hashlib.sha256(hashlib.sha256(p1).digest() + salt).digest()
    return bytes(a ^ b for a, b in zip(p1, p2, strict=True))


def lenenc(data: bytes, pos: int) -> tuple[int | None, int]:
    c = data[pos]
    if c < 0xFB:
        return c, pos + 1
    if c == 0xFB:
        return None, pos + 1
    if c == 0xFC:
        return struct.unpack_from("<H", data, pos + 1)[0], pos + 3
    if c == 0xFD:
        return int.from_bytes(data[pos + 1:pos + 4], "little"), pos + 4
    return struct.unpack_from("<Q", data, pos + 1)[0], pos + 9


def lenenc_bytes(b: bytes) -> bytes:
    n = len(b)
    if n < 0xFB:
        return bytes([n]) + b
    if n < 1 << 16:
        return b"\xfc" + struct.pack("<H", n) + b
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little") + b
    return b"\xfe" + struct.pack("<Q", n) + b


def column_type(coldef: bytes) -> int:
    pos = 0
    for _ in range(6):  # catalog, schema, table, org_table, name, org_name
        n, pos = lenenc(coldef, pos)
        pos += n or 0
    return coldef[pos + 1 + 2 + 4]  # 0x0c, charset, length, type


def column_name(coldef: bytes) -> str:
    pos = 0
    for _ in range(4):
        n, pos = lenenc(coldef, pos)
        pos += n or 0
    n, pos = lenenc(coldef, pos)
    return coldef[pos:pos + n].decode()


class RawClient:
    """A minimal MySQL protocol client (no DEPRECATE_EOF), enough to drive commands PyMySQL cannot send."""

    def __init__(self, port: int, user: str | None = "native", password: str = "nativepw",
                 db: str | None = "sbtest", caps: int = RAW_CAPS, timeout: float = 30.0, login: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.seq = 0
        self.caps = caps
        if login:
            self.login(user, password, db)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # framing
    def _recv_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError("connection closed by the server")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_packet(self) -> bytes:
        payload = b""
        while True:
            head = self._recv_exact(4)
            n = int.from_bytes(head[:3], "little")
            self.seq = (head[3] + 1) & 0xFF
            payload += self._recv_exact(n)
            if n < 0xFFFFFF:
                return payload

    def write_packet(self, payload: bytes, seq: int | None = None) -> None:
        seq = self.seq if seq is None else seq
        out = []
        while True:
            chunk, payload = payload[:0xFFFFFF], payload[0xFFFFFF:]
            out.append(len(chunk).to_bytes(3, "little") + bytes([seq & 0xFF]) + chunk)
            seq += 1
            if len(chunk) < 0xFFFFFF:
                break
        self.seq = seq & 0xFF
        self.sock.sendall(b"".join(out))

    def closed_by_server(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (reads and drops whatever comes first)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    # login
    def greeting(self) -> bytes:
        g = self.read_packet()
        assert g[0] == 0x0A, g[:20]
        pos = g.index(b"\0", 1) + 1 + 4
        salt = g[pos:pos + 8]
        pos += 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10
        salt += g[pos:pos + 12]
        self.salt = salt
        return g

    def handshake_response(self, user: str, password: str, db: str | None, plugin: bytes) -> bytes:
        caps = self.caps | (CLIENT_CONNECT_WITH_DB if db else 0)
        scr = (sha2_scramble if plugin == b"caching_sha2_password" else native_scramble)(password.encode(), self.salt)
        p = struct.pack("<IIB", caps, 1 << 24, 45) + b"\0" * 23 + user.encode() + b"\0"
        p += bytes([len(scr)]) + scr
        if db:
            p += db.encode() + b"\0"
        return p + plugin + b"\0"

    def login(self, user: str | None, password: str, db: str | None,
              plugin: bytes = b"mysql_native_password") -> None:
        self.greeting()
        self.write_packet(self.handshake_response(user or "", password, db, plugin))
        self.finish_auth(password)

    def finish_auth(self, password: str) -> None:
        while True:
            p = self.read_packet()
            if p[0] == 0x00:
                return
            if p[0] == 0xFF:
                raise self.error(p)
            if p[0] == 0xFE:  # auth switch
                end = p.index(b"\0", 1)
                plugin, self.salt = p[1:end], p[end + 1:].rstrip(b"\0")
                f = sha2_scramble if plugin == b"caching_sha2_password" else native_scramble
                self.write_packet(f(password.encode(), self.salt))
            elif p[:2] == b"\x01\x03":
                continue  # fast auth success; OK follows
            else:
                raise AssertionError(f"unexpected auth packet {p[:20]!r}")

    @staticmethod
    def error(p: bytes) -> ServerError:
        code = struct.unpack_from("<H", p, 1)[0]
        if p[3:4] == b"#":
            return ServerError(code, p[4:9].decode(), p[9:].decode("utf-8", "replace"))
        return ServerError(code, "", p[3:].decode("utf-8", "replace"))

    # commands
    def command(self, payload: bytes) -> None:
        self.write_packet(payload, 0)

    def ok(self, payload: bytes) -> bytes:
        """Send a command answered by OK; return the OK packet (raises ServerError on ERR)."""
        self.command(payload)
        p = self.read_packet()
        if p[0] == 0xFF:
            raise self.error(p)
        assert p[0] in (0x00, 0xFE), p[:20]
        return p

    def read_result(self, binary: bool = False) -> tuple[list[bytes], list[bytes], bytes]:
        """One result: (column definitions, raw rows, final EOF/OK). Raises ServerError."""
        p = self.read_packet()
        if p[0] == 0xFF:
            raise self.error(p)
        if p[0] == 0x00:
            return [], [], p
        n, _ = lenenc(p, 0)
        cols = [self.read_packet() for _ in range(n)]
        eof = self.read_packet()
        assert eof[0] == 0xFE, eof[:10]
        rows = []
        while True:
            r = self.read_packet()
            if r[0] == 0xFE and len(r) < 9:
                return cols, rows, r
            if r[0] == 0xFF:
                raise self.error(r)
            rows.append(r)

    def query(self, sql: str | bytes) -> list[tuple]:
        """COM_QUERY; rows of the (single) result as tuples of bytes/None."""
        self.command(b"\x03" + (sql.encode() if isinstance(sql, str) else sql))
        cols, rows, _ = self.read_result()
        out = []
        for r in rows:
            pos, vals = 0, []
            for _ in cols:
                n, pos = lenenc(r, pos)
                vals.append(None if n is None else r[pos:pos + n])
                pos += n or 0
            out.append(tuple(vals))
        return out

    # prepared statements
    def prepare(self, sql: str) -> tuple[int, int, int]:
        """COM_STMT_PREPARE -> (statement id, columns, params)."""
        self.command(b"\x16" + sql.encode())
        p = self.read_packet()
        if p[0] == 0xFF:
            raise self.error(p)
        stmt_id, ncols, nparams = struct.unpack_from("<IHH", p, 1)
        for count in (nparams, ncols):
            if count:
                for _ in range(count):
                    self.read_packet()
                assert self.read_packet()[0] == 0xFE
        return stmt_id, ncols, nparams

    def execute(self, stmt_id: int, params: list[Any] | None = None, send_types: bool = True,
                flags: int = 0) -> list[tuple]:
        """COM_STMT_EXECUTE with int/bytes/str/None parameters; decodes the binary rows (ints, strings)."""
        self.command(self.execute_payload(stmt_id, params or [], send_types, flags))
        cols, rows, _ = self.read_result()
        types = [column_type(c) for c in cols]
        return [decode_binary_row(r, types) for r in rows]

    @staticmethod
    def execute_payload(stmt_id: int, params: list[Any], send_types: bool = True, flags: int = 0) -> bytes:
        p = b"\x17" + struct.pack("<IBI", stmt_id, flags, 1)
        if not params:
            return p
        bitmap = bytearray((len(params) + 7) // 8)
        types, values = b"", b""
        for i, v in enumerate(params):
            if v is None:
                bitmap[i // 8] |= 1 << (i % 8)
                types += b"\x06\x00"
            elif isinstance(v, int):
                types += b"\x08\x00"
                values += struct.pack("<q", v)
            else:
                types += b"\xfd\x00"
                values += lenenc_bytes(v.encode() if isinstance(v, str) else v)
        return p + bytes(bitmap) + (b"\x01" + types if send_types else b"\x00") + values

    def send_long_data(self, stmt_id: int, param: int, data: bytes) -> None:
        self.write_packet(b"\x18" + struct.pack("<IH", stmt_id, param) + data, 0)  # no response


def decode_binary_row(r: bytes, types: list[int]) -> tuple:
    n = len(types)
    nb = (n + 7 + 2) // 8
    bitmap = r[1:1 + nb]
    pos = 1 + nb
    vals: list[Any] = []
    for i, t in enumerate(types):
        if bitmap[(i + 2) // 8] & (1 << ((i + 2) % 8)):
            vals.append(None)
        elif t == 8:  # LONGLONG
            vals.append(struct.unpack_from("<q", r, pos)[0])
            pos += 8
        elif t in (3, 9):  # LONG, INT24
            vals.append(struct.unpack_from("<i", r, pos)[0])
            pos += 4
        elif t == 2:
            vals.append(struct.unpack_from("<h", r, pos)[0])
            pos += 2
        elif t == 1:
            vals.append(struct.unpack_from("<b", r, pos)[0])
            pos += 1
        else:  # strings, blobs, decimals: length-encoded
            ln, pos = lenenc(r, pos)
            vals.append(r[pos:pos + ln])
            pos += ln
    return tuple(vals)
