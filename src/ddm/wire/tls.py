"""TLS material: auto-generated server certificate, SSL contexts, and the caching_sha2_password RSA key pair.

Like mysqld's auto_generate_certs / auto_generate_rsa_keys
(https://dev.mysql.com/doc/refman/8.0/en/creating-ssl-rsa-files-using-mysql.html), missing files are created at
start-up and existing ones are never touched. Several worker processes may start at once, so creation happens
under an exclusive flock on `<dir>/.ddm-keys.lock`, and every file is written to a temporary name and renamed into
place: a reader never sees a half-written file, or a certificate paired with another process's key.

After a TLS switch (client sets CLIENT_SSL in a 32-byte SSLRequest, then starts TLS on the same socket), MySQL
does not negotiate ALPN or require SNI; see
https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_ssl_request.html
"""

from __future__ import annotations

import datetime
import fcntl
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ddm.wire.auth import RSAKeyPair

CERT_FILE = "server-cert.pem"
KEY_FILE = "server-key.pem"
RSA_PRIVATE_FILE = "private_key.pem"  # mysqld's caching_sha2_password_private_key_path default
RSA_PUBLIC_FILE = "public_key.pem"
LOCK_FILE = ".ddm-keys.lock"
CERT_VALID_DAYS = 3650  # mysqld's auto-generated certificates are valid for 10 years


@contextmanager
def _dir_lock(directory: str) -> Iterator[None]:
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def _write_atomic(path: str, data: bytes, mode: int) -> None:
    """Write to a temp file in the same directory with `mode`, fsync, then rename over `path`."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".pem")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _load_rsa_key(path: str) -> rsa.RSAPrivateKey | None:
    """The RSA key in `path`, or None if it is missing or unusable (then it is regenerated)."""
    try:
        return RSAKeyPair.load(path).private_key
    except (OSError, ValueError, TypeError):
        return None


def _self_signed_cert(key: rsa.RSAPrivateKey, common_name: str) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate small clock skew between hosts
        .not_valid_after(now + datetime.timedelta(days=CERT_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    # No KeyUsage extension on purpose: with one lacking keyCertSign, OpenSSL no longer treats the certificate
    # as self-signed and a client cannot pin it as its own trust anchor (--ssl-ca=server-cert.pem).
    return cert.public_bytes(serialization.Encoding.PEM)


def ensure_self_signed(directory: str, common_name: str = "ddm Auto Generated Server Certificate") -> tuple[str, str]:
    """(cert_path, key_path) of a self-signed server certificate in `directory`, generating it if missing.

    RSA 2048, SHA-256, 10 years, SAN DNS:localhost + IP:127.0.0.1; the key file is 0600. Idempotent and safe to
    call from several processes at once.
    """
    cert_path = os.path.join(directory, CERT_FILE)
    key_path = os.path.join(directory, KEY_FILE)
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    with _dir_lock(directory):
        if os.path.exists(cert_path) and os.path.exists(key_path):
            return cert_path, key_path
        key = _load_rsa_key(key_path) if os.path.exists(key_path) else None
        if key is None:
            # A stale certificate must go before the new key appears, so that an unlocked reader never sees
            # both files with a certificate that does not belong to the key.
            if os.path.exists(cert_path):
                os.unlink(cert_path)
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_atomic(key_path, _private_pem(key), 0o600)
        _write_atomic(cert_path, _self_signed_cert(key, common_name), 0o644)
    return cert_path, key_path


def ensure_rsa_keypair(directory: str) -> RSAKeyPair:
    """The caching_sha2_password RSA key pair persisted as private_key.pem (0600) / public_key.pem in
    `directory`, generating a 2048-bit pair if missing. Same locking and atomic-write rules as ensure_self_signed.
    """
    priv_path = os.path.join(directory, RSA_PRIVATE_FILE)
    pub_path = os.path.join(directory, RSA_PUBLIC_FILE)
    if os.path.exists(priv_path) and os.path.exists(pub_path):
        return RSAKeyPair.load(priv_path)
    with _dir_lock(directory):
        key = _load_rsa_key(priv_path) if os.path.exists(priv_path) else None
        if key is None:
            if os.path.exists(pub_path):
                os.unlink(pub_path)
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_atomic(priv_path, _private_pem(key), 0o600)
        pair = RSAKeyPair(key)
        if not os.path.exists(pub_path):
            _write_atomic(pub_path, pair.public_pem(), 0o644)
    return pair


def server_context(cert_path: str, key_path: str) -> ssl.SSLContext:
    """Context for client connections: TLS 1.2+, no client certificate requested."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    ctx.verify_mode = ssl.CERT_NONE
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    return ctx


def client_context(verify: bool, ca: str | None = None, *, check_hostname: bool = True,
                   cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """Context for ddm -> data node connections, TLS 1.2+.

    verify=False is ssl-mode=REQUIRED (encrypt, trust anything); verify=True with check_hostname=False is
    VERIFY_CA, with check_hostname=True VERIFY_IDENTITY. `ca` is a PEM bundle (default: the system store);
    `cert`/`key` present a client certificate for accounts created with REQUIRE X509.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    if verify:
        if ca:
            ctx.load_verify_locations(cafile=ca)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        ctx.check_hostname = check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx
