"""ddm.wire.tls: generated certificate and RSA keys (content, permissions, idempotence, concurrent creation) and real
TLS handshakes between server_context and client_context."""

from __future__ import annotations

import datetime
import ipaddress
import multiprocessing
import os
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pymysql import _auth as pyauth

from ddm.wire import auth, tls


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _load(cert_path: str, key_path: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return cert, key


def _pub(key: rsa.RSAPrivateKey | rsa.RSAPublicKey) -> bytes:
    pub = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str | None) -> tuple[bytes, str | None]:
    """TLS over a socketpair; the server echoes 5 bytes. Raises the client's SSL error if the handshake fails."""
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)

    def serve() -> None:
        try:
            with server.wrap_socket(a, server_side=True) as s:
                s.sendall(s.recv(5))
        except (ssl.SSLError, OSError):
            a.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        with client.wrap_socket(b, server_hostname=hostname) as c:
            c.sendall(b"hello")
            return c.recv(5), c.version()
    finally:
        b.close()
        t.join(5)


# --- self-signed certificate ---------------------------------------------------------------------------------------


def test_self_signed_contents(tmp_path: Path) -> None:
    d = str(tmp_path / "keys")
    cert_path, key_path = tls.ensure_self_signed(d, common_name="test CN")
    assert _mode(key_path) == 0o600
    cert, key = _load(cert_path, key_path)
    assert key.key_size == 2048
    assert _pub(cert.public_key()) == _pub(key)
    assert cert.subject == cert.issuer
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "test CN"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    now = datetime.datetime.now(datetime.timezone.utc)
    assert cert.not_valid_before_utc <= now
    assert cert.not_valid_after_utc - now > datetime.timedelta(days=3649)
    assert not [n for n in os.listdir(d) if n.startswith(".tmp-")]


def test_self_signed_idempotent(tmp_path: Path) -> None:
    first = tls.ensure_self_signed(str(tmp_path))
    before = [Path(p).read_bytes() for p in first]
    stats = [os.stat(p).st_mtime_ns for p in first]
    assert tls.ensure_self_signed(str(tmp_path)) == first
    assert [Path(p).read_bytes() for p in first] == before
    assert [os.stat(p).st_mtime_ns for p in first] == stats


def test_self_signed_repairs(tmp_path: Path) -> None:
    cert_path, key_path = tls.ensure_self_signed(str(tmp_path))
    key_before = Path(key_path).read_bytes()
    os.unlink(cert_path)  # certificate lost: re-issued for the same key
    tls.ensure_self_signed(str(tmp_path))
    assert Path(key_path).read_bytes() == key_before
    cert, key = _load(cert_path, key_path)
    assert _pub(cert.public_key()) == _pub(key)

    os.unlink(key_path)  # key lost: a new pair, never a certificate for the wrong key
    tls.ensure_self_signed(str(tmp_path))
    cert, key = _load(cert_path, key_path)
    assert Path(key_path).read_bytes() != key_before
    assert _pub(cert.public_key()) == _pub(key)

    Path(key_path).write_bytes(b"garbage")  # unreadable key is replaced too
    os.unlink(cert_path)
    tls.ensure_self_signed(str(tmp_path))
    cert, key = _load(cert_path, key_path)
    assert _pub(cert.public_key()) == _pub(key)


def _worker_cert(d: str) -> tuple[bytes, bytes]:
    c, k = tls.ensure_self_signed(d)
    return Path(c).read_bytes(), Path(k).read_bytes()


def _worker_rsa(d: str) -> bytes:
    return tls.ensure_rsa_keypair(d).public_pem()


def test_concurrent_creation(tmp_path: Path) -> None:
    d = str(tmp_path / "shared")
    with multiprocessing.get_context("fork").Pool(6) as pool:
        certs = pool.map(_worker_cert, [d] * 6)
        pubs = pool.map(_worker_rsa, [d] * 6)
    assert len(set(certs)) == 1  # every worker saw the one pair that was generated
    cert = x509.load_pem_x509_certificate(certs[0][0])
    key = serialization.load_pem_private_key(certs[0][1], password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert _pub(cert.public_key()) == _pub(key)
    assert len(set(pubs)) == 1
    assert not [n for n in os.listdir(d) if n.startswith(".tmp-")]


# --- contexts and handshakes ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return tls.ensure_self_signed(str(tmp_path_factory.mktemp("cert")))


def test_server_context_settings(cert_files: tuple[str, str]) -> None:
    ctx = tls.server_context(*cert_files)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_NONE
    assert ctx.options & ssl.OP_NO_COMPRESSION


def test_handshake_without_verification(cert_files: tuple[str, str]) -> None:
    data, version = _handshake(tls.server_context(*cert_files), tls.client_context(False), None)
    assert data == b"hello"
    assert version in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_handshake_verify_identity(cert_files: tuple[str, str], hostname: str) -> None:
    client = tls.client_context(True, cert_files[0])
    assert _handshake(tls.server_context(*cert_files), client, hostname)[0] == b"hello"


def test_handshake_verify_strict_x509(cert_files: tuple[str, str]) -> None:
    # Python 3.13 turns VERIFY_X509_STRICT on by default; the generated certificate must still pin as a CA.
    client = tls.client_context(True, cert_files[0])
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    assert _handshake(tls.server_context(*cert_files), client, "localhost")[0] == b"hello"


def test_handshake_verification_failures(cert_files: tuple[str, str], tmp_path: Path) -> None:
    server = tls.server_context(*cert_files)
    with pytest.raises(ssl.SSLCertVerificationError):  # wrong name
        _handshake(server, tls.client_context(True, cert_files[0]), "db.example.com")
    # ... which VERIFY_CA (no hostname check) accepts
    ca_only = tls.client_context(True, cert_files[0], check_hostname=False)
    assert _handshake(server, ca_only, "db.example.com")[0] == b"hello"
    other_ca, _ = tls.ensure_self_signed(str(tmp_path))
    with pytest.raises(ssl.SSLCertVerificationError):  # a different self-signed certificate
        _handshake(server, tls.client_context(True, other_ca), "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):  # system store does not trust it
        _handshake(server, tls.client_context(True), "localhost")


def test_client_context_with_client_certificate(cert_files: tuple[str, str]) -> None:
    ctx = tls.client_context(False, cert=cert_files[0], key=cert_files[1])
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert _handshake(tls.server_context(*cert_files), ctx, None)[0] == b"hello"


# --- caching_sha2_password RSA key pair ----------------------------------------------------------------------------


def test_rsa_keypair_files(tmp_path: Path) -> None:
    pair = tls.ensure_rsa_keypair(str(tmp_path))
    priv = tmp_path / tls.RSA_PRIVATE_FILE
    pub = tmp_path / tls.RSA_PUBLIC_FILE
    assert _mode(str(priv)) == 0o600
    assert pub.read_bytes() == pair.public_pem()
    assert pair.private_key.key_size == 2048
    again = tls.ensure_rsa_keypair(str(tmp_path))
    assert again.public_pem() == pair.public_pem()
    # a client that read public_key.pem (--server-public-key-path) talks to the loaded pair
    s = auth.new_scramble()
    enc = pyauth.sha2_rsa_encrypt(b"secret", s, pub.read_bytes())
    assert auth.sha2_decrypt_password(again, enc, s) == b"secret"


def test_rsa_keypair_repairs(tmp_path: Path) -> None:
    pair = tls.ensure_rsa_keypair(str(tmp_path))
    (tmp_path / tls.RSA_PUBLIC_FILE).unlink()  # public half rebuilt from the private key
    assert tls.ensure_rsa_keypair(str(tmp_path)).public_pem() == pair.public_pem()
    assert (tmp_path / tls.RSA_PUBLIC_FILE).read_bytes() == pair.public_pem()
    (tmp_path / tls.RSA_PRIVATE_FILE).unlink()  # private half lost: a new pair, public file replaced
    fresh = tls.ensure_rsa_keypair(str(tmp_path))
    assert fresh.public_pem() != pair.public_pem()
    assert (tmp_path / tls.RSA_PUBLIC_FILE).read_bytes() == fresh.public_pem()
