"""Hot reload and the control socket (`ddm reload/status/log-level`) against a real master with a stand-in Server."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from ddm.process import control
from test_master import SRC, Client, ask, server_factory


@pytest.fixture
def server(tmp_path):
    yield from server_factory(tmp_path)


def test_control_path_derivation(tmp_path):
    cfg = tmp_path / "conf" / "ddm.yaml"
    cfg.parent.mkdir()
    assert control.derive_control_path(str(cfg)) == str(tmp_path / "conf" / "ddm.sock")
    cfg.write_text("server: {control_socket: /run/ddm/x.sock}\n")
    assert control.path_from_file(str(cfg)) == "/run/ddm/x.sock"
    cfg.write_text("server: [unclosed\n")  # broken YAML: still find the server (it reports the problems)
    assert control.path_from_file(str(cfg)) == str(tmp_path / "conf" / "ddm.sock")


def test_add_subcommands_registers_reload_status_log_level():
    parser = argparse.ArgumentParser(prog="ddm")
    sub = parser.add_subparsers(dest="command")
    control.add_subcommands(sub)
    args = parser.parse_args(["reload", "--config", "/etc/ddm/ddm.yaml"])
    assert args.config == "/etc/ddm/ddm.yaml" and callable(args.func)
    args = parser.parse_args(["log-level", "debug", "--socket", "/run/ddm/ddm.sock"])
    assert args.level == "debug" and args.socket == "/run/ddm/ddm.sock"
    assert callable(parser.parse_args(["status", "--json"]).func)


def test_unreachable_server_is_exit_2(tmp_path, capsys):
    assert control.main(["status", "--socket", str(tmp_path / "nothing.sock")]) == 2
    assert "cannot reach ddm-server" in capsys.readouterr().err


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddm.process.control", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=60)


def test_reload_applies_to_every_worker_and_keeps_connections(server):
    p, port = server(workers=3)
    p.wait_ready()
    long_lived = Client(port)
    assert long_lived.ask()[1:4:2] == ["1", "111"]
    p.cfg.write_text(p.cfg.read_text().replace("max_connections: 111", "max_connections: 222"))
    r = _cli("reload", "--config", str(p.cfg))
    assert r.returncode == 0, r.stderr
    assert "generation 2 on 3 workers" in r.stdout
    # `ddm reload` returned only after every worker acknowledged: all answer with the new snapshot now.
    seen = {tuple(ask(port)[:4:3]) for _ in range(30)}
    assert {m for _, m in seen} == {"222"}
    assert long_lived.ask()[1:4:2] == ["2", "222"]  # same connection, new snapshot
    os.kill(p.pid, signal.SIGHUP)
    deadline = time.monotonic() + 5
    while p.status()["generation"] != 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    long_lived.close()


def test_bad_config_is_rejected_with_problems_and_old_config_keeps_serving(server):
    p, port = server(workers=2)
    p.wait_ready()
    good = p.cfg.read_text()
    p.cfg.write_text(good.replace("workers: 2", "workers: many").replace("max_connections: 111",
                                                                         "max_connections: 999"))
    r = _cli("reload", "--config", str(p.cfg))
    assert r.returncode == 1
    assert "reload rejected" in r.stderr and "server.workers" in r.stderr, r.stderr
    assert ask(port)[1:4:2] == ["1", "111"]  # still generation 1, old marker
    assert p.status()["generation"] == 1
    assert "reload rejected" in p.logs() and "server.workers" in p.logs()
    # A broken YAML file is reported as well (and the CLI still finds the socket).
    p.cfg.write_text("server: [unclosed\n")
    r = _cli("reload", "--socket", p.ctl)
    assert r.returncode == 1 and r.stderr.count("\n") >= 2
    p.cfg.write_text(good.replace("max_connections: 111", "max_connections: 333"))
    assert _cli("reload", "--config", str(p.cfg)).returncode == 0
    assert ask(port)[1:4:2] == ["2", "333"]


def test_worker_apply_failure_is_reported(server):
    p, port = server(workers=2)
    p.wait_ready()
    p.cfg.write_text(p.cfg.read_text().replace("max_connections: 111", "max_connections: 13"))
    reply = control.request(p.ctl, {"cmd": "reload"})
    assert not reply["ok"] and len(reply["problems"]) == 2
    assert all("could not apply" in x and "refuses max_connections 13" in x for x in reply["problems"])


def test_concurrent_reloads_are_serialized(server):
    p, port = server(workers=2)
    p.wait_ready()
    replies: list[dict] = []
    threads = [threading.Thread(target=lambda: replies.append(control.request(p.ctl, {"cmd": "reload"})))
               for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r["generation"] for r in replies) == [2, 3, 4, 5, 6]
    assert all(r["ok"] for r in replies)


def test_log_level_changes_at_runtime(server):
    p, port = server(workers=1)
    p.wait_ready()
    r = _cli("log-level", "debug", "--config", str(p.cfg))
    assert r.returncode == 0 and "debug" in r.stdout
    assert p.status()["log_level"] == "debug"
    assert control.request(p.ctl, {"cmd": "log-level", "level": "loud"})["ok"] is False
    assert control.request(p.ctl, {"cmd": "nope"}) == {"ok": False, "error": "unknown command 'nope'"}
    with socket.socket(socket.AF_UNIX) as s:  # garbage is answered, not fatal
        s.connect(p.ctl)
        s.sendall(b"{not json\n")
        assert b'"ok": false' in s.recv(1000)
    r = _cli("status", "--config", str(p.cfg))
    assert r.returncode == 0 and "log-level debug" in r.stdout


def test_watch_config_reloads_on_change(server):
    p, port = server(workers=1, extra="  watch_config: true\n")
    p.wait_ready()
    time.sleep(1.2)
    p.cfg.write_text(p.cfg.read_text().replace("max_connections: 111", "max_connections: 444"))
    deadline = time.monotonic() + 6
    while ask(port)[3] != "444":
        assert time.monotonic() < deadline, p.logs()
        time.sleep(0.1)
    assert "configuration file changed" in p.logs()
