"""BackendCore's response scanner against the pure-Python reference, over every way a stream can be chunked."""

from hypothesis import given, settings
from hypothesis import strategies as st

from ddm._py import protocol as ref
from ddm_core import packets as P
from ddm_core import protocol as cy


class Sink:
    def __init__(self):
        self.data = b""

    def write(self, b):
        self.data += b


class Probe(cy.BackendCore):
    def __init__(self):
        self.done = 0

    def response_done(self):
        self.done += 1

    def protocol_violation(self, extra):
        raise AssertionError(f"bytes after the response: {extra!r}")


def coldef(name: bytes) -> bytes:
    return (P.lenenc_str(b"def") + P.lenenc_str(b"db") + P.lenenc_str(b"t") * 2 + P.lenenc_str(name) * 2
            + b"\x0c\x2d\x00\x00\x01\x00\x00\xfd\x00\x00\x00\x00\x00")


def resultset(ncols: int, rows: list, deprecate_eof: bool, status: int, warnings: int = 0) -> list:
    pk = [P.lenenc_int(ncols)] + [coldef(b"c%d" % i) for i in range(ncols)]
    if not deprecate_eof:
        pk.append(P.eof_packet(0, status & ~ref.MORE_RESULTS_EXISTS | 2))
    pk += rows
    pk.append(b"\xfe" + P.ok_packet(0, 0, status, warnings)[1:] if deprecate_eof else P.eof_packet(warnings, status))
    return pk


row_values = st.lists(st.one_of(st.none(), st.binary(max_size=300)), min_size=1, max_size=3)


@st.composite
def responses(draw):
    deprecate_eof = draw(st.booleans())
    parts = []
    nres = draw(st.integers(1, 3))
    for i in range(nres):
        more = ref.MORE_RESULTS_EXISTS if i < nres - 1 else 0
        if draw(st.booleans()):
            parts.append(P.ok_packet(draw(st.integers(0, 2**40)), draw(st.integers(0, 2**62)), 2 | more,
                                     draw(st.integers(0, 65535)), draw(st.binary(max_size=30))))
        else:
            ncols = draw(st.integers(1, 3))
            rows = [b"".join(b"\xfb" if v is None else P.lenenc_str(v) for v in draw(row_values)[:ncols])
                    for _ in range(draw(st.integers(0, 5)))]
            parts += resultset(ncols, rows, deprecate_eof, 2 | more, draw(st.integers(0, 65535)))
    if draw(st.booleans()):
        parts.append(P.err_packet(1146, b"42S02", b"no such table"))
    wire = b"".join(P.frame(p, (i + 1) & 0xFF) for i, p in enumerate(parts))
    return wire, deprecate_eof


@settings(max_examples=400)
@given(responses(), st.data())
def test_forward_scanner_finds_the_end_like_the_reference(resp, data):
    wire, deprecate_eof = resp
    expect = ref.response_end(wire, ref.KIND_RESULT, deprecate_eof)
    assert expect is not None
    end, status, error, warnings, insert_id = expect
    wire = wire[:end]
    probe, sink = Probe(), Sink()
    probe.deprecate_eof = deprecate_eof
    probe.sink = sink
    probe.begin(cy.MODE_FORWARD, cy.KIND_RESULT)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, len(wire) - 1)), max_size=8))))
    prev = 0
    for cut in cuts + [len(wire)]:
        if cut > prev:
            assert probe.done == 0
            probe.data_received(wire[prev:cut])
            prev = cut
    assert probe.done == 1
    assert sink.data == wire
    assert probe.last_error == error
    if not error:
        assert probe.last_status == status
        assert probe.last_warnings == warnings
    assert probe.last_insert_id == insert_id
    # collecting the same response yields its packets
    probe2 = Probe()
    probe2.deprecate_eof = deprecate_eof
    probe2.begin(cy.MODE_COLLECT, cy.KIND_RESULT)
    probe2.data_received(wire)
    assert probe2.done == 1
    assert b"".join(P.frame(p, 0)[4:] for p in probe2.packets) == b"".join(
        p for p, _ in ref._packets(wire))


def test_huge_row_spanning_continuation_packets_is_forwarded_whole():
    big = b"\xfe" + (20 * 1024 * 1024).to_bytes(8, "little") + b"z" * (20 * 1024 * 1024)
    parts = resultset(1, [big], False, 2)
    wire = b"".join(P.frame(p, i + 1) for i, p in enumerate(parts))
    probe, sink = Probe(), Sink()
    probe.sink = sink
    probe.begin(cy.MODE_FORWARD, cy.KIND_RESULT)
    for i in range(0, len(wire), 65536):
        probe.data_received(wire[i:i + 65536])
    assert probe.done == 1 and sink.data == wire


@given(st.integers(0, 3), st.integers(0, 3), st.booleans())
def test_prepare_response_end(nparams, ncols, deprecate_eof):
    parts = [b"\x00" + (7).to_bytes(4, "little") + ncols.to_bytes(2, "little") + nparams.to_bytes(2, "little")
             + b"\x00\x00\x00"]
    for count in (nparams, ncols):
        parts += [coldef(b"p")] * count
        if count and not deprecate_eof:
            parts.append(P.eof_packet())
    wire = b"".join(P.frame(p, i + 1) for i, p in enumerate(parts))
    assert ref.response_end(wire, ref.KIND_PREPARE, deprecate_eof)[0] == len(wire)
    probe = Probe()
    probe.deprecate_eof = deprecate_eof
    probe.begin(cy.MODE_COLLECT, cy.KIND_PREPARE)
    probe.data_received(wire)
    assert probe.done == 1 and probe.packets == parts


def test_local_infile_request_ends_the_response_and_is_flagged():
    # LOAD DATA LOCAL on a CLIENT_LOCAL_FILES connection: 0xFB + file name, then the node waits for the file
    request = P.frame(b"\xfb/tmp/data.csv", 1)
    probe, sink = Probe(), Sink()
    probe.sink = sink
    probe.begin(cy.MODE_FORWARD, cy.KIND_RESULT)
    probe.data_received(request[:3])
    probe.data_received(request[3:])
    assert probe.done == 1 and sink.data == request
    assert probe.local_infile and probe.last_error and probe.mode == cy.MODE_IDLE
    # the empty packet that ends the file starts an ordinary response: the flag is reset
    probe.begin(cy.MODE_FORWARD, cy.KIND_RESULT)
    assert not probe.local_infile
    probe.data_received(P.frame(P.ok_packet(2, 0, 2), 3))
    assert probe.done == 2 and not probe.last_error


def test_local_infile_request_while_collecting_gives_the_connection_up():
    # nobody can send a file for a collected command: the connection is out of step and must not be reused
    class Collector(Probe):
        violations = 0

        def protocol_violation(self, extra):
            self.violations += 1

    probe = Collector()
    probe.begin(cy.MODE_COLLECT, cy.KIND_RESULT)
    probe.data_received(P.frame(b"\xfbdata.csv", 1))
    assert probe.done == 1 and probe.violations == 1 and probe.local_infile
