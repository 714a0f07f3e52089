"""ddm_core.packets against its pure-Python twin, plus framing edge cases and a decoder fuzz."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ddm._py import packets as py
from ddm_core import packets as cy

ints = st.integers(min_value=0, max_value=2**64 - 1)


@given(ints)
def test_lenenc_int_matches_reference(n):
    assert cy.lenenc_int(n) == py.lenenc_int(n)
    assert py.read_lenenc(cy.lenenc_int(n), 0) == (n, len(cy.lenenc_int(n)))


@given(st.binary(max_size=300), st.integers(0, 255))
def test_frame_matches_reference(payload, seq):
    assert cy.frame(payload, seq) == py.frame(payload, seq)


@given(ints, ints, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=40), st.booleans())
def test_ok_packet_round_trip(affected, insert_id, status, warnings, info, track):
    pkt = cy.ok_packet(affected, insert_id, status, warnings, info, track)
    assert pkt == py.ok_packet(affected, insert_id, status, warnings, info, track)
    assert cy.parse_ok(pkt, track) == (affected, insert_id, status, warnings, info)
    assert py.parse_ok(pkt, track) == (affected, insert_id, status, warnings, info)


@given(st.integers(1000, 65535), st.binary(min_size=5, max_size=5), st.binary(max_size=100))
def test_err_packet_round_trip(code, state, msg):
    pkt = cy.err_packet(code, state, msg)
    assert pkt == py.err_packet(code, state, msg)
    assert cy.parse_err(pkt) == (code, state, msg)


def test_continuation_packets_are_joined():
    payload = b"x" * (0xFFFFFF + 10)
    wire = cy.frame(payload, 0)
    assert wire[:4] == b"\xff\xff\xff\x00" and wire[0xFFFFFF + 4:0xFFFFFF + 8] == b"\x0a\x00\x00\x01"
    framer = cy.PacketFramer()
    framer.feed(wire[:1000])
    assert framer.next_packet() is None
    framer.feed(wire[1000:])
    assert framer.next_packet() == payload
    assert framer.last_seq == 1


def test_exactly_max_payload_is_followed_by_an_empty_packet():
    payload = b"y" * 0xFFFFFF
    wire = cy.frame(payload, 3)
    assert wire.endswith(b"\x00\x00\x00\x04")
    framer = cy.PacketFramer()
    framer.feed(wire)
    assert framer.next_packet() == payload


def test_oversize_packet_is_refused_before_it_is_buffered():
    framer = cy.PacketFramer()
    framer.max_payload = 1024
    framer.feed(b"\x00\x10\x00\x00")  # announces 4096 bytes
    with pytest.raises(cy.PacketTooLarge):
        framer.next_packet()


def test_truncated_ok_and_err_raise_malformed():
    with pytest.raises(cy.MalformedPacket):
        cy.parse_ok(b"\x00\xfc")
    with pytest.raises(cy.MalformedPacket):
        cy.parse_err(b"\xff")


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=8), st.data())
def test_framer_agrees_with_reference_on_any_split(payloads, data):
    wire = b"".join(cy.frame(p, i) for i, p in enumerate(payloads))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    a, b = cy.PacketFramer(), py.PacketFramer()
    got_a, got_b = [], []
    prev = 0
    for cut in cuts + [len(wire)]:
        a.feed(wire[prev:cut])
        b.feed(wire[prev:cut])
        prev = cut
        while (p := a.next_packet()) is not None:
            got_a.append(p)
        while (p := b.next_packet()) is not None:
            got_b.append(p)
    assert got_a == got_b == payloads


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_decoders_never_crash_on_garbage(blob):
    """Fuzz: arbitrary bytes give a packet, None, or a ValueError subclass; never another exception."""
    framer = cy.PacketFramer()
    framer.max_payload = 1 << 16
    framer.feed(blob)
    try:
        while framer.next_packet() is not None:
            pass
    except ValueError:
        pass
    for fn in (cy.parse_ok, cy.parse_err):
        try:
            fn(blob) if blob else None
        except ValueError:
            pass


@pytest.mark.parametrize("sql,word", [
    (b"  select 1", b"SELECT"), (b"/* c */ use db", b"USE"), (b"-- c\nSET a=1", b"SET"), (b"(SELECT 1)", b"SELECT"),
    (b"/*!40101 SET x */", b""), (b"#c\nbegin", b"BEGIN"), (b"", b""), (b"commit;", b"COMMIT"),
    (b"Lock tables t write", b"LOCK"), (b"--x", b""), (b"/* unterminated", b""),
])
def test_first_word(sql, word):
    assert cy.first_word(sql) == word


@given(st.binary(max_size=60))
def test_first_word_never_fails_and_is_a_prefix_word(blob):
    w = cy.first_word(blob)
    assert w == w.upper() and len(w) <= 16
    assert w == b"" or w in blob.upper()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=30), st.integers(0, 255))
def test_frame_rows_matches_twin_and_frame(rows: list[bytes], seq: int) -> None:
    got = cy.frame_rows(rows, seq)
    assert got == py.frame_rows(rows, seq)
    assert got[0] == b"".join(cy.frame(r, (seq + i) & 0xFF) for i, r in enumerate(rows))
    assert got[1] == (seq + len(rows)) & 0xFF


def test_frame_rows_with_a_row_of_16_mib() -> None:
    big = b"x" * 0xFFFFFF  # exactly one full packet, then an empty one: two sequence ids
    rows = [b"a", big, b"b"]
    data, nxt = cy.frame_rows(rows, 254)
    assert (data, nxt) == py.frame_rows(rows, 254)
    assert nxt == (254 + 4) & 0xFF
    assert data == cy.frame(b"a", 254) + cy.frame(big, 255) + cy.frame(b"b", 1)
