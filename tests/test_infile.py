"""ddm.execute.infile.InfileRelay against fake transports: sequence ids, the end of the file, backpressure, a lost side."""

from types import SimpleNamespace

from ddm.execute import infile
from ddm_core import packets as P


class Transport:
    def __init__(self) -> None:
        self.data = b""
        self.buffered = 0
        self.paused = False

    def write(self, b: bytes) -> None:
        self.data += b

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return False


class Conn:
    def __init__(self) -> None:
        self.transport = Transport()
        self.closed = False
        self.forwarded = None
        self.pool = SimpleNamespace(discarded=[], discard=lambda c: self.pool.discarded.append(c))

    def forward(self, packet, sink, kind, then) -> None:
        self.forwarded = (packet, sink, kind, then)

    def close(self) -> None:
        self.closed = True


class Client:
    def __init__(self) -> None:
        self.framer = SimpleNamespace(last_seq=0)
        self.transport = Transport()
        self.timers: list = []
        self.loop = SimpleNamespace(call_later=lambda delay, fn: self.timers.append(fn))
        self.taken = 0
        self.ended = None
        self.closed = False

    def command_done(self) -> None:
        self.taken += 1

    def end_infile(self, conn) -> None:
        self.ended = conn

    def close(self) -> None:
        self.closed = True


def _relay():
    client, conn = Client(), Conn()
    then = object()
    return client, conn, then, infile.InfileRelay(client, conn, then)


def test_packets_keep_the_clients_sequence_ids_and_the_empty_one_ends_the_file():
    client, conn, then, relay = _relay()
    client.framer.last_seq = 2
    relay.packet(b"1,a\n")
    big = b"x" * (0xFFFFFF + 5)  # came as ids 3 and 4, joined by the framer
    client.framer.last_seq = 4
    relay.packet(big)
    assert conn.transport.data == P.frame(b"1,a\n", 2) + P.frame(big, 3)
    assert client.taken == 2 and client.ended is None
    client.framer.last_seq = 5
    relay.packet(b"")
    assert client.ended is conn and client.taken == 2  # the command goes on: the node's answer comes next
    packet, sink, _kind, cb = conn.forwarded
    assert packet == P.frame(b"", 5) and sink is client.transport and cb is then


def test_a_congested_node_socket_pauses_the_client_until_it_drains():
    client, conn, _then, relay = _relay()
    conn.transport.buffered = infile.HIGH_WATER + 1
    relay.packet(b"data")
    assert client.transport.paused and len(client.timers) == 1
    conn.transport.buffered = infile.LOW_WATER + 1
    client.timers.pop()()
    assert client.transport.paused and len(client.timers) == 1
    conn.transport.buffered = infile.LOW_WATER
    client.timers.pop()()
    assert not client.transport.paused and not client.timers


def test_the_end_of_the_file_resumes_a_paused_client():
    client, conn, _then, relay = _relay()
    conn.transport.buffered = infile.HIGH_WATER + 1
    relay.packet(b"data")
    relay.packet(b"")
    assert not client.transport.paused
    client.timers.pop()()  # a late timer finds nothing to do
    assert not client.transport.paused


def test_a_lost_node_closes_the_client_and_a_lost_client_the_node_connection():
    client, conn, _then, relay = _relay()
    conn.closed = True
    relay.packet(b"data")
    assert client.closed and conn.transport.data == b""
    client, conn, _then, relay = _relay()
    relay.abandon()
    assert conn.closed and conn.pool.discarded == [conn]
