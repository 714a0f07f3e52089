from ddm.wire.nodewatch import NodeWatch
from ddm_core.protocol import MODE_COLLECT, MODE_FORWARD, MODE_IDLE


class FakeLoop:
    def __init__(self):
        self.now = 0.0
        self.timers = []

    def time(self):
        return self.now

    def call_later(self, delay, cb):
        self.timers.append((self.now + delay, cb))
        return object()

    def run_for(self, seconds):
        end = self.now + seconds
        while self.timers and min(t for t, _ in self.timers) <= end:
            self.timers.sort(key=lambda x: x[0])
            t, cb = self.timers.pop(0)
            self.now = t
            cb()
        self.now = end


class FakeTransport:
    def __init__(self):
        self.reading = True

    def is_reading(self):
        return self.reading


class FakeConn:
    def __init__(self, timeout):
        self.read_timeout = timeout
        self.mode = MODE_IDLE
        self.rx_bytes = 0
        self.transport = FakeTransport()
        self.timed_out_at = None

    def read_timed_out(self):
        self.timed_out_at = loop.now


loop = FakeLoop()


def test_silent_busy_connection_times_out_within_a_tick():
    w = NodeWatch(loop)
    start = loop.now
    busy, idle, moving = FakeConn(2.0), FakeConn(2.0), FakeConn(2.0)
    for c in (busy, idle, moving):
        w.track(c)
    assert w.tick == 0.5
    busy.mode = moving.mode = MODE_FORWARD
    for _ in range(20):
        moving.rx_bytes += 10  # a long result that keeps coming
        loop.run_for(0.5)
    assert busy.timed_out_at is not None and 2.0 <= busy.timed_out_at - start <= 2.0 + 2 * w.tick
    assert idle.timed_out_at is None and moving.timed_out_at is None
    assert busy not in w.conns and idle in w.conns


def test_paused_reading_and_off_do_not_time_out():
    w = NodeWatch(loop)
    paused, off = FakeConn(1.0), FakeConn(0)
    w.track(paused)
    w.track(off)
    assert off not in w.conns
    paused.mode = off.mode = MODE_COLLECT
    paused.transport.reading = False  # ddm stopped reading: its client is slow, the node is not silent
    loop.run_for(10)
    assert paused.timed_out_at is None
    paused.transport.reading = True
    resumed = loop.now
    loop.run_for(3)
    assert paused.timed_out_at is not None and paused.timed_out_at - resumed >= 1.0
    assert off.timed_out_at is None


def test_untracked_connection_stops_the_timer():
    w = NodeWatch(loop)
    c = FakeConn(1.0)
    w.track(c)
    w.untrack(c)
    loop.run_for(5)
    assert not w.conns and w._timer is None
