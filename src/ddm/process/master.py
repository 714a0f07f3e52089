"""The master process: owns the listening sockets, forks and supervises workers, reloads, hands off, talks to systemd.

Process model
- The master binds the listening sockets once (SO_REUSEADDR + SO_REUSEPORT, backlog 1024) and every worker inherits
  the *same* sockets through fork(): one kernel accept queue per address, shared by all workers. We deliberately do
  not give each worker its own SO_REUSEPORT socket: closing one of those (worker crash, stop, handoff) resets the
  connections still waiting in its private queue (unless net.ipv4.tcp_migrate_req=1, Linux >= 5.14), while a shared
  socket keeps its queue until the last holder closes it. The same property makes the version handoff lossless (the
  fds are passed to the new master, see ddm.process.handoff). SO_REUSEPORT is still set so a future binary could add
  per-worker sockets; because it also lets a second master bind the same port silently, startup refuses to run when
  the control socket answers (another master is alive: use --takeover).
- The master never runs an event loop library: it is a small selectors loop, single-threaded, so fork() is safe
  (forking from inside a running uvloop/asyncio loop would share its epoll instance with the child).
- Worker ids are `id_base + slot`; a restarted worker keeps its slot's id; a new generation (handoff) picks an
  id_base whose range does not overlap any generation still alive (ddm.process.handoff.choose_id_base).
- A dead worker is replaced at once (reaped on SIGCHLD); a worker that keeps dying within FAST_FAILURE seconds of
  its start is restarted with exponential backoff. A worker whose heartbeats stop for HANG_TIMEOUT is killed.

Signals: SIGHUP reload; SIGTERM drain then exit 0; SIGINT like SIGTERM, a second SIGINT kills everything now;
SIGUSR2 spawns `ddm-server --takeover` (version upgrade in place, inside the systemd service's cgroup).
"""

from __future__ import annotations

import dataclasses
import errno
import heapq
import itertools
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import ddm
from ddm.process import handoff, logs, sdnotify
from ddm.process.control import control_path
from ddm.process.worker import decode_frames, encode, worker_main

log = logs.get_logger("ddm.process.master")

BACKLOG = 1024
FAST_FAILURE = 10.0  # a worker dying sooner than this after its start counts towards the crash-loop backoff
MAX_BACKOFF = 30.0
HANG_TIMEOUT = 30.0  # no heartbeat from a ready worker for this long: SIGKILL and replace
ACK_TIMEOUT = 30.0  # reload: wait this long for every worker's acknowledgement
READY_TIMEOUT = 60.0  # startup/takeover: every worker must report ready within this
HANDOFF_TIMEOUT = 120.0  # old master: a takeover that neither retires nor aborts within this is aborted
KILL_GRACE = 10.0  # after drain_timeout, SIGKILL what is left


def backoff_delay(fast_failures: int) -> float:
    """Restart delay after `fast_failures` consecutive quick deaths: the first restart is immediate."""
    if fast_failures <= 1:
        return 0.0
    return min(0.5 * 2 ** (fast_failures - 2), MAX_BACKOFF)


def describe_exit(status: int) -> dict[str, Any]:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        try:
            return {"signal": signal.Signals(-code).name}
        except ValueError:
            return {"signal": -code}
    return {"code": code}


def bind_listeners(host: str, port: int) -> list[socket.socket]:
    socks: list[socket.socket] = []
    seen = set()
    for family, type_, proto, _, addr in socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                            flags=socket.AI_PASSIVE):
        if addr[:2] in seen:
            continue
        seen.add(addr[:2])
        s = socket.socket(family, type_, proto)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # "::" must not also grab IPv4
            s.bind(addr)
            s.listen(BACKLOG)
            s.setblocking(False)
        except OSError:
            s.close()
            for o in socks:
                o.close()
            raise
        socks.append(s)
    return socks


def wanted_addresses(host: str, port: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for *_, addr in socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
        if (str(addr[0]), int(addr[1])) not in out:
            out.append((str(addr[0]), int(addr[1])))
    return out


# --- a minimal reactor ------------------------------------------------------------------------------------------
class Timer:
    def __init__(self, when: float, cb: Callable[[], None]) -> None:
        self.when, self.cb, self.cancelled = when, cb, False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: Timer) -> bool:
        return self.when < other.when


class Reactor:
    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.timers: list[Timer] = []

    def watch(self, fileobj: Any, events: int, cb: Callable[[int], None]) -> None:
        if fileobj in self.sel.get_map():
            self.sel.modify(fileobj, events, cb)
        else:
            self.sel.register(fileobj, events, cb)

    def unwatch(self, fileobj: Any) -> None:
        try:
            self.sel.unregister(fileobj)
        except (KeyError, ValueError):
            pass

    def call_later(self, delay: float, cb: Callable[[], None]) -> Timer:
        t = Timer(time.monotonic() + delay, cb)
        heapq.heappush(self.timers, t)
        return t

    def run_once(self, max_wait: float = 1.0) -> None:
        wait = max_wait
        if self.timers:
            wait = max(0.0, min(wait, self.timers[0].when - time.monotonic()))
        for key, mask in self.sel.select(wait):
            self._call(key.data, mask)
        now = time.monotonic()
        while self.timers and self.timers[0].when <= now:
            t = heapq.heappop(self.timers)
            if not t.cancelled:
                self._call(t.cb)

    @staticmethod
    def _call(cb: Callable[..., None], *args: Any) -> None:
        # A bug in one handler must not take the master (and with it the supervision of all workers) down.
        try:
            cb(*args)
        except Exception:
            log.exception("error in master event handler")


class Conn:
    """A non-blocking stream connection with an output buffer (worker channel, control client, handoff peer)."""

    def __init__(self, reactor: Reactor, sock: socket.socket, on_data: Callable[[bytearray], None],
                 on_close: Callable[[], None]) -> None:
        self.reactor, self.sock, self.on_data, self.on_close = reactor, sock, on_data, on_close
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.closed = False
        self.close_when_flushed = False
        sock.setblocking(False)
        reactor.watch(sock, selectors.EVENT_READ, self._event)

    def _event(self, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush()
        if mask & selectors.EVENT_READ and not self.closed:
            try:
                data = self.sock.recv(262144)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                self.close()
                return
            self.inbuf += data
            self.on_data(self.inbuf)

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self.outbuf += data
        self._flush()

    def _flush(self) -> None:
        try:
            while self.outbuf:
                n = self.sock.send(self.outbuf)
                del self.outbuf[:n]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.close()
            return
        if self.outbuf:
            self.reactor.watch(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, self._event)
        elif self.close_when_flushed:
            self.close()
        else:
            self.reactor.watch(self.sock, selectors.EVENT_READ, self._event)

    def finish(self) -> None:
        """Close once the output buffer is sent."""
        self.close_when_flushed = True
        self._flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.reactor.unwatch(self.sock)
        self.sock.close()
        self.on_close()


@dataclasses.dataclass
class Slot:
    index: int
    worker_id: int
    pid: int = 0
    conn: Conn | None = None
    started: float = 0.0
    ready: bool = False
    restarts: int = 0
    fast_failures: int = 0
    last_hb: float = 0.0
    restart_timer: Timer | None = None


class Master:
    def __init__(self, config_path: str, config: Any, loader: Callable[[str], Any], workers: int | None = None,
                 takeover: bool = False) -> None:
        self.config_path = os.path.abspath(config_path)
        self.loader = loader
        self.workers_override = workers
        self.takeover = takeover
        self.generation = 1
        self.config = dataclasses.replace(config, generation=self.generation)
        self.reactor = Reactor()
        self.state = "starting"  # starting -> running -> (retiring | stopping)
        self.listeners: list[socket.socket] = []
        self.slots: list[Slot] = []
        self.id_base = 0
        self.control_path = control_path(self.config_path, config.server.control_socket)
        self.handoff_path = handoff.handoff_path(self.control_path)
        self.control_sock: socket.socket | None = None
        self.handoff_sock: socket.socket | None = None
        self.owned_paths: dict[str, tuple[int, int]] = {}  # path -> (st_dev, st_ino) of the socket we bound
        self.client_conns: set[Conn] = set()
        self.takeover_client: handoff.TakeoverClient | None = None
        self.inherited: handoff.Inherited | None = None
        self.handoff_conn: Conn | None = None  # old side: the new master talking to us
        self.handoff_timer: Timer | None = None
        self.successor: int | None = None
        self.upgrade_proc: subprocess.Popen | None = None
        self.signals: list[int] = []
        self.sigint_count = 0
        self.exit_code: int | None = None
        self.seq = itertools.count(1)
        self.reload_busy = False
        self.reload_queue: list[Callable[[dict], None]] = []
        self.pending_acks: dict[int, dict] = {}  # seq -> {"slots": set, "errors": list, "done": cb}
        self.pending_stats: dict[int, dict] = {}
        self.watch_sig: tuple | None = None
        self.watch_candidate: tuple | None = None
        self.started = time.monotonic()
        self.ready_timer: Timer | None = None
        self.kill_timer: Timer | None = None
        self.wake_r, self.wake_w = socket.socketpair()

    # --- setup ------------------------------------------------------------------------------------------------
    def worker_count(self) -> int:
        n = self.workers_override if self.workers_override is not None else self.config.server.workers
        return n if n and n > 0 else (os.cpu_count() or 1)

    def _install_signals(self) -> None:
        for s in (self.wake_r, self.wake_w):
            s.setblocking(False)
        # Handlers only record the signal; the wakeup fd makes select() return so the loop handles it.
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        self.reactor.watch(self.wake_r, selectors.EVENT_READ, self._drain_wakeup)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD, signal.SIGUSR2):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    def _drain_wakeup(self, mask: int) -> None:
        try:
            while self.wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _ensure_not_running(self) -> None:
        for path in (self.control_path, self.handoff_path):
            if not os.path.exists(path):
                continue
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(path)
                except OSError:
                    os.unlink(path)  # stale socket file left by a crashed master
                    continue
            raise RuntimeError(f"another ddm-server is running (it answers on {path}); "
                               "use --takeover to replace it")

    def _bind_unix(self, path: str, mode: int) -> socket.socket:
        # Bind under a temporary name and rename over the path: a takeover replaces the old master's socket
        # atomically, clients never see the path missing.
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        if os.path.exists(tmp):
            os.unlink(tmp)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.bind(tmp)
        os.chmod(tmp, mode)
        s.listen(64)
        s.setblocking(False)
        os.rename(tmp, path)
        st = os.stat(path)
        self.owned_paths[path] = (st.st_dev, st.st_ino)
        return s

    def _bind_control(self) -> None:
        self.control_sock = self._bind_unix(self.control_path, 0o660)
        self.reactor.watch(self.control_sock, selectors.EVENT_READ, self._accept_control)
        self.handoff_sock = self._bind_unix(self.handoff_path, 0o600)
        self.reactor.watch(self.handoff_sock, selectors.EVENT_READ, self._accept_handoff)

    def _close_control(self, unlink: bool) -> None:
        for attr in ("control_sock", "handoff_sock"):
            s = getattr(self, attr)
            if s is not None:
                self.reactor.unwatch(s)
                s.close()
                setattr(self, attr, None)
        if unlink:
            for path, ident in self.owned_paths.items():
                try:
                    st = os.stat(path)
                    if (st.st_dev, st.st_ino) == ident:  # still ours (not replaced by a successor)
                        os.unlink(path)
                except OSError:
                    pass
        self.owned_paths.clear()

    def _setup_listeners(self) -> None:
        srv = self.config.server
        if self.inherited is None:
            self.listeners = bind_listeners(srv.listen_host, srv.listen_port)
            return
        wanted = wanted_addresses(srv.listen_host, srv.listen_port)
        for s in self.inherited.sockets:
            if handoff.socket_address(s) in wanted:
                s.setblocking(False)
                self.listeners.append(s)
                wanted.remove(handoff.socket_address(s))
            else:
                log.warning("inherited socket not in the configuration; it closes when the old master exits",
                            address="{}:{}".format(*handoff.socket_address(s)))
                s.close()
        for host, port in wanted:
            log.info("binding new address", address=f"{host}:{port}")
            self.listeners.extend(bind_listeners(host, port))

    # --- run --------------------------------------------------------------------------------------------------
    def run(self) -> int:
        self._install_signals()
        try:
            if self.takeover:
                self.takeover_client = handoff.TakeoverClient(self.handoff_path)
                self.inherited = self.takeover_client.fetch(ddm.__version__)
                os.environ.update({k: v for k, v in self.inherited.env.items() if k not in os.environ})
                self.generation = self.inherited.generation + 1
                self.config = dataclasses.replace(self.config, generation=self.generation)
                log.info("taking over", old_pid=self.inherited.pid, old_version=self.inherited.version,
                         sockets=len(self.inherited.sockets))
            else:
                self._ensure_not_running()
            self._setup_listeners()
            n = self.worker_count()
            self.id_base = handoff.choose_id_base(n, self.inherited.id_ranges if self.inherited else [])
            if not self.takeover:
                self._bind_control()
        except (OSError, handoff.HandoffError, RuntimeError) as e:
            log.error("cannot start", error=str(e))
            self._abort_takeover()
            return 1
        self.slots = [Slot(index=i, worker_id=self.id_base + i) for i in range(n)]
        log.info("starting", version=ddm.__version__, workers=n, id_base=self.id_base, listen=self._listen_text(),
                 control=self.control_path, generation=self.generation)
        sdnotify.status(f"starting {n} workers")
        for slot in self.slots:
            self._spawn(slot)
        self.ready_timer = self.reactor.call_later(READY_TIMEOUT, self._ready_timeout)
        self._schedule_housekeeping()
        while self.exit_code is None:
            self.reactor.run_once(1.0)
            self._handle_signals()
            self._reap()
        self._close_control(unlink=self.state != "retiring")
        log.info("master exiting", code=self.exit_code)
        return self.exit_code

    def _listen_text(self) -> str:
        return ", ".join("{}:{}".format(*handoff.socket_address(s)) for s in self.listeners)

    def _schedule_housekeeping(self) -> None:
        self.reactor.call_later(1.0, self._housekeeping)
        interval = sdnotify.watchdog_interval([self.inherited.pid] if self.inherited else [])
        if interval:
            log.info("systemd watchdog enabled", interval=round(interval, 3))
            self._watchdog(interval)

    def _watchdog(self, interval: float) -> None:
        if self.state == "retiring" or self.exit_code is not None:
            return  # the successor is the main pid now and pings itself
        sdnotify.watchdog()
        self.reactor.call_later(interval, lambda: self._watchdog(interval))

    def _housekeeping(self) -> None:
        now = time.monotonic()
        for slot in self.slots:
            if slot.pid and slot.ready and now - slot.last_hb > HANG_TIMEOUT:
                log.error("worker stopped sending heartbeats; killing it", worker_id=slot.worker_id, pid=slot.pid,
                          silent_for=round(now - slot.last_hb, 1))
                self._kill(slot.pid, signal.SIGKILL)
        if self.state == "running" and self.config.server.watch_config:
            self._check_watch()
        self.reactor.call_later(1.0, self._housekeeping)

    def _config_signature(self) -> tuple | None:
        try:
            st = os.stat(self.config_path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _check_watch(self) -> None:
        sig = self._config_signature()
        if self.watch_sig is None:
            self.watch_sig = sig
        elif sig != self.watch_sig and sig is not None:
            # Wait until the file has been stable for one poll: editors write in several steps.
            if sig == self.watch_candidate:
                self.watch_sig = sig
                self.watch_candidate = None
                log.info("configuration file changed; reloading", path=self.config_path)
                self.reload(lambda r: None)
            else:
                self.watch_candidate = sig

    # --- workers ----------------------------------------------------------------------------------------------
    def _spawn(self, slot: Slot) -> None:
        slot.restart_timer = None
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        logs.flush()
        pid = os.fork()
        if pid == 0:  # child: never return into the master's stack
            code = 1
            try:
                signal.set_wakeup_fd(-1)  # before the wakeup socket is closed below: a signal would write to it
                parent.close()
                self._close_in_child(slot)
                code = worker_main(self.config, slot.worker_id, self.listeners, child)
            except BaseException:
                log.exception("worker crashed during startup")
            finally:
                logs.flush()
                os._exit(code)
        child.close()
        slot.pid, slot.started, slot.ready, slot.last_hb = pid, time.monotonic(), False, time.monotonic()
        slot.conn = Conn(self.reactor, parent, lambda buf, s=slot: self._on_worker_data(s, buf),
                         lambda: None)
        log.info("worker started", worker_id=slot.worker_id, pid=pid, restarts=slot.restarts)

    def _close_in_child(self, keep: Slot) -> None:
        # Drop everything that belongs to the master: other workers' channels (or their EOF would never come),
        # the control/handoff sockets, the wakeup pair, the selector (closing an epoll fd does not touch the
        # parent's registrations; unregistering would, so we only close).
        for slot in self.slots:
            if slot is not keep and slot.conn is not None and not slot.conn.closed:
                slot.conn.sock.close()
        for c in list(self.client_conns):
            c.sock.close()
        if self.handoff_conn is not None:
            self.handoff_conn.sock.close()
        if self.takeover_client is not None and self.takeover_client.sock is not None:
            self.takeover_client.sock.close()
        for s in (self.control_sock, self.handoff_sock, self.wake_r, self.wake_w):
            if s is not None:
                s.close()
        self.reactor.sel.close()

    def _on_worker_data(self, slot: Slot, buf: bytearray) -> None:
        try:
            msgs = decode_frames(buf)
        except Exception as e:
            log.error("garbage from worker; killing it", worker_id=slot.worker_id, error=str(e))
            self._kill(slot.pid, signal.SIGKILL)
            return
        for msg in msgs:
            op = msg.get("op")
            slot.last_hb = time.monotonic()
            if op == "ready":
                slot.ready = True
                self._check_all_ready()
            elif op == "ack":
                self._on_ack(slot, msg)
            elif op == "stats":
                req = self.pending_stats.get(msg["seq"])
                if req is not None:
                    req["data"][slot.index] = msg["data"]
                    req["slots"].discard(slot.index)
                    if not req["slots"]:
                        req["done"]()

    def _send(self, slot: Slot, msg: dict) -> bool:
        if slot.conn is None or slot.conn.closed:
            return False
        slot.conn.write(encode(msg))
        return not slot.conn.closed

    def _kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self._on_exit(pid, status)

    def _on_exit(self, pid: int, status: int) -> None:
        how = describe_exit(status)
        if self.upgrade_proc is not None and pid == self.upgrade_proc.pid:
            self.upgrade_proc.returncode = os.waitstatus_to_exitcode(status)  # we reaped it, not Popen
            (log.info if self.state == "retiring" else log.error)("takeover process exited", pid=pid, **how)
            self.upgrade_proc = None
            return
        slot = next((s for s in self.slots if s.pid == pid), None)
        if slot is None:
            return
        lived = time.monotonic() - slot.started
        was_ready = slot.ready
        slot.pid, slot.ready = 0, False
        if slot.conn is not None:
            slot.conn.close()
            slot.conn = None
        for seq, req in list(self.pending_acks.items()):
            if slot.index in req["slots"]:  # its replacement forks with the new config
                req["slots"].discard(slot.index)
                if not req["slots"]:
                    self._finish_reload(seq)
        for req in list(self.pending_stats.values()):
            if slot.index in req["slots"]:
                req["slots"].discard(slot.index)
                if not req["slots"]:
                    req["done"]()
        if self.state in ("stopping", "retiring"):
            log.info("worker exited", worker_id=slot.worker_id, pid=pid, **how)
            if all(s.pid == 0 for s in self.slots):
                self._finished()
            return
        if self.state == "starting" and not was_ready:
            log.error("worker died during startup; giving up", worker_id=slot.worker_id, pid=pid, **how)
            self._abort_startup()
            return
        slot.fast_failures = slot.fast_failures + 1 if lived < FAST_FAILURE else 1
        delay = backoff_delay(slot.fast_failures)
        slot.restarts += 1
        log.error("worker exited; restarting", worker_id=slot.worker_id, pid=pid, lived=round(lived, 2),
                  delay=delay, **how)
        if delay <= 0:
            self._spawn(slot)
        else:
            slot.restart_timer = self.reactor.call_later(delay, lambda: self._respawn(slot))

    def _respawn(self, slot: Slot) -> None:
        if self.state in ("starting", "running") and slot.pid == 0:
            self._spawn(slot)

    def _check_all_ready(self) -> None:
        if self.state != "starting" or not all(s.ready for s in self.slots):
            return
        if self.ready_timer is not None:
            self.ready_timer.cancel()
        if self.takeover_client is not None:
            try:
                self._bind_control()
            except OSError as e:
                log.error("cannot bind the control socket; aborting takeover", error=str(e))
                self._abort_startup()
                return
            try:
                self.takeover_client.retire()
                log.info("old master retiring", old_pid=self.inherited.pid if self.inherited else None)
            except (OSError, handoff.HandoffError) as e:
                log.warning("old master did not confirm retirement", error=str(e))
            self.takeover_client = None
            sdnotify.mainpid(os.getpid())
        self.state = "running"
        self.watch_sig = self._config_signature()
        msg = f"serving on {self._listen_text()} with {len(self.slots)} workers, generation {self.generation}"
        sdnotify.ready(msg)
        log.info("ready", listen=self._listen_text(), workers=len(self.slots), generation=self.generation,
                 startup=round(time.monotonic() - self.started, 3))

    def _ready_timeout(self) -> None:
        if self.state == "starting":
            log.error("workers did not become ready in time", timeout=READY_TIMEOUT)
            self._abort_startup()

    def _abort_takeover(self) -> None:
        if self.takeover_client is not None:
            self.takeover_client.close()  # closing before "retire" = abort: the old master keeps serving
            self.takeover_client = None

    def _abort_startup(self) -> None:
        self._abort_takeover()
        for slot in self.slots:
            if slot.pid:
                self._kill(slot.pid, signal.SIGKILL)
        self._wait_children(5.0)
        for s in self.listeners:
            s.close()
        self.exit_code = 1

    def _wait_children(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(s.pid for s in self.slots) and time.monotonic() < deadline:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)
                continue
            for s in self.slots:
                if s.pid == pid:
                    s.pid = 0

    # --- signals ----------------------------------------------------------------------------------------------
    def _handle_signals(self) -> None:
        while self.signals:
            sig = self.signals.pop(0)
            if sig == signal.SIGHUP:
                if self.state == "running":
                    log.info("SIGHUP: reloading")
                    self.reload(lambda r: None)
            elif sig == signal.SIGTERM:
                self.stop("SIGTERM")
            elif sig == signal.SIGINT:
                self.sigint_count += 1
                if self.sigint_count >= 2:
                    self.stop_now()
                else:
                    self.stop("SIGINT (again to stop immediately)")
            elif sig == signal.SIGUSR2:
                if self.state == "running":
                    self.spawn_upgrade()

    def stop(self, why: str) -> None:
        if self.state in ("stopping", "retiring") or self.exit_code is not None:
            return
        if self.state == "starting" and self.takeover:
            self._abort_takeover()
        drain = float(self.config.server.drain_timeout)
        log.info("stopping: draining workers", reason=why, drain_timeout=drain)
        sdnotify.stopping(f"stopping ({why})")
        self.state = "stopping"
        self._close_control(unlink=True)
        self._abort_handoff_peer()
        self._stop_workers(drain)

    def stop_now(self) -> None:
        log.warning("stopping immediately")
        for slot in self.slots:
            if slot.pid:
                self._kill(slot.pid, signal.SIGKILL)
        self._abort_takeover()
        self._wait_children(2.0)
        self.exit_code = 130

    def _stop_workers(self, drain: float) -> None:
        for slot in self.slots:
            if slot.restart_timer is not None:
                slot.restart_timer.cancel()
                slot.restart_timer = None
            if slot.pid and not self._send(slot, {"op": "stop", "drain": drain}):
                self._kill(slot.pid, signal.SIGTERM)
        # The master's copies of the listening sockets: the workers (and a successor) hold their own.
        for s in self.listeners:
            s.close()
        self.kill_timer = self.reactor.call_later(drain + KILL_GRACE, self._kill_leftovers)
        if all(s.pid == 0 for s in self.slots):
            self._finished()

    def _kill_leftovers(self) -> None:
        for slot in self.slots:
            if slot.pid:
                log.error("worker did not stop in time; killing it", worker_id=slot.worker_id, pid=slot.pid)
                self._kill(slot.pid, signal.SIGKILL)

    def _finished(self) -> None:
        if self.kill_timer is not None:
            self.kill_timer.cancel()
        self.exit_code = 0

    # --- reload -----------------------------------------------------------------------------------------------
    def reload(self, reply: Callable[[dict], None]) -> None:
        if self.state != "running":
            reply({"ok": False, "problems": [f"server is {self.state}"]})
            return
        if self.reload_busy:
            self.reload_queue.append(reply)
            return
        self.reload_busy = True
        sdnotify.reloading("reloading configuration")
        try:
            new = self.loader(self.config_path)
        except Exception as e:
            problems = list(getattr(e, "problems", None) or [f"{self.config_path}: {e}"])
            log.error("reload rejected; keeping the running configuration", problems=len(problems))
            for p in problems:
                log.error("config problem", problem=p)
            self._reload_done({"ok": False, "problems": problems}, reply)
            return
        warnings = self._restart_only_changes(new)
        for w in warnings:
            log.warning("needs a restart or handoff", change=w)
        self.generation += 1
        self.config = dataclasses.replace(new, generation=self.generation)
        seq = next(self.seq)
        targets = {s.index for s in self.slots if s.pid and s.conn is not None}
        self.pending_acks[seq] = {"slots": set(targets), "errors": [], "warnings": warnings, "reply": reply,
                                  "timer": self.reactor.call_later(ACK_TIMEOUT, lambda: self._finish_reload(seq))}
        for slot in self.slots:
            if slot.index in targets and not self._send(slot, {"op": "reload", "seq": seq, "config": self.config}):
                self.pending_acks[seq]["slots"].discard(slot.index)
        if not self.pending_acks[seq]["slots"]:
            self._finish_reload(seq)

    def _restart_only_changes(self, new: Any) -> list[str]:
        old, nw = self.config.server, new.server
        out = []
        if (old.listen_host, old.listen_port) != (nw.listen_host, nw.listen_port):
            out.append(f"server.listen changed to {nw.listen_host}:{nw.listen_port}; applies at the next "
                       "start or handoff")
        if old.workers != nw.workers:
            out.append("server.workers changed; applies at the next start or handoff")
        if old.control_socket != nw.control_socket:
            out.append("server.control_socket changed; applies at the next start or handoff")
        return out

    def _on_ack(self, slot: Slot, msg: dict) -> None:
        req = self.pending_acks.get(msg["seq"])
        if req is None:
            return
        if not msg.get("ok"):
            req["errors"].append(f"worker {slot.worker_id}: could not apply the new configuration "
                                 f"(keeps the previous one): {msg.get('error')}")
        req["slots"].discard(slot.index)
        if not req["slots"]:
            self._finish_reload(msg["seq"])

    def _finish_reload(self, seq: int) -> None:
        req = self.pending_acks.pop(seq, None)
        if req is None:
            return
        req["timer"].cancel()
        errors = req["errors"] + [f"worker {self.slots[i].worker_id}: no acknowledgement within {ACK_TIMEOUT:g} s"
                                  for i in req["slots"]]
        if errors:
            log.error("reload incomplete", generation=self.generation, errors=len(errors))
            result = {"ok": False, "problems": errors, "generation": self.generation}
        else:
            log.info("reloaded", generation=self.generation, workers=len(self.slots))
            result = {"ok": True, "generation": self.generation, "workers": len(self.slots),
                      "warnings": req["warnings"]}
        self._reload_done(result, req["reply"])

    def _reload_done(self, result: dict, reply: Callable[[dict], None]) -> None:
        sdnotify.ready(f"serving, generation {self.generation}")
        self.reload_busy = False
        reply(result)
        if self.reload_queue and self.state == "running":
            self.reload(self.reload_queue.pop(0))

    # --- control socket ---------------------------------------------------------------------------------------
    def _accept_control(self, mask: int) -> None:
        self._accept(self.control_sock, self._on_control_line)

    def _accept_handoff(self, mask: int) -> None:
        self._accept(self.handoff_sock, self._on_handoff_line)

    def _accept(self, lsock: socket.socket | None, handler: Callable[[Conn, dict], None]) -> None:
        if lsock is None:
            return
        try:
            sock, _ = lsock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                log.error("cannot accept on the control socket", error=str(e))
            return
        conn: Conn

        def on_data(buf: bytearray) -> None:
            while b"\n" in buf and not conn.closed:
                i = buf.index(b"\n")
                line = bytes(buf[:i])
                del buf[:i + 1]
                try:
                    msg = json.loads(line)
                    if not isinstance(msg, dict):
                        raise ValueError("not an object")
                except ValueError as e:
                    self._reply(conn, {"ok": False, "error": f"bad request: {e}"})
                    continue
                handler(conn, msg)

        conn = Conn(self.reactor, sock, on_data, lambda: self._conn_closed(conn))
        self.client_conns.add(conn)

    def _conn_closed(self, conn: Conn) -> None:
        self.client_conns.discard(conn)
        if conn is self.handoff_conn and self.state != "retiring":
            log.warning("takeover aborted by the new master; still serving")
            self._abort_handoff_peer()

    def _reply(self, conn: Conn, msg: dict) -> None:
        conn.write(json.dumps(msg).encode() + b"\n")

    def _on_control_line(self, conn: Conn, msg: dict) -> None:
        cmd = msg.get("cmd")
        if cmd == "reload":
            self.reload(lambda result: self._reply(conn, result))
        elif cmd == "status":
            self.status(lambda st: self._reply(conn, st))
        elif cmd == "log-level":
            try:
                level = logs.set_level(str(msg.get("level", "")))
            except ValueError as e:
                self._reply(conn, {"ok": False, "error": str(e)})
                return
            for slot in self.slots:
                self._send(slot, {"op": "log-level", "level": level})
            log.info("log level changed", new_level=level)
            self._reply(conn, {"ok": True, "level": level})
        elif cmd == "upgrade":
            if self.state != "running" or self.handoff_conn is not None:
                self._reply(conn, {"ok": False, "error": f"server is {self.state}"})
                return
            pid = self.spawn_upgrade()
            self._reply(conn, {"ok": pid is not None, "pid": pid} if pid else {"ok": False,
                                                                               "error": "spawn failed"})
        else:
            self._reply(conn, {"ok": False, "error": f"unknown command {cmd!r}"})

    def status(self, reply: Callable[[dict], None]) -> None:
        seq = next(self.seq)
        targets = {s.index for s in self.slots if s.pid and s.ready and s.conn is not None}
        req: dict = {"slots": set(targets), "data": {}}
        now = time.monotonic()

        def done() -> None:
            if self.pending_stats.pop(seq, None) is None:
                return
            req["timer"].cancel()
            reply({"ok": True, "pid": os.getpid(), "version": ddm.__version__, "server_version": ddm.SERVER_VERSION,
                   "state": self.state, "generation": self.generation, "config": self.config_path,
                   "listen": [f"{h}:{p}" for h, p in map(handoff.socket_address, self.listeners)
                              ] if self.state in ("starting", "running") else [],
                   "log_level": logs.current_level(), "id_base": self.id_base,
                   "uptime": round(now - self.started, 3),
                   "previous_master": self.inherited.pid if self.inherited else None,
                   "workers": [{"slot": s.index, "id": s.worker_id, "pid": s.pid, "ready": s.ready,
                                "uptime": round(now - s.started, 3) if s.pid else 0.0, "restarts": s.restarts,
                                "stats": req["data"].get(s.index)} for s in self.slots]})

        req["done"] = done
        req["timer"] = self.reactor.call_later(1.0, done)
        self.pending_stats[seq] = req
        for slot in self.slots:
            if slot.index in targets and not self._send(slot, {"op": "stats", "seq": seq}):
                req["slots"].discard(slot.index)
        if not req["slots"]:
            done()

    def spawn_upgrade(self) -> int | None:
        """Start the installed code with our own command line plus --takeover (version upgrade in place).

        Re-running sys.orig_argv picks up whatever is installed now: the `ddm-server` script or `-m ddm.process.server_main`
        imports the package afresh. The child stays in our cgroup, so systemd accepts it as the new MAINPID."""
        argv = [a for a in sys.orig_argv[1:] if a != "--takeover"] or ["-m", "ddm.process.server_main", "--config",
                                                                         self.config_path]
        cmd = [sys.executable, *argv, "--takeover", "--log-level", logs.current_level()]
        try:
            # close_fds (default) keeps our sockets out of it: it gets the listeners through the handoff socket.
            self.upgrade_proc = subprocess.Popen(cmd)
        except OSError as e:
            log.error("cannot start the new version", error=str(e))
            return None
        log.info("started new master for a handoff", pid=self.upgrade_proc.pid)
        return self.upgrade_proc.pid

    # --- handoff, old master's side ---------------------------------------------------------------------------
    def _on_handoff_line(self, conn: Conn, msg: dict) -> None:
        cmd = msg.get("cmd")
        if cmd == "takeover":
            if self.state != "running" or (self.handoff_conn is not None and self.handoff_conn is not conn):
                self._reply(conn, {"ok": False, "error": f"server is {self.state} or already handing off"})
                conn.finish()
                return
            self.handoff_conn = conn
            self.successor = int(msg.get("pid", 0))
            ranges = [[self.id_base, len(self.slots), os.getpid()]]
            if self.inherited:
                ranges += [list(r) for r in handoff.live_ranges(self.inherited.id_ranges)]
            meta = {"ok": True, "pid": os.getpid(), "version": ddm.__version__, "generation": self.generation,
                    "addresses": [list(handoff.socket_address(s)) for s in self.listeners], "id_ranges": ranges,
                    "notify_socket": os.environ.get("NOTIFY_SOCKET"),
                    "watchdog_usec": os.environ.get("WATCHDOG_USEC")}
            try:
                conn.sock.setblocking(True)  # one small message; the peer is waiting for it
                handoff.send_msg(conn.sock, meta, [s.fileno() for s in self.listeners])
                conn.sock.setblocking(False)
            except OSError as e:
                log.error("handoff failed", error=str(e))
                conn.close()
                return
            log.info("handing sockets over", new_pid=self.successor, new_version=msg.get("version"))
            self.handoff_timer = self.reactor.call_later(HANDOFF_TIMEOUT, conn.close)
        elif cmd == "retire" and conn is self.handoff_conn:
            self.retire()
            self._reply(conn, {"ok": True})
            conn.finish()
        else:
            self._reply(conn, {"ok": False, "error": f"unexpected {cmd!r}"})

    def _abort_handoff_peer(self) -> None:
        if self.handoff_timer is not None:
            self.handoff_timer.cancel()
            self.handoff_timer = None
        conn, self.handoff_conn = self.handoff_conn, None
        if conn is not None and not conn.closed and self.state != "retiring":
            conn.close()

    def retire(self) -> None:
        """The successor serves: tell systemd it is the main pid now, stop accepting, drain and exit 0."""
        if self.handoff_timer is not None:
            self.handoff_timer.cancel()
        if self.successor:
            sdnotify.mainpid(self.successor)
            sdnotify.barrier(2.0)  # systemd must know the new main pid before this one exits
        drain = float(self.config.server.drain_timeout)
        log.info("retiring: successor took over", successor=self.successor, drain_timeout=drain)
        self.state = "retiring"
        self._close_control(unlink=False)  # the paths now belong to the successor
        self._stop_workers(drain)
