"""TLS upgrade when the client's ClientHello arrives in the same read as its SSLRequest (no round trip between)."""

import socket
import ssl
import struct

import pytest
from ddm_fixtures import *  # noqa: F403

pytestmark = pytest.mark.integration


def _handshake_with_hello_glued_to_request(port: int) -> str:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.recv(4096)  # server greeting
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        caps = 0x0200 | 0x0800 | 0x8000 | 0x80000  # PROTOCOL_41 | SSL | SECURE_CONNECTION | PLUGIN_AUTH
        request = struct.pack("<IIB23x", caps, 1 << 24, 45)
        s.sendall(struct.pack("<I", len(request))[:3] + b"\x01" + request + outgoing.read())
        while True:
            try:
                tls.do_handshake()
                return tls.version()
            except ssl.SSLWantReadError:
                data = s.recv(65536)
                assert data, "ddm closed the connection during the TLS handshake"
                incoming.write(data)
                pending = outgoing.read()
                if pending:
                    s.sendall(pending)
    finally:
        s.close()


def test_client_hello_in_the_same_segment_as_ssl_request(ddm_proc):  # noqa: F405
    for _ in range(5):
        assert _handshake_with_hello_glued_to_request(ddm_proc.port).startswith("TLS")
