"""A private MariaDB sandbox for tests, demos and benchmarks: N data nodes, each with R GTID replicas.

Every instance lives under one directory (datadir, my.cnf, socket, pid file, error log) and listens on 127.0.0.1
only. `up()` also writes `DIR/ddm.yaml`, a complete ddm configuration pointing at the nodes, and `DIR/sandbox.json`,
the state that `status()` and `down()` read, so a sandbox started by one process can be inspected or stopped by
another (the CLI, pytest, perf/bench.py).

Port layout (BASE = base_port, default 3310): primary of node i on BASE+i; replica j (1-based) of node i on
BASE + 10*j + i (stride grows to N when N > 10). ddm listens on BASE-3 (3307 by default) unless told otherwise.

SQL is sent with the `mariadb` command-line client over the unix socket as root, so this module needs no MySQL
driver (PyMySQL is only a test dependency).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

DEFAULT_BASE_PORT = 3310
STATE_FILE = "sandbox.json"
CONFIG_FILE = "ddm.yaml"
NODE_USER = "ddm_node"
NODE_PASSWORD = "ddm_node"  # a localhost-only sandbox: a fixed password keeps demos and direct sysbench runs simple
REPL_USER = "ddm_repl"
REPL_PASSWORD = "ddm_repl"
# The first user is the one README, demo and docs tell newcomers to use: mysql_native_password, which every common
# client library handles under concurrency (libmariadb, sysbench's driver, can fail with "Plugin caching_sha2_password
# could not be loaded: it is already loaded" when several threads connect at once, a client-side race).
# ddm_sha2 is for the clients and tests that want caching_sha2_password; ddm_native is kept as an alias of the
# default user for the perf/ scripts that log in with it.
CLIENT_USERS = (
    {"name": "ddm", "password": "ddm", "auth_plugin": "mysql_native_password"},
    {"name": "ddm_sha2", "password": "ddm", "auth_plugin": "caching_sha2_password"},
    {"name": "ddm_native", "password": "ddm", "auth_plugin": "mysql_native_password"},
)
START_TIMEOUT = 60.0
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the NUL

# Places Debian/Ubuntu put the server binaries; /usr/sbin is often not on a non-root PATH.
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/usr/local/mysql/bin"])
APT_INSTALL = "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mariadb-server mariadb-client"


class SandboxError(RuntimeError):
    """The sandbox cannot be started, inspected or stopped; the message says why and what to do."""


@dataclass
class Instance:
    """One mariadbd process: a node's primary or one of its replicas."""

    name: str  # n0 for a primary, n0r1 for its first replica
    node: str
    role: str  # "primary" | "replica"
    port: int
    server_id: int
    home: str
    socket: str
    pid: int | None = None

    @property
    def datadir(self) -> str:
        return os.path.join(self.home, "data")

    @property
    def cnf(self) -> str:
        return os.path.join(self.home, "my.cnf")

    @property
    def pid_file(self) -> str:
        return os.path.join(self.home, "mariadbd.pid")

    @property
    def log(self) -> str:
        return os.path.join(self.home, "error.log")


@dataclass
class Sandbox:
    """What `up()` started; also the content of sandbox.json."""

    dir: str
    instances: list[Instance]
    listen_host: str = "127.0.0.1"
    listen_port: int = DEFAULT_BASE_PORT - 3
    node_user: str = NODE_USER
    node_password: str = NODE_PASSWORD
    users: list[dict[str, str]] = field(default_factory=lambda: [dict(u) for u in CLIENT_USERS])
    config_path: str = ""
    databases: dict[str, list[list[str]]] = field(default_factory=dict)  # logical db -> [[node, physical db]]

    @property
    def nodes(self) -> list[str]:
        return [i.node for i in self.instances if i.role == "primary"]

    def primary(self, node: str) -> Instance:
        for inst in self.instances:
            if inst.node == node and inst.role == "primary":
                return inst
        raise KeyError(node)

    def replicas(self, node: str) -> list[Instance]:
        return [i for i in self.instances if i.node == node and i.role == "replica"]

    @property
    def client_user(self) -> str:
        return self.users[0]["name"]

    @property
    def client_password(self) -> str:
        return self.users[0]["password"]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sandbox:
        fields = dict(data)
        fields["instances"] = [Instance(**i) for i in data["instances"]]
        return cls(**fields)


# ---------------------------------------------------------------------------------------------------- binaries


def find_binary(*names: str) -> str | None:
    for name in names:
        path = shutil.which(name, path=_SEARCH_PATH)
        if path:
            return path
    return None


def ensure_mariadb(install: bool = True) -> dict[str, str]:
    """Paths of mariadbd, mariadb-install-db, mariadb and mariadb-admin; installs them with apt when missing and
    running as root, otherwise raises SandboxError with the exact command to run."""
    wanted = {
        "mariadbd": ("mariadbd", "mysqld"),
        "install_db": ("mariadb-install-db", "mysql_install_db"),
        "client": ("mariadb", "mysql"),
        "admin": ("mariadb-admin", "mysqladmin"),
    }
    found = {key: find_binary(*names) for key, names in wanted.items()}
    if all(found.values()):
        return {k: v for k, v in found.items() if v}
    missing = ", ".join(wanted[k][0] for k, v in found.items() if not v)
    if not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        raise SandboxError(f"{missing} not found; install MariaDB first:\n  sudo sh -c '{APT_INSTALL}'")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "mariadb-server", "mariadb-client"]):
        if subprocess.run(cmd, env=env).returncode != 0:
            raise SandboxError(f"`{' '.join(cmd)}` failed; install MariaDB by hand: {APT_INSTALL}")
    return ensure_mariadb(install=False)


def mariadb_available() -> bool:
    return all(find_binary(n) for n in ("mariadbd", "mariadb-install-db", "mariadb", "mariadb-admin"))


# ---------------------------------------------------------------------------------------------------- processes


def _proc_state(pid: int) -> str | None:
    """The /proc state letter of pid, None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


def _is_mariadbd(pid: int | None) -> bool:
    """pid is a live mariadbd (not a zombie, not a recycled pid now used by something else)."""
    if not pid:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if we are its parent and it has exited
    except ChildProcessError:
        pass
    if _proc_state(pid) in (None, "Z", "X"):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0]
    except OSError:
        return False
    return os.path.basename(argv0) in (b"mariadbd", b"mysqld")


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Like the servers themselves: TIME_WAIT leftovers of a previous run do not count, listeners do.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def find_free_base(start: int, nodes: int, replicas: int | Sequence[int] = 0, step: int = 100,
                   tries: int = 50) -> int:
    """The first base port from `start` (in `step`s) where every port the layout needs, ddm's included, is free."""
    for k in range(tries):
        base = start + k * step
        ports = [p for _, _, p in _layout(base, nodes, _replica_counts(nodes, replicas))] + [base - 3]
        if not any(port_in_use(p) for p in ports):
            return base
    raise SandboxError(f"no free port range found from {start} (step {step}, {tries} tries)")


def _replica_counts(nodes: int, replicas: int | Sequence[int]) -> list[int]:
    if isinstance(replicas, int):
        return [replicas] * nodes
    counts = list(replicas) + [0] * (nodes - len(replicas))
    return counts[:nodes]


def _layout(base: int, nodes: int, counts: Sequence[int]) -> list[tuple[str, int, int]]:
    """(node index, replica number (0 = primary), port) for every instance, primaries first."""
    stride = max(10, nodes)
    out = [(f"n{i}", 0, base + i) for i in range(nodes)]
    for i, count in enumerate(counts):
        out += [(f"n{i}", j, base + stride * j + i) for j in range(1, count + 1)]
    return out


# ---------------------------------------------------------------------------------------------------- SQL


def run_sql(inst: Instance, sql: str, client: str | None = None, timeout: float = 60.0) -> str:
    """Run SQL as root over the instance's socket; tab-separated output without headers."""
    cmd = [client or find_binary("mariadb", "mysql") or "mariadb", "--no-defaults", "-uroot", "-S", inst.socket,
           "--batch", "--skip-column-names", "-e", sql]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise SandboxError(f"{inst.name} (port {inst.port}): {res.stderr.strip()}\n  while running: {sql[:200]}")
    return res.stdout


def _quote(s: str) -> str:
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ident(s: str) -> str:
    return "`" + s.replace("`", "``") + "`"


# ---------------------------------------------------------------------------------------------------- config


_RANGE = re.compile(r"\$\{\s*([^}]*)\}")


def expand(expr: str) -> list[str]:
    """Expand `${a..b}` ranges (and `${x,y,z}` lists) in order, cartesian over several groups:
    "ds${0..1}.t${0..1}" -> ["ds0.t0", "ds0.t1", "ds1.t0", "ds1.t1"]. A zero-padded start keeps its width."""
    m = _RANGE.search(expr)
    if not m:
        return [expr]
    body = m.group(1)
    if ".." in body:
        lo_s, hi_s = (x.strip() for x in body.split("..", 1))
        lo, hi = int(lo_s), int(hi_s)
        width = len(lo_s) if lo_s.startswith("0") and len(lo_s) > 1 else 0
        step = 1 if hi >= lo else -1
        items = [str(v).zfill(width) for v in range(lo, hi + step, step)]
    else:
        items = [x.strip() for x in body.split(",")]
    head, tail = expr[: m.start()], expand(expr[m.end():])
    return [head + item + rest for item in items for rest in tail]


def _as_names(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [name for v in value for name in expand(str(v))]
    return expand(str(value))


def datasource_locations(db_name: str, spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(node, physical database) of every data source of one logical database in a rules/config mapping.

    Covers the forms in docs/CONTRACTS.md: pass-through `{node, database}`, the explicit mapping
    `{ds0: {node, database}}` (keys may be `${a..b}` expressions, with node/database expanding to one value or one
    per name), and the compact `{names, nodes, database}` form (i-th name on nodes[i % len(nodes)])."""
    if "datasources" not in spec:
        return [(str(spec.get("node", "n0")), str(spec.get("database", db_name)))]
    ds = spec["datasources"]
    if isinstance(ds, Mapping) and "names" in ds:
        names, nodes = _as_names(ds["names"]), _as_names(ds["nodes"])
        dbs = _as_names(ds.get("database", db_name))
        return [(nodes[i % len(nodes)], dbs[i] if len(dbs) == len(names) else dbs[i % len(dbs)])
                for i in range(len(names))]
    out: list[tuple[str, str]] = []
    for key, val in (ds or {}).items():
        names = expand(str(key))
        val = val or {}
        nodes, dbs = _as_names(val.get("node", "n0")), _as_names(val.get("database", db_name))
        out += [(nodes[i % len(nodes)], dbs[i % len(dbs)]) for i in range(len(names))]
    return out


def _locations_from_config(path: str) -> dict[str, list[tuple[str, str]]] | None:
    """Ask ddm.config.model (when its loader exists) where the data sources are; None = loader not available yet."""
    try:
        from ddm import config as ddm_config

        cfg = ddm_config.load(path)
    except (ImportError, AttributeError, NotImplementedError):
        return None
    except ValueError as exc:  # ConfigError: ddm-server would refuse this file too
        raise SandboxError(f"{path}: {exc}") from None
    return {name: [(d.node, d.database) for d in db.datasources.values()] for name, db in cfg.databases.items()}


def build_config(sb: Sandbox, rules: Mapping[str, Any] | None, workers: int = 1) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    for node in sb.nodes:
        p = sb.primary(node)
        nodes[node] = {
            "host": "127.0.0.1",
            "port": p.port,
            "unix_socket": p.socket,
            "user": sb.node_user,
            "password": sb.node_password,
            "replicas": [{"host": "127.0.0.1", "port": r.port, "unix_socket": r.socket, "weight": 1}
                         for r in sb.replicas(node)],
            "pool": {"min_size": 0, "max_size": 64},
        }
    databases: dict[str, Any] = {"sbtest": {"node": "n0", "database": "sbtest"}}
    databases.update(dict((rules or {}).get("databases") or {}))
    return {
        "server": {
            "listen": f"{sb.listen_host}:{sb.listen_port}",
            "workers": workers,
            "tls": {"cert": None, "key": None, "require": False},
            "log_level": "info",
        },
        "users": [dict(u) for u in sb.users],
        "nodes": nodes,
        "databases": databases,
    }


def read_rules(path: str) -> dict[str, Any]:
    with open(path) as f:
        rules = yaml.safe_load(f) or {}
    if not isinstance(rules, dict) or not isinstance(rules.get("databases"), dict):
        raise SandboxError(f"{path}: a rules file needs a top-level `databases:` mapping")
    return rules


# ---------------------------------------------------------------------------------------------------- lifecycle


def _socket_path(home: str, name: str, sandbox_dir: str) -> str:
    path = os.path.join(home, "mariadbd.sock")
    if len(path.encode()) <= SUN_PATH_MAX:
        return path
    # Deep directories overflow sun_path; keep sockets in a short per-sandbox directory instead.
    short = os.path.join(tempfile.gettempdir(), "ddm-sb-" + hashlib.sha1(sandbox_dir.encode()).hexdigest()[:10])
    os.makedirs(short, exist_ok=True)
    return os.path.join(short, f"{name}.sock")


def _write_cnf(inst: Instance, as_root: bool) -> None:
    lines = [
        "[mariadbd]",
        f"datadir = {inst.datadir}",
        f"port = {inst.port}",
        f"socket = {inst.socket}",
        f"pid-file = {inst.pid_file}",
        f"log-error = {inst.log}",
        f"tmpdir = {os.path.join(inst.home, 'tmp')}",
        "bind-address = 127.0.0.1",
        f"server-id = {inst.server_id}",
        f"log-bin = {os.path.join(inst.home, 'binlog', 'mariadb-bin')}",
        f"relay-log = {os.path.join(inst.home, 'binlog', 'relay-bin')}",
        "binlog_format = ROW",
        "gtid_strict_mode = 1",
        "log_slave_updates = 1",
        "skip-name-resolve",
        "skip-external-locking",
        # Test/benchmark settings: small memory, no fsync per commit; durability is not the point here.
        "innodb_buffer_pool_size = 128M",
        "innodb_log_file_size = 96M",
        "innodb_flush_log_at_trx_commit = 2",
        "sync_binlog = 0",
        # Containers often cap io_setup(); simulated AIO always works.
        "innodb_use_native_aio = 0",
        "max_connections = 1000",
        "performance_schema = OFF",
        "character-set-server = utf8mb4",
        "collation-server = utf8mb4_general_ci",
    ]
    if as_root:
        lines.append("user = root")
    if inst.role == "replica":
        lines.append("read_only = 1")
    with open(inst.cnf, "w") as f:
        f.write("\n".join(lines) + "\n")


def _init_template(sandbox_dir: str, bins: Mapping[str, str], as_root: bool) -> str:
    """One datadir made by mariadb-install-db, copied for every instance: parallel install-db runs fight over the
    disk (7 s for four instances vs 1 s for one), a copy takes a fraction of a second."""
    template = os.path.join(sandbox_dir, ".template-datadir")
    if os.path.isdir(os.path.join(template, "mysql")):
        return template
    shutil.rmtree(template, ignore_errors=True)
    cmd = [bins["install_db"], "--no-defaults", "--auth-root-authentication-method=normal",
           f"--datadir={template}", "--skip-test-db"]
    if as_root:
        cmd.append("--user=root")
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        shutil.rmtree(template, ignore_errors=True)
        raise SandboxError(f"mariadb-install-db failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")
    return template


def _init_datadir(inst: Instance, template: str) -> None:
    for sub in ("tmp", "binlog"):
        os.makedirs(os.path.join(inst.home, sub), exist_ok=True)
    if not os.path.isdir(os.path.join(inst.datadir, "mysql")):
        shutil.rmtree(inst.datadir, ignore_errors=True)
        shutil.copytree(template, inst.datadir, symlinks=True)


def _tail(path: str, n: int = 15) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def _wait_ready(inst: Instance, proc: subprocess.Popen[bytes], admin: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SandboxError(f"{inst.name} (port {inst.port}) exited with {proc.returncode} during start; "
                               f"{inst.log}:\n{_tail(inst.log)}")
        if os.path.exists(inst.socket):
            res = subprocess.run([admin, "--no-defaults", "-uroot", "-S", inst.socket, "ping"],
                                 capture_output=True)
            if res.returncode == 0:
                return
        time.sleep(0.1)
    raise SandboxError(f"{inst.name} (port {inst.port}) did not answer within {START_TIMEOUT:.0f}s; "
                       f"{inst.log}:\n{_tail(inst.log)}")


def state_path(sandbox_dir: str) -> str:
    return os.path.join(sandbox_dir, STATE_FILE)


def load(sandbox_dir: str) -> Sandbox:
    """The sandbox recorded in DIR/sandbox.json; SandboxError when there is none."""
    path = state_path(os.path.abspath(sandbox_dir))
    try:
        with open(path) as f:
            return Sandbox.from_json(json.load(f))
    except FileNotFoundError:
        raise SandboxError(f"no sandbox in {sandbox_dir} ({STATE_FILE} not found)") from None


def _save(sb: Sandbox) -> None:
    tmp = state_path(sb.dir) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(sb.to_json(), f, indent=2)
    os.replace(tmp, state_path(sb.dir))


def up(
    sandbox_dir: str,
    nodes: int = 2,
    replicas: int | Sequence[int] = 0,
    base_port: int = DEFAULT_BASE_PORT,
    rules: str | Mapping[str, Any] | None = None,
    listen_port: int | None = None,
    workers: int = 1,
    databases: Iterable[str] = ("sbtest",),
) -> Sandbox:
    """Start the instances, wire replication, create ddm's node user and the databases, write ddm.yaml.

    `replicas` is a count for every node or a per-node list ([1, 0] = one replica on n0 only). `rules` is a rules
    file path (or its parsed mapping) with a top-level `databases:`; it replaces same-named databases of the default
    config and the physical databases it names are created on their nodes. A stopped sandbox already in DIR is
    started afresh: its datadirs are wiped (a sandbox holds throwaway data). Raises SandboxError; on failure
    everything already started is stopped again."""
    if nodes < 1:
        raise SandboxError("a sandbox needs at least one node")
    bins = ensure_mariadb()
    sandbox_dir = os.path.abspath(sandbox_dir)
    os.makedirs(sandbox_dir, exist_ok=True)
    rules_map = read_rules(rules) if isinstance(rules, str) else (dict(rules) if rules else None)

    if os.path.exists(state_path(sandbox_dir)):
        old = load(sandbox_dir)
        alive = [i.name for i in old.instances if _is_mariadbd(i.pid)]
        if alive:
            raise SandboxError(f"a sandbox is already running in {sandbox_dir} ({', '.join(alive)}); "
                               f"stop it first: ddm sandbox down --dir {sandbox_dir}")
        # A stale sandbox (crashed, or the machine rebooted): start over from empty datadirs.
        for inst in old.instances:
            shutil.rmtree(inst.home, ignore_errors=True)

    listen_port = base_port - 3 if listen_port is None else listen_port
    layout = _layout(base_port, nodes, _replica_counts(nodes, replicas))
    busy = [p for _, _, p in layout if port_in_use(p)]
    if busy:
        raise SandboxError(f"port {busy[0]} is already in use (sandbox needs ports "
                           f"{', '.join(str(p) for _, _, p in layout)}); choose another --port")
    if port_in_use(listen_port):
        raise SandboxError(f"port {listen_port} (ddm listen port) is already in use; choose another --listen-port")

    instances = []
    for sid, (node, rep, port) in enumerate(layout, start=1):
        name = node if rep == 0 else f"{node}r{rep}"
        home = os.path.join(sandbox_dir, name)
        if os.path.isdir(os.path.join(home, "data")) and not os.path.exists(state_path(sandbox_dir)):
            raise SandboxError(f"{home} holds data but {sandbox_dir} has no {STATE_FILE}: "
                               f"remove it or use another --dir")
        os.makedirs(home, exist_ok=True)
        instances.append(Instance(name=name, node=node, role="primary" if rep == 0 else "replica", port=port,
                                  server_id=sid, home=home, socket=_socket_path(home, name, sandbox_dir)))
    sb = Sandbox(dir=sandbox_dir, instances=instances, listen_port=listen_port,
                 config_path=os.path.join(sandbox_dir, CONFIG_FILE))
    _save(sb)  # recorded before anything starts, so `down` can always clean up a half-started sandbox

    try:
        _start(sb, bins)
        _provision(sb, rules_map, workers, list(databases))
    except BaseException:
        down(sandbox_dir)
        raise
    return sb


def _start(sb: Sandbox, bins: Mapping[str, str]) -> None:
    as_root = os.geteuid() == 0
    template = _init_template(sb.dir, bins, as_root)
    for inst in sb.instances:
        _init_datadir(inst, template)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for inst in sb.instances:
        _write_cnf(inst, as_root)
        for stale in (inst.pid_file, inst.socket):
            if os.path.exists(stale):
                os.unlink(stale)
        with open(inst.log, "ab") as log:
            # Own session: Ctrl-C in the terminal that ran `ddm sandbox up` must not kill the servers.
            procs[inst.name] = subprocess.Popen([bins["mariadbd"], f"--defaults-file={inst.cnf}"],
                                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                                start_new_session=True)
        inst.pid = procs[inst.name].pid
        _RUNNING[inst.pid] = procs[inst.name]
    _save(sb)
    deadline = time.monotonic() + START_TIMEOUT
    with ThreadPoolExecutor(max_workers=min(8, len(sb.instances))) as pool:
        list(pool.map(lambda i: _wait_ready(i, procs[i.name], bins["admin"], deadline), sb.instances))


def _provision(sb: Sandbox, rules: Mapping[str, Any] | None, workers: int, extra_dbs: list[str]) -> None:
    user, pw = _quote(sb.node_user), _quote(sb.node_password)
    for node in sb.nodes:
        stmts = []
        for host in ("localhost", "127.0.0.1", "%"):
            stmts += [f"CREATE USER IF NOT EXISTS {user}@'{host}' IDENTIFIED BY {pw};",
                      f"GRANT ALL PRIVILEGES ON *.* TO {user}@'{host}' WITH GRANT OPTION;"]
        stmts += [f"CREATE USER IF NOT EXISTS {_quote(REPL_USER)}@'127.0.0.1' IDENTIFIED BY {_quote(REPL_PASSWORD)};",
                  f"GRANT REPLICATION SLAVE ON *.* TO {_quote(REPL_USER)}@'127.0.0.1';"]
        run_sql(sb.primary(node), "".join(stmts))

    # Replicas start from an empty GTID position, i.e. the primary's first binlog: the users above and the
    # databases below reach them through replication.
    for node in sb.nodes:
        p = sb.primary(node)
        for r in sb.replicas(node):
            run_sql(r, f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={p.port}, "
                       f"MASTER_USER={_quote(REPL_USER)}, MASTER_PASSWORD={_quote(REPL_PASSWORD)}, "
                       f"MASTER_CONNECT_RETRY=1, MASTER_USE_GTID=slave_pos; START SLAVE;")

    with open(sb.config_path, "w") as f:
        f.write("# Generated by `ddm sandbox up`; edit freely (it is rewritten by the next `up`).\n")
        yaml.safe_dump(build_config(sb, rules, workers), f, sort_keys=False, default_flow_style=None, width=110)
    locations = _locations_from_config(sb.config_path)
    if locations is None:
        cfg_dbs = build_config(sb, rules, workers)["databases"]
        locations = {name: datasource_locations(name, spec or {}) for name, spec in cfg_dbs.items()}
    wanted: dict[str, set[str]] = {n: set() for n in sb.nodes}
    for node, db in [(sb.nodes[0], d) for d in extra_dbs] + [x for locs in locations.values() for x in locs]:
        if node not in wanted:
            raise SandboxError(f"the rules place a data source on node {node!r}, but the sandbox has only "
                               f"{', '.join(sb.nodes)}; start it with more --nodes")
        wanted[node].add(db)
    for node, dbs in wanted.items():
        if dbs:
            run_sql(sb.primary(node), "".join(f"CREATE DATABASE IF NOT EXISTS {_ident(d)};" for d in sorted(dbs)))
    sb.databases = {name: [list(x) for x in locs] for name, locs in locations.items()}
    _save(sb)
    wait_replicas(sb)


def wait_replicas(sb: Sandbox, timeout: float = 30.0) -> None:
    """Block until every replica has applied everything its primary has written so far."""
    for node in sb.nodes:
        reps = sb.replicas(node)
        if not reps:
            continue
        pos = run_sql(sb.primary(node), "SELECT @@gtid_binlog_pos").strip()
        for r in reps:
            got = run_sql(r, f"SELECT MASTER_GTID_WAIT({_quote(pos)}, {timeout})").strip()
            if got != "0":
                status = run_sql(r, "SHOW SLAVE STATUS\\G")
                raise SandboxError(f"{r.name} did not catch up with {node} (gtid {pos}) in {timeout:.0f}s:\n{status}")


def status(sandbox_dir: str) -> dict[str, Any]:
    sb = load(sandbox_dir)
    return {
        "dir": sb.dir,
        "config": sb.config_path,
        "listen": f"{sb.listen_host}:{sb.listen_port}",
        "users": sb.users,
        "node_user": sb.node_user,
        "node_password": sb.node_password,
        "instances": [
            {"name": i.name, "node": i.node, "role": i.role, "port": i.port, "socket": i.socket, "pid": i.pid,
             "alive": _is_mariadbd(i.pid)}
            for i in sb.instances
        ],
        "databases": sb.databases,
    }


def _stop(inst: Instance, admin: str | None, timeout: float = 30.0) -> None:
    if not _is_mariadbd(inst.pid):
        return
    assert inst.pid is not None
    if admin and os.path.exists(inst.socket):
        subprocess.run([admin, "--no-defaults", "-uroot", "-S", inst.socket, "--shutdown-timeout=20", "shutdown"],
                       capture_output=True, timeout=timeout)
    for sig, wait in ((None, timeout), (signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if sig is not None:
            try:
                os.kill(inst.pid, sig)
            except ProcessLookupError:
                break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _is_mariadbd(inst.pid):
            time.sleep(0.05)
        if not _is_mariadbd(inst.pid):
            break
    proc = _RUNNING.pop(inst.pid, None)
    if proc is not None:
        proc.wait(timeout=5)


def down(sandbox_dir: str) -> bool:
    """Stop every instance of the sandbox in DIR (replicas first). Idempotent; False when there was no sandbox."""
    try:
        sb = load(sandbox_dir)
    except SandboxError:
        return False
    admin = find_binary("mariadb-admin", "mysqladmin")
    ordered = sorted(sb.instances, key=lambda i: i.role == "primary")
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(ordered)))) as pool:
        list(pool.map(lambda i: _stop(i, admin), ordered))
    for inst in sb.instances:
        for leftover in (inst.pid_file, inst.socket):
            if os.path.exists(leftover):
                os.unlink(leftover)
        inst.pid = None
    _save(sb)
    return True


# Popen objects of servers this process started, so `down` in the same process reaps them (no zombies, no
# "still running" ResourceWarning).
_RUNNING: dict[int, subprocess.Popen[bytes]] = {}
