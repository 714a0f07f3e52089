"""ddm.wire.auth: scrambles and RSA exchange against PyMySQL's implementations, the documented server flows driven by
a real PyMySQL client, and (when mariadbd is installed) the client scramble against a real MariaDB server."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pymysql
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from hypothesis import given, settings
from hypothesis import strategies as st
from pymysql import _auth as pyauth

from ddm.wire import auth, tls

scrambles = st.binary(min_size=20, max_size=20).filter(lambda s: b"\0" not in s)
passwords = st.binary(min_size=0, max_size=64)


@pytest.fixture(scope="module")
def keypair() -> auth.RSAKeyPair:
    return auth.RSAKeyPair.generate()


# --- scramble -----------------------------------------------------------------------------------------------------


def test_new_scramble_shape() -> None:
    seen = set()
    for _ in range(2000):
        s = auth.new_scramble()
        assert len(s) == 20
        assert b"\0" not in s and b"$" not in s
        assert max(s) < 0x80
        seen.add(s)
    assert len(seen) == 2000


# --- mysql_native_password ----------------------------------------------------------------------------------------


@given(passwords, scrambles)
def test_native_scramble_matches_pymysql(password: bytes, scramble: bytes) -> None:
    ours = auth.native_password_scramble(password, scramble)
    assert ours == pyauth.scramble_native_password(password, scramble)
    assert len(ours) == (20 if password else 0)
    # the handshake's trailing NUL is ignored
    assert auth.native_password_scramble(password, scramble + b"\0") == ours


@given(passwords, passwords, scrambles)
def test_native_verify(password: bytes, other: bytes, scramble: bytes) -> None:
    resp = pyauth.scramble_native_password(password, scramble)
    assert auth.native_password_verify(password, scramble, resp)
    assert auth.native_password_verify_hash(auth.native_password_hash(password), scramble, resp)
    if other != password:
        assert not auth.native_password_verify(other, scramble, resp)
        assert not auth.native_password_verify_hash(auth.native_password_hash(other), scramble, resp)


def test_native_hash_known_vector() -> None:
    # SELECT PASSWORD('password') on MySQL 5.7 / MariaDB
    assert auth.native_password_hash(b"password") == "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
    assert auth.native_password_hash(b"") == ""


def test_native_verify_hash_rejects_malformed() -> None:
    s = auth.new_scramble()
    resp = auth.native_password_scramble(b"pw", s)
    stage2 = auth.native_password_hash(b"pw")
    assert auth.native_password_verify_hash(stage2[1:].lower(), s, resp)  # "*" optional, hex case-insensitive
    assert not auth.native_password_verify_hash("*XYZ", s, resp)
    assert not auth.native_password_verify_hash(stage2[:-2], s, resp)
    assert not auth.native_password_verify_hash(stage2, s, resp[:-1])
    assert not auth.native_password_verify_hash(stage2, s, b"")
    assert auth.native_password_verify_hash("", s, b"")
    assert not auth.native_password_verify_hash("", s, resp)
    assert not auth.native_password_verify(b"pw", s, b"")
    assert auth.native_password_verify(b"", s, b"")


# --- caching_sha2_password ----------------------------------------------------------------------------------------


@given(passwords, scrambles)
def test_sha2_scramble_matches_pymysql(password: bytes, scramble: bytes) -> None:
    ours = auth.sha2_password_scramble(password, scramble)
    assert ours == pyauth.scramble_caching_sha2(password, scramble)
    assert len(ours) == (32 if password else 0)
    assert auth.sha2_password_verify_fast(password, scramble, ours)


@given(passwords, passwords, scrambles, scrambles)
def test_sha2_verify_fast_rejects(password: bytes, other: bytes, scramble: bytes, scramble2: bytes) -> None:
    resp = auth.sha2_password_scramble(password, scramble)
    if other != password:
        assert not auth.sha2_password_verify_fast(other, scramble, resp)
    if scramble2 != scramble and password:
        assert not auth.sha2_password_verify_fast(password, scramble2, resp)


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=0, max_size=150).filter(lambda p: b"\0" not in p), scrambles)
def test_rsa_pymysql_encrypt_ddm_decrypt(keypair: auth.RSAKeyPair, password: bytes, scramble: bytes) -> None:
    enc = pyauth.sha2_rsa_encrypt(password, scramble, keypair.public_pem())
    assert len(enc) == 256
    assert auth.sha2_decrypt_password(keypair, enc, scramble) == password


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=0, max_size=213), scrambles)
def test_rsa_ddm_round_trip(keypair: auth.RSAKeyPair, password: bytes, scramble: bytes) -> None:
    enc = auth.sha2_encrypt_password(password, scramble, keypair.public_pem())
    assert auth.sha2_decrypt_password(keypair, enc, scramble) == password
    # what a MySQL server decrypts: the same plaintext PyMySQL would have encrypted
    plain = keypair.private_key.decrypt(enc, auth._OAEP)
    assert plain == pyauth._xor_password(password + b"\0", scramble)


def test_rsa_rejects_bad_input(keypair: auth.RSAKeyPair) -> None:
    s = auth.new_scramble()
    with pytest.raises(ValueError):
        auth.sha2_encrypt_password(b"x" * 214, s, keypair.public_pem())  # > 2048-bit OAEP-SHA1 capacity
    with pytest.raises(ValueError):
        auth.sha2_decrypt_password(keypair, b"\x01" * 256, s)
    # decrypting with another scramble breaks the NUL terminator (or yields a different password)
    enc = auth.sha2_encrypt_password(b"secret", s, keypair.public_pem())
    other = bytes((b % 126) + 1 for b in s[::-1])
    try:
        assert auth.sha2_decrypt_password(keypair, enc, other) != b"secret"
    except ValueError:
        pass


def test_rsa_keypair_pem(keypair: auth.RSAKeyPair) -> None:
    pem = keypair.public_pem()
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    again = auth.RSAKeyPair.from_pem(keypair.private_pem())
    assert again.public_pem() == pem
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(Encoding.PEM, PrivateFormat.PKCS8,
                                                                    NoEncryption())
    with pytest.raises(ValueError):
        auth.RSAKeyPair.from_pem(ec_pem)


def test_clear_password() -> None:
    assert auth.clear_password(b"pw") == b"pw\0"
    assert auth.clear_password_decode(b"pw\0") == b"pw"
    assert auth.clear_password_decode(b"pw") == b"pw"
    assert auth.clear_password_decode(b"p\0\0") == b"p\0"


# --- the documented server flows, driven by a real client (PyMySQL) ------------------------------------------------

CAPS = (0x1 | 0x200 | 0x2000 | 0x8000 | 0x80000 | 0x200000)  # LONG_PASSWORD PROTOCOL_41 TRANSACTIONS
SSL_CAP = 0x800  # SECURE_CONNECTION PLUGIN_AUTH PLUGIN_AUTH_LENENC_CLIENT_DATA; CLIENT_SSL


def _read_packet(sock: socket.socket) -> tuple[int, bytes]:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("peer closed")
            buf += chunk
        return buf

    head = exact(4)
    return head[3], exact(int.from_bytes(head[:3], "little"))


def _write_packet(sock: socket.socket, seq: int, payload: bytes) -> None:
    sock.sendall(len(payload).to_bytes(3, "little") + bytes([seq & 0xFF]) + payload)


@dataclass
class MiniServer:
    """One-connection MySQL server that authenticates exactly as the auth module docstring says."""

    password: bytes
    account_plugin: bytes = auth.SHA2_PLUGIN
    handshake_plugin: bytes = auth.SHA2_PLUGIN
    cached: bool = True  # False: always demand full authentication, like MySQL for an uncached account
    tls_context: ssl.SSLContext | None = None
    keypair: auth.RSAKeyPair | None = None
    path: list[str] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.listener.accept()
        try:
            self._serve(conn)
        except BaseException as e:  # surfaced by the test
            self.error = e
        finally:
            conn.close()
            self.listener.close()

    def _serve(self, sock: socket.socket) -> None:
        scramble = auth.new_scramble()
        caps = CAPS | (SSL_CAP if self.tls_context else 0)
        hs = (b"\x0a8.0.35-mini\0" + struct.pack("<I", 7) + scramble[:8] + b"\0"
              + struct.pack("<HBHHB", caps & 0xFFFF, 255, 0, caps >> 16, 21) + b"\0" * 10
              + scramble[8:] + b"\0" + self.handshake_plugin + b"\0")
        _write_packet(sock, 0, hs)
        seq, p = _read_packet(sock)
        secure = False
        if len(p) == 32 and struct.unpack_from("<I", p)[0] & SSL_CAP:  # SSLRequest
            assert self.tls_context is not None
            sock = self.tls_context.wrap_socket(sock, server_side=True)
            secure = True
            seq, p = _read_packet(sock)
        end = p.index(b"\0", 32)
        pos = end + 1
        n = p[pos]  # lenenc auth response (always < 251 bytes here)
        resp = p[pos + 1:pos + 1 + n]
        pos += 1 + n
        plugin = p[pos:p.index(b"\0", pos)]
        seq += 1

        def send(payload: bytes) -> None:
            nonlocal seq
            _write_packet(sock, seq, payload)
            seq += 1

        def recv() -> bytes:
            nonlocal seq
            seq, payload = _read_packet(sock)
            seq += 1
            return payload

        if plugin != self.account_plugin:
            self.path.append("switch")
            scramble = auth.new_scramble()
            send(b"\xfe" + self.account_plugin + b"\0" + scramble + b"\0")
            resp = recv()
        if self.account_plugin == auth.NATIVE_PLUGIN:
            ok = auth.native_password_verify(self.password, scramble, resp)
            self.path.append("native")
        elif not resp:
            ok = self.password == b""
            self.path.append("empty")
        elif self.cached and auth.sha2_password_verify_fast(self.password, scramble, resp):
            send(b"\x01\x03")
            ok = True
            self.path.append("fast")
        else:
            send(b"\x01\x04")
            p = recv()
            if secure:
                given = auth.clear_password_decode(p)
                self.path.append("full-tls")
            else:
                if p == b"\x02":
                    assert self.keypair is not None
                    send(b"\x01" + self.keypair.public_pem())
                    p = recv()
                self.path.append("full-rsa")
                try:
                    given = auth.sha2_decrypt_password(self.keypair, p, scramble)
                except ValueError:
                    given = b"\xff-undecryptable"
            ok = auth.constant_time_eq(given, self.password)
        if ok:
            send(b"\x00\x00\x00" + struct.pack("<HH", 0x0002, 0))  # OK, SERVER_STATUS_AUTOCOMMIT
        else:
            send(b"\xff" + struct.pack("<H", 1045) + b"#28000Access denied")
            return
        try:
            while recv()[:1] != b"\x01":  # until COM_QUIT
                send(b"\x00\x00\x00" + struct.pack("<HH", 0x0002, 0))
        except (ConnectionError, OSError):
            pass

    def connect(self, password: str, **kw: object) -> None:
        conn = pymysql.connect(host="127.0.0.1", port=self.port, user="u", password=password, connect_timeout=5,
                               autocommit=True, **kw)
        conn.close()
        self.thread.join(5)
        if self.error:
            raise self.error


@pytest.fixture(scope="module")
def tls_files() -> Iterator[tuple[str, str]]:
    d = tempfile.mkdtemp()
    yield tls.ensure_self_signed(d)
    shutil.rmtree(d)


def test_flow_sha2_fast_path() -> None:
    srv = MiniServer(b"s3cret")
    srv.connect("s3cret")
    assert srv.path == ["fast"]


def test_flow_sha2_full_auth_rsa(keypair: auth.RSAKeyPair) -> None:
    srv = MiniServer(b"s3cret", cached=False, keypair=keypair)
    srv.connect("s3cret", ssl_disabled=True)
    assert srv.path == ["full-rsa"]


def test_flow_sha2_full_auth_rsa_preloaded_key(keypair: auth.RSAKeyPair) -> None:
    srv = MiniServer(b"s3cret", cached=False, keypair=keypair)
    srv.connect("s3cret", ssl_disabled=True, server_public_key=keypair.public_pem())
    assert srv.path == ["full-rsa"]


def test_flow_sha2_full_auth_tls(tls_files: tuple[str, str]) -> None:
    cert, key = tls_files
    srv = MiniServer(b"s3cret", cached=False, tls_context=tls.server_context(cert, key))
    srv.connect("s3cret", ssl=tls.client_context(True, cert))
    assert srv.path == ["full-tls"]


def test_flow_sha2_wrong_password_goes_full_and_fails(keypair: auth.RSAKeyPair) -> None:
    srv = MiniServer(b"s3cret", keypair=keypair)
    with pytest.raises(pymysql.err.OperationalError) as e:
        srv.connect("wrong", ssl_disabled=True)
    assert e.value.args[0] == 1045
    assert srv.path == ["full-rsa"]


def test_flow_sha2_empty_password() -> None:
    srv = MiniServer(b"")
    srv.connect("")
    assert srv.path == ["empty"]
    srv = MiniServer(b"s3cret")
    with pytest.raises(pymysql.err.OperationalError):
        srv.connect("")
    assert srv.path == ["empty"]


def test_flow_auth_switch_to_sha2() -> None:
    srv = MiniServer(b"s3cret", handshake_plugin=auth.NATIVE_PLUGIN)
    srv.connect("s3cret")
    assert srv.path == ["switch", "fast"]


def test_flow_auth_switch_to_native() -> None:
    srv = MiniServer(b"s3cret", account_plugin=auth.NATIVE_PLUGIN)
    srv.connect("s3cret")
    assert srv.path == ["switch", "native"]
    srv = MiniServer(b"s3cret", account_plugin=auth.NATIVE_PLUGIN, handshake_plugin=auth.NATIVE_PLUGIN)
    with pytest.raises(pymysql.err.OperationalError):
        srv.connect("nope")
    assert srv.path == ["native"]


# --- the client scramble against a real MariaDB server ---------------------------------------------------------

MARIADBD = "/usr/sbin/mariadbd"


def _free_port() -> int:
    for port in range(33000 + os.getpid() % 900, 34000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 33000-33999")


@pytest.fixture(scope="module")
def mariadb() -> Iterator[int]:
    if not (os.path.exists(MARIADBD) and shutil.which("mariadb-install-db")):
        pytest.skip("mariadbd not installed")
    base = tempfile.mkdtemp(prefix="ddm-auth-mariadb-")
    datadir = os.path.join(base, "data")
    init = os.path.join(base, "init.sql")
    with open(init, "w") as f:
        f.write("CREATE USER 'ddm'@'%' IDENTIFIED BY 'Pa55-w0rd!';\nCREATE USER 'nopw'@'%';\n")
    subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={datadir}", "--user=root",
                    "--auth-root-authentication-method=socket", "--skip-test-db"],
                   check=True, capture_output=True, timeout=120)
    port = _free_port()
    proc = subprocess.Popen([MARIADBD, "--no-defaults", f"--datadir={datadir}", "--user=root",
                             f"--port={port}", "--bind-address=127.0.0.1", f"--socket={base}/sock",
                             f"--pid-file={base}/pid", f"--init-file={init}", "--skip-log-bin",
                             f"--log-error={base}/err.log"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("mariadbd did not start: " + open(f"{base}/err.log").read()[-2000:])
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(base, ignore_errors=True)


def _raw_native_login(port: int, user: bytes, password: bytes) -> bytes:
    """Minimal HandshakeResponse41 with our native scramble; returns the server's reply packet."""
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        _, hs = _read_packet(sock)
        assert hs[0] == 10
        pos = hs.index(b"\0", 1) + 1 + 4
        part1 = hs[pos:pos + 8]
        pos += 8 + 1 + 2 + 1 + 2 + 2
        data_len = hs[pos]
        pos += 1 + 10
        part2 = hs[pos:pos + max(13, data_len - 8)]
        scramble = (part1 + part2).rstrip(b"\0")
        plugin = hs[pos + len(part2):].rstrip(b"\0")
        assert plugin == auth.NATIVE_PLUGIN
        resp = auth.native_password_scramble(password, scramble)
        caps = 0x1 | 0x200 | 0x8000 | 0x80000
        _write_packet(sock, 1, struct.pack("<IIB23x", caps, 1 << 24, 45) + user + b"\0" + bytes([len(resp)])
                      + resp + auth.NATIVE_PLUGIN + b"\0")
        return _read_packet(sock)[1]


@pytest.mark.integration
def test_native_scramble_against_mariadb(mariadb: int) -> None:
    assert _raw_native_login(mariadb, b"ddm", b"Pa55-w0rd!")[:1] == b"\x00"
    err = _raw_native_login(mariadb, b"ddm", b"Pa55-w0rd?")
    assert err[:1] == b"\xff" and struct.unpack_from("<H", err, 1)[0] == 1045
    assert _raw_native_login(mariadb, b"nopw", b"")[:1] == b"\x00"


@pytest.mark.integration
def test_native_hash_matches_mariadb(mariadb: int) -> None:
    conn = pymysql.connect(host="127.0.0.1", port=mariadb, user="ddm", password="Pa55-w0rd!")
    try:
        with conn.cursor() as cur:
            for pw in ("Pa55-w0rd!", "", "ünï\x01code"):
                cur.execute("SELECT PASSWORD(%s)", (pw,))
                assert cur.fetchone()[0] == auth.native_password_hash(pw.encode())
    finally:
        conn.close()
