"""Version handoff (`ddm-server --takeover`, SIGUSR2) with a stand-in Server under continuous client load."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from ddm.process import handoff
from test_master import Client, Proc, ask, server_factory


@pytest.fixture
def server(tmp_path):
    yield from server_factory(tmp_path)


def test_choose_id_base_skips_live_ranges():
    assert handoff.choose_id_base(4, []) == 0
    assert handoff.choose_id_base(4, [(0, 4, 1)]) == 4
    assert handoff.choose_id_base(2, [(0, 4, 1), (6, 2, 1)]) == 4  # fits in the gap
    assert handoff.choose_id_base(3, [(0, 4, 1), (6, 2, 1)]) == 8
    assert handoff.choose_id_base(4, [(4, 4, 1)]) == 0
    with pytest.raises(handoff.HandoffError):
        handoff.choose_id_base(8, [(0, 1020, 1)], limit=1024)


def test_live_ranges_drops_dead_masters():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    assert handoff.live_ranges([[0, 2, os.getpid()], [2, 2, pid]]) == [(0, 2, os.getpid())]


def test_fds_travel_with_the_line():
    a, b = socket.socketpair()
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen()
    handoff.send_msg(a, {"ok": True, "n": 1}, [lst.fileno()])
    handoff.send_msg(a, {"second": True})
    r = handoff.LineReader(b)
    assert r.read() == {"ok": True, "n": 1} and len(r.fds) == 1
    got = socket.socket(fileno=r.fds[0])
    assert got.getsockname() == lst.getsockname() and got.type == socket.SOCK_STREAM
    assert r.read() == {"second": True}
    for s in (a, b, lst, got):
        s.close()


class Load:
    """Client threads: `fresh` open a new connection per request, `held` keep one connection open."""

    def __init__(self, port: int, fresh: int = 8, held: int = 4) -> None:
        self.port = port
        self.stop = threading.Event()
        self.requests = 0
        self.failures: list[str] = []
        self.reconnects = 0
        self.pids: set[str] = set()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._fresh) for _ in range(fresh)]
        self.threads += [threading.Thread(target=self._held) for _ in range(held)]
        for t in self.threads:
            t.start()

    def _count(self, reply: list[str]) -> None:
        with self.lock:
            self.requests += 1
            self.pids.add(reply[2])

    def _fresh(self) -> None:
        while not self.stop.is_set():
            try:
                self._count(ask(self.port, "fresh"))
            except OSError as e:
                with self.lock:
                    self.failures.append(f"fresh: {e!r}")

    def _held(self) -> None:
        c = Client(self.port)
        while not self.stop.is_set():
            try:
                self._count(c.ask("held"))
            except (ConnectionError, OSError):
                # A retiring worker closes idle connections at a request boundary (the stand-in mimics the
                # server's drain): reconnect; counted separately, the request had not been sent to a live worker.
                with self.lock:
                    self.reconnects += 1
                c.close()
                try:
                    c = Client(self.port)
                except OSError as e:
                    with self.lock:
                        self.failures.append(f"held reconnect: {e!r}")
            time.sleep(0.005)
        c.close()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # reparented zombie not reaped yet
    except FileNotFoundError:
        return True


def _wait_master(ctl: str, not_pid: int, timeout: float = 20) -> dict:
    from ddm.process import control

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            st = control.request(ctl, {"cmd": "status"}, timeout=5)
            if st["pid"] != not_pid and st["state"] == "running":
                return st
        except (control.ControlError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError("no new master")


def test_takeover_under_load_drops_nothing(server):
    a, port = server(workers=2, drain=2)
    st_a = a.wait_ready()
    load = Load(port)
    time.sleep(0.5)
    b = Proc(a.cfg, "--takeover")
    try:
        st_b = b.wait_ready()
        assert st_b["previous_master"] == a.pid
        assert st_b["generation"] == st_a["generation"] + 1
        ids_a = {w["id"] for w in st_a["workers"]}
        ids_b = {w["id"] for w in st_b["workers"]}
        assert not ids_a & ids_b, (ids_a, ids_b)  # snowflake worker ids never shared between generations
        assert a.wait(15) == 0
        time.sleep(0.5)
        # Second handoff, the way systemd does it: SIGUSR2 makes the master start its successor itself.
        os.kill(b.pid, signal.SIGUSR2)
        st_c = _wait_master(b.ctl, b.pid)
        assert st_c["previous_master"] == b.pid
        assert not {w["id"] for w in st_c["workers"]} & ids_b
        assert b.wait(15) == 0
        time.sleep(0.5)
    finally:
        load.finish()
        b.stop()
    served_by_c = {str(w["pid"]) for w in st_c["workers"]}
    try:
        assert load.failures == [], load.failures[:5]
        assert load.requests > 500
        assert served_by_c & load.pids  # the last generation really served traffic
        assert load.reconnects <= 2 * 4  # at most one per held connection per handoff
    finally:
        os.kill(st_c["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 15
        while not _gone(st_c["pid"]):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert "retiring: successor took over" in a.logs() and "retiring: successor took over" in b.logs()


def test_failed_takeover_leaves_the_old_master_serving(server):
    a, port = server(workers=2)
    a.wait_ready()
    b = Proc(a.cfg, "--takeover", env={"STANDIN_FAIL_START": "1"})
    assert b.wait(15) == 1
    b.log.close()
    assert "worker died during startup" in b.logs()
    st = a.status()
    assert st["pid"] == a.pid and st["state"] == "running"
    assert "takeover aborted" in a.logs()
    assert ask(port)[2] in {str(w["pid"]) for w in st["workers"]}
    # and a proper takeover still works afterwards
    c = Proc(a.cfg, "--takeover")
    try:
        c.wait_ready()
        assert a.wait(15) == 0
        assert ask(port)[2] in {str(w["pid"]) for w in c.status()["workers"]}
    finally:
        c.stop()


def test_takeover_without_a_running_master_fails(tmp_path):
    from test_master import free_port, write_config

    p = Proc(write_config(tmp_path / "ddm.yaml", free_port()), "--takeover")
    assert p.wait(15) == 1
    p.log.close()
    assert "no running ddm-server to take over" in p.logs()
