"""ddm.frontend.idle.IdleWatch: clients idle past their session's wait_timeout are closed, busy ones never."""

from types import SimpleNamespace

from ddm.execute.client import PH_AUTH, PH_COMMAND
from ddm.frontend import idle


class FakeLoop:
    def __init__(self) -> None:
        self.timers: list = []

    def call_later(self, delay, fn):
        t = SimpleNamespace(fn=fn, cancel=lambda: None)
        self.timers.append(t)
        return t


def client(timeout: float, phase: int = PH_COMMAND, busy: bool = False) -> SimpleNamespace:
    c = SimpleNamespace(phase=phase, busy=busy, queries=1, idle_mark=-1, idle_since=0.0, conn_id=1, peer="x",
                        session=SimpleNamespace(wait_timeout=timeout, user="u"), closed=False)
    c.close = lambda: setattr(c, "closed", True)
    return c


def test_idle_clients_close_after_their_wait_timeout(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr(idle.time, "monotonic", lambda: now[0])
    short, long_, busy, authing = client(2), client(28800), client(1, busy=True), client(1, phase=PH_AUTH)
    server = SimpleNamespace(loop=FakeLoop(), clients=[short, long_, busy, authing])
    w = idle.IdleWatch(server)
    w.start()
    for _ in range(2):  # first seen idle at 100, then 101: not yet 2 s
        server.loop.timers.pop().fn()
        now[0] += 1
    assert not short.closed
    short.queries += 1  # a command came: idle again from the next look
    server.loop.timers.pop().fn()
    now[0] += 1
    server.loop.timers.pop().fn()
    now[0] += 1
    assert not short.closed
    server.loop.timers.pop().fn()
    assert short.closed and not long_.closed and not busy.closed and not authing.closed
