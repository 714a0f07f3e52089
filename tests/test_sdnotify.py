"""sd_notify client and the master's systemd protocol, against a real unix datagram socket standing in for systemd."""

from __future__ import annotations

import array
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ddm.process import sdnotify
from test_master import Proc, server_factory

UNIT = Path(__file__).resolve().parent.parent / "src" / "ddm" / "data" / "ddm.service"


class FakeSystemd:
    """Receives notifications like systemd: with the sender's credentials, closing passed fds (BARRIER=1)."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[int, list[str]]] = []  # (sender pid, lines)
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        ucred = struct.Struct("iII")
        while not self.stop:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(ucred.size) + socket.CMSG_SPACE(64))
            except TimeoutError:
                continue
            pid = 0
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = ucred.unpack(payload[:ucred.size])[0]
                elif level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
                    for fd in fds:
                        os.close(fd)  # what systemd does with a BARRIER=1 fd once earlier messages are handled
            self.messages.append((pid, data.decode().split("\n")))

    def wait_for(self, line: str, timeout: float = 10.0, start: int = 0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, (_, lines) in enumerate(self.messages[start:], start):
                if line in lines:
                    return i
            time.sleep(0.02)
        raise AssertionError(f"no {line!r} in {self.messages}")

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture
def systemd(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    fake = FakeSystemd(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield fake
    fake.close()


@pytest.fixture
def server(tmp_path):
    yield from server_factory(tmp_path)


def test_noop_without_notify_socket(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False and sdnotify.watchdog_interval() is None and sdnotify.barrier(0.1) is False


def test_messages_and_barrier(systemd):
    assert sdnotify.ready("serving")
    assert sdnotify.reloading()
    assert sdnotify.barrier(2.0)  # the fake closes the fd: every earlier message was received
    assert systemd.messages[0] == (os.getpid(), ["READY=1", "STATUS=serving"])
    lines = systemd.messages[1][1]
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
    usec = int(lines[1].split("=")[1])
    assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 5_000_000
    assert systemd.messages[2][1] == ["BARRIER=1"]


def test_barrier_times_out_when_nobody_processes(tmp_path, monkeypatch):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(tmp_path / "deaf.sock"))
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "deaf.sock"))
        t0 = time.monotonic()
        assert sdnotify.barrier(0.2) is False
        assert time.monotonic() - t0 >= 0.19


def test_abstract_namespace(monkeypatch):
    name = f"ddm-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.stopping()
        assert s.recv(100) == b"STOPPING=1"


def test_watchdog_interval(systemd, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert sdnotify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process...
    assert sdnotify.watchdog_interval() is None
    assert sdnotify.watchdog_interval(pids=[1]) == 15.0  # ...unless it is the master we took over from
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 15.0


def test_master_lifecycle_notifications(systemd, server):
    p, port = server(workers=2, env={"WATCHDOG_USEC": "400000"})
    p.wait_ready()
    i = systemd.wait_for("READY=1")
    assert systemd.messages[i][0] == p.pid
    assert any(x.startswith("STATUS=serving on 127.0.0.1:") for x in systemd.messages[i][1])
    w = systemd.wait_for("WATCHDOG=1", start=i)
    systemd.wait_for("WATCHDOG=1", start=w + 1, timeout=1.0)  # pinged every 0.2 s
    os.kill(p.pid, signal.SIGHUP)
    r = systemd.wait_for("RELOADING=1", start=i + 1)
    assert any(x.startswith("MONOTONIC_USEC=") for x in systemd.messages[r][1])
    systemd.wait_for("READY=1", start=r + 1)
    p.p.send_signal(signal.SIGTERM)
    assert p.wait() == 0
    s = systemd.wait_for("STOPPING=1")
    assert systemd.messages[s][0] == p.pid


def test_handoff_moves_mainpid(systemd, server, monkeypatch):
    a, port = server(workers=1)
    a.wait_ready()
    monkeypatch.delenv("NOTIFY_SOCKET")  # the successor learns the socket from the old master
    b = Proc(a.cfg, "--takeover")
    try:
        b.wait_ready()
        m = systemd.wait_for(f"MAINPID={b.pid}")
        assert systemd.messages[m][0] == a.pid  # the main pid itself announces its successor...
        assert systemd.messages[m + 1] == (a.pid, ["BARRIER=1"])  # ...and waits until systemd has seen it
        r = systemd.wait_for("READY=1", start=m)
        assert systemd.messages[r][0] == b.pid
        assert a.wait() == 0
    finally:
        b.stop()
    systemd.wait_for("STOPPING=1", start=r)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None and not os.environ.get("CI"),
                    reason="systemd-analyze not installed (apt-get install systemd)")
def test_unit_file_verifies(tmp_path):
    # ExecStart must point at an existing executable for verify; the rest of the unit is checked as shipped.
    text = UNIT.read_text()
    assert "Type=notify" in text and "ExecReload=/bin/kill -HUP $MAINPID" in text and "WatchdogSec=30" in text
    unit = tmp_path / "ddm.service"
    unit.write_text(text.replace("/usr/local/bin/ddm-server", shutil.which("true") or "/bin/true"))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "ddm.service" not in r.stderr, r.stderr  # no warnings about our unit


def test_unit_file_is_package_data():
    import tomllib

    pyproject = tomllib.loads((UNIT.parents[3] / "pyproject.toml").read_text())
    assert "data/*" in pyproject["tool"]["setuptools"]["package-data"]["ddm"]
