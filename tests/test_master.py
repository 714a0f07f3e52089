"""Master/worker process model, tested on real processes with a stand-in Server (an echo server, tests only).

The stand-in has the contract's methods (start/apply_config/stop_accepting/drain/close/stats) and answers every
line with "worker_id generation pid marker line", where marker is config.server.max_connections: a reload that
took effect is visible from a client. Other test modules (test_handoff, test_control, test_sdnotify) reuse the
helpers here; the child processes import this module through `launch()`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import MappingProxyType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
TESTS = ROOT / "tests"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from ddm import config as config_mod  # noqa: E402
from ddm.process import control, logs, master, worker  # noqa: E402


# --- stand-ins (child processes only) ---------------------------------------------------------------------------
class EchoServer:
    """Stand-in for ddm.process.server.Server: a line echo server with the same lifecycle methods."""

    def __init__(self, config, worker_id: int = 0) -> None:
        self.config = config
        self.worker_id = worker_id
        self.servers: list[asyncio.AbstractServer] = []
        self.clients: set[asyncio.StreamWriter] = set()
        self.busy: set[asyncio.StreamWriter] = set()
        self.accepted: dict[asyncio.StreamWriter, float] = {}

    async def start(self, sockets: list[socket.socket]) -> None:
        if os.environ.get("STANDIN_FAIL_START"):
            raise RuntimeError("stand-in told to fail at start")
        for s in sockets:
            self.servers.append(await asyncio.start_server(self._client, sock=s, backlog=1024))

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.clients.add(writer)
        self.accepted[writer] = time.monotonic()
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                self.busy.add(writer)
                cfg = self.config  # the snapshot this "transaction" runs on
                if line.startswith(b"sleep "):
                    await asyncio.sleep(float(line.split()[1]))
                head = f"{self.worker_id} {cfg.generation} {os.getpid()} {cfg.server.max_connections} "
                writer.write(head.encode() + line)
                await writer.drain()
                self.busy.discard(writer)
        except ConnectionError:
            pass
        finally:
            self.clients.discard(writer)
            self.busy.discard(writer)
            self.accepted.pop(writer, None)
            writer.close()

    def apply_config(self, config) -> None:
        if config.server.max_connections == 13:
            raise RuntimeError("stand-in refuses max_connections 13")
        self.config = config

    async def stop_accepting(self) -> None:
        for s in self.servers:
            s.close()
        self.servers = []

    async def drain(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.clients and time.monotonic() < deadline:
            now = time.monotonic()
            for w in list(self.clients):
                # like ddm.process.server.Server.drain: idle, and not just accepted (a per-request client is about to
                # send its request and will leave by itself)
                if w not in self.busy and now - self.accepted.get(w, 0.0) > 1.0:
                    w.close()
                    self.clients.discard(w)
            await asyncio.sleep(0.01)
        for w in list(self.clients):
            w.close()

    async def close(self) -> None:
        for w in list(self.clients):
            w.close()

    def stats(self) -> dict:
        return {"worker": self.worker_id, "connections": len(self.clients), "questions": 0}


def standin_load(path: str):
    """A minimal loader for the server section, used only while ddm.config.load is not implemented yet."""
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    srv = data.get("server") or {}
    problems = []
    host, _, port = str(srv.get("listen", "127.0.0.1:3307")).rpartition(":")
    if not port.isdigit():
        problems.append(f"server.listen: expected host:port, got {srv.get('listen')!r}")
    workers = srv.get("workers", 1)
    if not isinstance(workers, int) or workers < 0:
        problems.append(f"server.workers: expected an integer >= 0, got {workers!r}")
    if srv.get("log_level", "info") not in logs.LEVELS:
        problems.append(f"server.log_level: unknown level {srv.get('log_level')!r}")
    if problems:
        raise config_mod.ConfigError(problems, source=path)
    server = config_mod.ServerConfig(
        listen_host=host, listen_port=int(port), workers=workers, control_socket=srv.get("control_socket"),
        log_level=srv.get("log_level", "info"), drain_timeout=float(srv.get("drain_timeout", 30)),
        max_connections=int(srv.get("max_connections", 4096)), watch_config=bool(srv.get("watch_config")))
    return config_mod.Config(server=server, users=MappingProxyType({}), nodes=MappingProxyType({}),
                             databases=MappingProxyType({}), source=path)


def launch(argv: list[str]) -> int:
    """Child-process entry: install the stand-ins, then run the real ddm-server main."""
    import types

    mod = types.ModuleType("ddm.process.server")
    mod.Server = EchoServer  # type: ignore[attr-defined]
    sys.modules["ddm.process.server"] = mod
    import ddm

    ddm.process.server = mod  # type: ignore[attr-defined]
    try:
        config_mod.load(argv[argv.index("--config") + 1] if "--config" in argv else "")
    except NotImplementedError:
        config_mod.load = standin_load
    except Exception:
        pass  # the real loader exists; let ddm-server report
    from ddm.process import server_main

    return server_main.main(argv)


LAUNCH = (f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(SRC)!r}]; import test_master; "
          "sys.exit(test_master.launch(sys.argv[1:]))")


# --- helpers for the tests --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(path: Path, port: int, workers: int = 2, marker: int = 111, drain: float = 5.0,
                 extra: str = "") -> Path:
    """A config valid for the real loader too (users/nodes/databases present; the stand-in never connects)."""
    path.write_text(f"""\
server:
  listen: 127.0.0.1:{port}
  workers: {workers}
  log_level: info
  max_connections: {marker}
  drain_timeout: {drain}
  control_socket: {path.parent / 'ctl.sock'}
{extra}users:
  - {{name: ddm, password: ddm}}
nodes:
  n0: {{host: 127.0.0.1, port: 1, user: ddm_node, password: secret}}
databases:
  app: {{node: n0, database: app}}
""")
    return path


class Proc:
    """A ddm-server (stand-in Server) in a subprocess, logging to a file."""

    def __init__(self, cfg: Path, *args: str, env: dict | None = None) -> None:
        self.cfg = cfg
        self.ctl = str(cfg.parent / "ctl.sock")
        self.log_path = cfg.parent / f"master-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")
        self.p = subprocess.Popen([sys.executable, "-c", LAUNCH, "--config", str(cfg), *args],
                                  stderr=self.log, stdout=self.log, env={**os.environ, **(env or {})})

    @property
    def pid(self) -> int:
        return self.p.pid

    def status(self) -> dict:
        return control.request(self.ctl, {"cmd": "status"}, timeout=5)

    def wait_ready(self, timeout: float = 15.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise AssertionError(f"ddm-server exited {self.p.returncode}:\n{self.logs()}")
            try:
                st = self.status()
                if st["pid"] == self.pid and st["state"] == "running":
                    return st
            except (control.ControlError, OSError, ValueError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"ddm-server not ready in {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"ddm-server {self.pid} still running:\n{self.logs()}") from None

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def ask(port: int, line: str = "ping", timeout: float = 5.0) -> list[str]:
    """One request on a fresh connection: [worker_id, generation, pid, marker, line]."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(line.encode() + b"\n")
        return s.makefile("rb").readline().decode().split()


class Client:
    """A long-lived connection."""

    def __init__(self, port: int) -> None:
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.f = self.s.makefile("rb")

    def ask(self, line: str = "ping") -> list[str]:
        self.s.sendall(line.encode() + b"\n")
        reply = self.f.readline().decode()
        if not reply:
            raise ConnectionError("closed by server")
        return reply.split()

    def close(self) -> None:
        self.f.close()
        self.s.close()


def server_factory(tmp_path: Path):
    """Generator behind the `server` fixture (other test modules wrap it in their own fixture)."""
    procs: list[Proc] = []

    def start(workers: int = 2, *args: str, env: dict | None = None, **kw) -> tuple[Proc, int]:
        port = kw.pop("port", None) or free_port()
        cfg = write_config(tmp_path / "ddm.yaml", port, workers=workers, **kw)
        p = Proc(cfg, *args, env=env)
        procs.append(p)
        return p, port

    yield start
    for p in procs:
        p.stop()


@pytest.fixture
def server(tmp_path):
    yield from server_factory(tmp_path)


# --- unit tests -------------------------------------------------------------------------------------------------
def test_backoff_first_restart_is_immediate_then_grows_to_cap():
    delays = [master.backoff_delay(k) for k in range(1, 12)]
    assert delays[0] == 0.0 and delays[1] == 0.5 and delays[2] == 1.0
    assert all(a <= b for a, b in zip(delays, delays[1:], strict=False))
    assert delays[-1] == master.MAX_BACKOFF


def test_describe_exit_signal_and_code():
    pid = os.fork()
    if pid == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert master.describe_exit(status) == {"signal": "SIGKILL"}
    pid = os.fork()
    if pid == 0:
        os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert master.describe_exit(status) == {"code": 3}


def test_config_snapshot_crosses_the_worker_channel():
    rule = config_mod.TableRule(name="t", kind="sharded", datasources=("ds0",),
                                tables=MappingProxyType({"ds0": ("t_0", "t_1")}),
                                database_strategy=config_mod.ShardStrategy("id", "mod"))
    cfg = config_mod.Config(server=config_mod.ServerConfig(), users=MappingProxyType({}),
                            nodes=MappingProxyType({}), databases=MappingProxyType({
                                "db": config_mod.DatabaseConfig("db", MappingProxyType({}), "ds0",
                                                                MappingProxyType({"t": rule}))}), generation=7)
    buf = bytearray(worker.encode({"op": "reload", "seq": 1, "config": cfg}) * 2)
    buf += worker.encode({"op": "hb"})[:3]  # an incomplete frame stays in the buffer
    msgs = worker.decode_frames(buf)
    assert len(msgs) == 2 and len(buf) == 3
    got = msgs[0]["config"]
    assert got == cfg and isinstance(got.databases, MappingProxyType)
    assert got.databases["db"].tables["t"].tables["ds0"] == ("t_0", "t_1")
    with pytest.raises(TypeError):
        got.databases["x"] = None  # still read-only after the round trip
    assert pickle.loads(pickle.dumps(MappingProxyType({"a": 1}))) == {"a": 1}


def test_logfmt_single_line_fields_and_runtime_level(capsys):
    logs.setup_logging("info", role=3)
    log = logs.get_logger("ddm.test")
    log.debug("hidden")
    log.info('worker "exited"\nnext', slot=1, signal="SIGKILL", note="two words")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    assert logs.set_level("DEBUG") == "debug"
    logging.getLogger("ddm.plain").debug("plain %s", "logger")
    logs.set_level("info")
    logs.set_role("master")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    assert "hidden" not in lines[0]
    assert lines[0].startswith("ts=") and " level=info " in lines[0] and f" pid={os.getpid()} " in lines[0]
    assert ' worker=3 logger=ddm.test msg="worker \\"exited\\"\\nnext" slot=1 signal=SIGKILL note="two words"' \
        in lines[0]
    assert " level=error " in lines[1] and 'exc="Traceback' in lines[1] and "ValueError: boom" in lines[1]
    assert lines[2].endswith('msg="plain logger"')
    with pytest.raises(ValueError):
        logs.parse_level("loud")


# --- process tests ----------------------------------------------------------------------------------------------
def test_killed_worker_is_replaced_within_a_second_other_connections_unaffected(server):
    p, port = server(workers=2)
    st = p.wait_ready()
    client = Client(port)
    _, _, pid_a, _, _ = client.ask()
    victim = next(w for w in st["workers"] if str(w["pid"]) != pid_a)
    os.kill(victim["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    while True:
        w = next(x for x in p.status()["workers"] if x["slot"] == victim["slot"])
        if w["pid"] not in (0, victim["pid"]) and w["ready"]:
            break
        assert time.monotonic() - t0 < 1.0, f"not replaced within 1 s: {w}"
        time.sleep(0.02)
    assert w["id"] == victim["id"] and w["restarts"] == 1  # same worker id for the replacement
    assert client.ask("still there") == [str(next(x["id"] for x in st["workers"] if str(x["pid"]) == pid_a)),
                                         "1", pid_a, "111", "still", "there"]
    client.close()
    logs_text = p.logs()
    assert "worker exited; restarting" in logs_text and "signal=SIGKILL" in logs_text
    assert f"pid={victim['pid']}" in logs_text


def test_crash_loop_backs_off(server):
    p, port = server(workers=1)
    st = p.wait_ready()
    deaths = []
    for _ in range(4):
        pid = next(w for w in p.status()["workers"])["pid"]
        deadline = time.monotonic() + 10
        while pid == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
            pid = p.status()["workers"][0]["pid"]
        os.kill(pid, signal.SIGKILL)
        deaths.append(time.monotonic())
        while p.status()["workers"][0]["pid"] in (0, pid):
            time.sleep(0.02)
            assert time.monotonic() - deaths[-1] < 10
        deaths[-1] = time.monotonic() - deaths[-1]
    assert deaths[0] < 1.0 and deaths[2] >= 0.9 and deaths[3] >= 1.9  # 0, 0.5, 1, 2 s
    assert "delay=2.0" in p.logs()
    assert st["workers"][0]["id"] == p.status()["workers"][0]["id"]


def test_sigterm_drains_in_flight_requests_then_exits_zero(server):
    p, port = server(workers=2)
    p.wait_ready()
    busy, idle = Client(port), Client(port)
    idle.ask()
    time.sleep(1.2)  # connections younger than 1 s are left to finish by themselves (see EchoServer.drain)
    import threading

    result: list = []
    t = threading.Thread(target=lambda: result.append(busy.ask("sleep 0.8")))
    t.start()
    time.sleep(0.2)
    p.p.send_signal(signal.SIGTERM)
    t.join(5)
    assert result and result[0][-2:] == ["sleep", "0.8"]  # finished its request
    with pytest.raises((ConnectionError, OSError)):
        idle.ask()  # idle connection closed at the boundary
    assert p.wait() == 0
    assert not os.path.exists(p.ctl)  # control socket removed on a normal stop
    with pytest.raises(OSError):
        ask(port)


def test_second_sigint_exits_immediately(server):
    p, port = server(workers=1, drain=60)
    p.wait_ready()
    c = Client(port)
    c.s.sendall(b"sleep 30\n")  # keeps the drain waiting
    time.sleep(0.2)
    p.p.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert p.p.poll() is None  # first SIGINT: draining
    t0 = time.monotonic()
    p.p.send_signal(signal.SIGINT)
    assert p.wait(5) == 130
    assert time.monotonic() - t0 < 3
    c.close()


def test_refuses_to_start_twice_on_one_control_socket(server):
    p, port = server(workers=1)
    p.wait_ready()
    q = Proc(p.cfg)
    assert q.wait(15) == 1
    assert "another ddm-server is running" in q.logs()
    q.log.close()
    assert p.status()["pid"] == p.pid


def test_worker_failing_at_startup_fails_the_master(server):
    p, _ = server(workers=2, env={"STANDIN_FAIL_START": "1"})
    assert p.wait(15) == 1
    assert "worker died during startup" in p.logs()


def test_check_config_and_version(tmp_path):
    cfg = write_config(tmp_path / "ddm.yaml", free_port())
    ok = subprocess.run([sys.executable, "-c", LAUNCH, "--config", str(cfg), "--check-config"],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("configuration OK: "), ok
    bad = tmp_path / "bad.yaml"
    bad.write_text(cfg.read_text().replace("workers: 2", "workers: many").replace(
        "listen: 127.0.0.1", "listen: nowhere"))
    r = subprocess.run([sys.executable, "-c", LAUNCH, "--config", str(bad), "--check-config"],
                       capture_output=True, text=True)
    assert r.returncode == 1
    problems = r.stderr.splitlines()[1:]
    assert any(line.startswith("server.workers") for line in problems), r.stderr
    v = subprocess.run([sys.executable, "-c", LAUNCH, "--version"], capture_output=True, text=True)
    import ddm

    assert v.returncode == 0 and ddm.__version__ in v.stdout and ddm.SERVER_VERSION in v.stdout


def test_status_reports_workers_and_stats(server):
    p, port = server(workers=3)
    p.wait_ready()
    c = Client(port)
    c.ask()
    st = p.status()
    assert st["ok"] and st["generation"] == 1 and len(st["workers"]) == 3
    assert sorted(w["id"] for w in st["workers"]) == [0, 1, 2]
    assert sum(w["stats"]["connections"] for w in st["workers"]) == 1
    assert st["listen"] == [f"127.0.0.1:{port}"]
    json.dumps(st)
    c.close()
