"""Authentication plugin math: pure functions for both sides of the MySQL connection phase.

ddm is a *server* to its clients (it holds their plaintext passwords from the config) and a *client* to its data
nodes. This module only computes and checks auth payloads; the handshake state machines live in
`ddm.frontend.connection` (server side) and `ddm.wire.backend` (client side) and follow the flows below.

Packet payloads below omit the 4-byte packet header. Every reply within the connection phase carries the next
sequence id (client and server alternate). References:
https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase.html
https://dev.mysql.com/doc/dev/mysql-server/latest/page_caching_sha2_authentication_exchanges.html

Scramble (a.k.a. nonce, salt, auth-plugin-data)
    20 bytes from `new_scramble()`. Initial Handshake v10 sends it split as 8 bytes + filler 0x00 and the
    remaining 12 bytes + 0x00 (auth-plugin-data-len = 21). Functions here use only the first 20 bytes
    (SCRAMBLE_LENGTH), so a scramble with its trailing NUL still attached gives the same result.

Auth switch (server -> client)
    If the plugin named in the client's HandshakeResponse41 is not the account's plugin, the server sends
        AuthSwitchRequest: 0xFE, plugin name, 0x00, auth-plugin-data (a fresh 20-byte scramble), 0x00
    and the client answers with a bare payload: the new plugin's response computed over the *new* scramble.
    The flow then continues exactly as if that response had been in the HandshakeResponse41.

mysql_native_password
    client -> server: native_password_scramble(password, scramble)   (20 bytes; empty when password is empty)
    server -> client: OK if native_password_verify(...) else ERR 1045 ER_ACCESS_DENIED_ERROR.

caching_sha2_password
    The response to the scramble is sha2_password_scramble(password, scramble) (32 bytes, empty for an empty
    password). Server side:

    * Empty response: no AuthMoreData at all. Reply OK if the account's password is empty, else ERR 1045
      ("using password: NO"). (MySQL sha2_password.cc: an empty packet ends the exchange at once; PyMySQL and
      libmysqlclient expect OK/ERR here, an 0x01 0x03 would desynchronise them.)
    * Fast path: if sha2_password_verify_fast(password, scramble, response):
          server -> client: AuthMoreData 0x01 0x03 (fast_auth_success), then OK (next sequence id).
      MySQL only takes this path when the account's SHA256 digest is in its in-memory cache (filled by an
      earlier full authentication). ddm keeps every password in plaintext, so its "cache" always holds every
      configured user: a correct scramble always succeeds here without a full authentication first.
    * Full authentication (the scramble did not verify, e.g. a client that saw the wrong scramble, or the
      strict path for unknown/non-cached accounts):
          server -> client: AuthMoreData 0x01 0x04 (perform_full_authentication)
      - over TLS (or a Unix socket), the client sends its password in clear, NUL-terminated
        (`clear_password(pw)`); the server checks `clear_password_decode(payload)` with `constant_time_eq`,
        then OK/ERR.
      - without TLS, the client asks for the server's RSA public key:
          client -> server: 0x02 (request_public_key)
          server -> client: AuthMoreData 0x01 + keypair.public_pem()
          client -> server: sha2_encrypt_password(pw, scramble, public_pem)  (RSA-OAEP-SHA1 of
                            (password + 0x00) XOR scramble-repeated; 256 bytes for a 2048-bit key)
          server: sha2_decrypt_password(keypair, payload, scramble) -> password; compare; OK/ERR.
        A client that already has the key (--server-public-key-path) skips the 0x02 round trip and sends the
        encrypted password straight after 0x01 0x04.
      A client that refuses full auth over an insecure link without a key just gets ERR from its own side.

    Client side (ddm -> MySQL 8 data node): send sha2_password_scramble; on 0x01 0x03 read the OK; on 0x01 0x04
    send clear_password(pw) over TLS, else 0x02, then on "0x01 + PEM" send sha2_encrypt_password(...).

mysql_clear_password (client side only; only ever over TLS): the response is `clear_password(pw)`.

MariaDB data nodes use mysql_native_password (or ed25519, which ddm does not speak).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

SCRAMBLE_LENGTH = 20

NATIVE_PLUGIN = b"mysql_native_password"
SHA2_PLUGIN = b"caching_sha2_password"
CLEAR_PLUGIN = b"mysql_clear_password"

# caching_sha2_password AuthMoreData status bytes (after the 0x01 AuthMoreData header).
SHA2_REQUEST_PUBLIC_KEY = 0x02
SHA2_FAST_AUTH_SUCCESS = 0x03
SHA2_PERFORM_FULL_AUTH = 0x04

# MySQL's generate_user_salt() (mysys/crypt_genhash_impl.cc): random bytes masked to 7 bits, with 0x00 and '$'
# bumped by one, so the salt is NUL-free, valid UTF-8 and never contains the '$' separator of stored hashes.
_SALT_TABLE = bytes(b + 1 if b in (0, 0x24) else b for b in (i & 0x7F for i in range(256)))

_OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


def new_scramble() -> bytes:
    """A fresh 20-byte scramble: no 0x00 (it is NUL-terminated in the handshake), no '$', all < 0x80."""
    return os.urandom(SCRAMBLE_LENGTH).translate(_SALT_TABLE)


def constant_time_eq(a: bytes, b: bytes) -> bool:
    """Compare secrets without leaking where they differ."""
    return hmac.compare_digest(a, b)


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _sha1(data: bytes) -> bytes:
    return hashlib.sha1(data).digest()


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# --- mysql_native_password --------------------------------------------------------------------------------------
# https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_authentication_methods_native_password_authentication.html


def native_password_scramble(password: bytes, scramble: bytes) -> bytes:
    """Client response: SHA1(password) XOR SHA1(scramble + SHA1(SHA1(password))); b"" for an empty password."""
    if not password:
        return b""
    stage1 = _sha1(password)
    return _xor(stage1, _sha1(scramble[:SCRAMBLE_LENGTH] + _sha1(stage1)))


def native_password_hash(password: bytes) -> str:
    """The mysql.user authentication_string for a password: "*" + uppercase HEX(SHA1(SHA1(password))), or ""."""
    if not password:
        return ""
    return "*" + _sha1(_sha1(password)).hex().upper()


def native_password_verify_hash(stage2_hex: str, scramble: bytes, response: bytes) -> bool:
    """Server check against a stored hash (`native_password_hash` format, the leading "*" optional).

    SHA1(password) = response XOR SHA1(scramble + stage2); it is right iff SHA1 of it equals stage2
    (MySQL check_scramble_sha1). An empty stored hash accepts only an empty response.
    """
    stage2_hex = stage2_hex.removeprefix("*")
    if not stage2_hex:
        return response == b""
    try:
        stage2 = bytes.fromhex(stage2_hex)
    except ValueError:
        return False
    if len(stage2) != 20 or len(response) != 20:
        return False
    stage1 = _xor(response, _sha1(scramble[:SCRAMBLE_LENGTH] + stage2))
    return constant_time_eq(_sha1(stage1), stage2)


def native_password_verify(stored_password: bytes, scramble: bytes, client_response: bytes) -> bool:
    """Server check against a plaintext password: recompute the expected response, compare in constant time."""
    return constant_time_eq(native_password_scramble(stored_password, scramble), client_response)


# --- caching_sha2_password ----------------------------------------------------------------------------------------


def sha2_password_scramble(password: bytes, scramble: bytes) -> bytes:
    """Client response: SHA256(password) XOR SHA256(SHA256(SHA256(password)) + scramble); b"" if no password.

    Note the order: the double digest comes *before* the scramble (the reverse of mysql_native_password);
    MySQL sha2_password.cc generate_sha2_scramble, PyMySQL scramble_caching_sha2.
    """
    if not password:
        return b""
    stage1 = _sha256(password)
    return _xor(stage1, _sha256(_sha256(stage1) + scramble[:SCRAMBLE_LENGTH]))


def sha2_password_verify_fast(password: bytes, scramble: bytes, response: bytes) -> bool:
    """Server fast-path check with the plaintext password. True for an empty password and empty response, but
    see the module docstring: an empty response is answered with OK/ERR directly, not with 0x01 0x03."""
    return constant_time_eq(sha2_password_scramble(password, scramble), response)


def clear_password(password: bytes) -> bytes:
    """The cleartext response (mysql_clear_password, sha2 full auth over TLS): password + NUL."""
    return password + b"\0"


def clear_password_decode(payload: bytes) -> bytes:
    """The password in a cleartext response: strip exactly one trailing NUL (tolerate its absence)."""
    return payload[:-1] if payload.endswith(b"\0") else payload


class RSAKeyPair:
    """The server's RSA key for caching_sha2_password full authentication without TLS.

    MySQL keeps it as private_key.pem / public_key.pem in the data directory (see `ddm.wire.tls.ensure_rsa_keypair`).
    """

    __slots__ = ("private_key", "_public_pem")

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        self.private_key = private_key
        self._public_pem = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    @classmethod
    def generate(cls, bits: int = 2048) -> RSAKeyPair:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def from_pem(cls, private_pem: bytes, password: bytes | None = None) -> RSAKeyPair:
        key = serialization.load_pem_private_key(private_pem, password=password)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("caching_sha2_password needs an RSA private key")
        return cls(key)

    @classmethod
    def load(cls, private_key_path: str) -> RSAKeyPair:
        with open(private_key_path, "rb") as f:
            return cls.from_pem(f.read())

    def public_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM ("-----BEGIN PUBLIC KEY-----"), what the server sends after 0x01."""
        return self._public_pem

    def private_pem(self) -> bytes:
        """Unencrypted PKCS#8 PEM of the private key."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _xor_repeat(data: bytes, scramble: bytes) -> bytes:
    key = scramble[:SCRAMBLE_LENGTH]
    if not key:
        raise ValueError("empty scramble")
    reps = len(data) // len(key) + 1
    return _xor(data, (key * reps)[:len(data)])


def sha2_encrypt_password(password: bytes, scramble: bytes, public_pem: bytes) -> bytes:
    """Client side of full auth without TLS: RSA-OAEP(SHA1, MGF1-SHA1) of (password + NUL) XOR scramble repeated.

    Raises ValueError if the password is too long for the key (2048-bit: at most 213 bytes).
    """
    key = serialization.load_pem_public_key(public_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("caching_sha2_password needs an RSA public key")
    return key.encrypt(_xor_repeat(password + b"\0", scramble), _OAEP)


def sha2_decrypt_password(keypair: RSAKeyPair, encrypted: bytes, scramble: bytes) -> bytes:
    """Server side of full auth without TLS: undo RSA-OAEP, XOR with the scramble, drop the trailing NUL.

    Raises ValueError for a payload that does not decrypt or is not NUL-terminated (MySQL rejects those too).
    """
    plain = _xor_repeat(keypair.private_key.decrypt(encrypted, _OAEP), scramble)
    if not plain.endswith(b"\0"):
        raise ValueError("decrypted password is not NUL-terminated")
    return plain[:-1]

