from ddm.protect.limits import LoginThrottle, PreauthGate


def test_gate_counts_in_all_and_per_address():
    g = PreauthGate()
    assert g.admit("a", 3, 2) is None
    assert g.admit("a", 3, 2) is None
    assert "max_unauthenticated_per_address" in g.admit("a", 3, 2)
    assert g.admit("b", 3, 2) is None
    assert "max_unauthenticated)" in g.admit("c", 3, 2)
    assert g.total == 3 and g.by_address == {"a": 2, "b": 1}
    g.release("a")
    assert g.admit("c", 3, 2) is None
    for addr in ("a", "b", "c"):
        g.release(addr)
    assert g.total == 0 and g.by_address == {}
    g.release("never-admitted")  # tolerated, counts stay at zero
    assert g.total == 0 and g.by_address == {}


def test_throttle_grows_bounded_and_resets():
    t = LoginThrottle(threshold=2, step=1.5, max_delay=4.0, forget_after=60.0)
    assert [t.failed("u", "h", 0.0) for _ in range(5)] == [(1, 0.0), (2, 0.0), (3, 1.5), (4, 3.0), (5, 4.0)]
    assert t.failed("u", "other", 0.0) == (1, 0.0)  # per (user, address)
    assert t.failed("v", "h", 0.0) == (1, 0.0)
    t.succeeded("u", "h")
    assert t.failed("u", "h", 1.0) == (1, 0.0)
    assert t.failed("u", "h", 100.0) == (1, 0.0)  # forgotten after a quiet minute


def test_throttle_off_and_reconfigured():
    t = LoginThrottle(threshold=0, step=0.0)
    assert t.failed("u", "h", 0.0) == (1, 0.0)
    t.configure(0, 0.5, 1.0)
    assert t.failed("u", "h", 0.0) == (2, 1.0)


def test_throttle_table_is_bounded():
    t = LoginThrottle(max_entries=100)
    for i in range(1000):
        t.failed(f"user{i}", "h", 0.0)
    assert len(t) == 100


class Stmt:
    def __init__(self):
        self.long_data = []
        self.long_data_size = 0


def _chunk(n: int) -> bytes:
    return b"\x18" + b"\x01\x00\x00\x00" + b"\x00\x00" + b"z" * n


def test_long_data_capped_then_dropped():
    from ddm.protect.limits import add_long_data

    s = Stmt()
    assert add_long_data(s, _chunk(600), 1000) and add_long_data(s, _chunk(400), 1000)
    assert s.long_data_size == 1000 and len(s.long_data) == 2
    assert not add_long_data(s, _chunk(1), 1000)  # over: everything held is dropped at once
    assert s.long_data == [] and s.long_data_size == -1
    assert not add_long_data(s, _chunk(1), 1000)  # and stays dropped until the execute reports it
    s.long_data_size = 0
    assert add_long_data(s, _chunk(10), 1000) and s.long_data_size == 10


def test_long_data_count_restarts_after_the_list_was_consumed():
    from ddm.protect.limits import add_long_data

    s = Stmt()
    add_long_data(s, _chunk(900), 1000)
    s.long_data = []  # an execute sent it to the node
    assert add_long_data(s, _chunk(900), 1000) and s.long_data_size == 900
