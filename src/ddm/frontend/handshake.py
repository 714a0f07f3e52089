"""The connection phase: greeting, TLS upgrade, authentication (native, caching_sha2 with
full authentication), the limits before login (ddm.protect.limits) and COM_CHANGE_USER.

A mixin of `ddm.frontend.connection.ClientConnection`: it uses the connection's state (see its __init__).
"""

from __future__ import annotations

import logging
import struct
import time

from ddm.execute.client import PH_AUTH, PH_CLOSED, PH_COMMAND
from ddm.wire import auth
from ddm.wire.backend import FLAVOUR_BITS
from ddm.wire.constants import client as CLIENT
from ddm.wire.constants import er as ER
from ddm.wire.constants import server_status as SS
from ddm.wire.session import CharsetRefused, Session, set_names_for
from ddm_core.packets import err_packet, ok_packet

log = logging.getLogger("ddm.frontend.connection")  # one logger name for the client connection

NATIVE = b"mysql_native_password"
SHA2 = b"caching_sha2_password"

def _cstring(p: bytes, pos: int) -> tuple[bytes, int]:
    """A NUL-terminated string at `pos` (running to the end of the packet when the NUL is missing)."""
    end = p.find(b"\0", pos)
    end = len(p) if end < 0 else end
    return p[pos:end], end + 1


class HandshakeMixin:
    # The attributes are ClientConnection's (its __init__; ddm.execute.client.ClientSession lists most).

    def _start_preauth(self) -> bool:
        srv = self.config.server
        refused = self.server.preauth.admit(self.peer, srv.max_unauthenticated, srv.max_unauthenticated_per_address)
        if refused:
            log.info("refused a connection from %s: %s", self.peer, refused)
            self.send_packet(err_packet(ER.CON_COUNT_ERROR, ER.sqlstate(ER.CON_COUNT_ERROR), b"Too many connections"), 0)
            self.close()
            return False
        self._preauth = True
        # a handshake response is a few hundred bytes (MySQL caps its connection attributes at 64 KiB): a bigger
        # packet is refused from its header, before its body is buffered
        self.framer.max_payload = min(srv.max_handshake_packet_size, srv.max_packet_size)
        self._login_timer = self.loop.call_later(srv.connect_timeout, self._login_timeout)
        return True

    def _end_preauth(self) -> None:
        timer, self._login_timer = self._login_timer, None
        if timer is not None:
            timer.cancel()
        if self._preauth:
            self._preauth = False
            self.server.preauth.release(self.peer)

    def _login_timeout(self) -> None:
        # as MariaDB 10.11 does at connect_timeout: close, no error packet (it logs "Aborted connection ... This
        # connection closed normally without authentication")
        self._login_timer = None
        if self.phase == PH_CLOSED or not self._preauth:
            return
        log.info("closed the connection from %s: not logged in within connect_timeout (%g s)", self.peer,
                 self.config.server.connect_timeout)
        self.close()

    def _out_of_order(self, seq: int) -> None:
        log.info("closed the connection from %s: connection-phase packet with sequence id %d, expected %d",
                 self.peer, seq, self.expect_seq)
        self.send_error(ER.NET_PACKETS_OUT_OF_ORDER, "Got packets out of order", self.expect_seq)  # as MariaDB
        self.close()

    def _login_failed(self, used_password: bool) -> None:
        """Log the failure and answer 1045, after the delay LoginThrottle gives for this (user, address)."""
        srv = self.config.server
        user = self.session.user or ""
        throttle = self.server.login_throttle
        throttle.configure(srv.login_failure_threshold, srv.login_failure_delay, srv.login_failure_max_delay)
        count, delay = throttle.failed(user, self.peer, time.monotonic())
        reason = ("unknown user" if self.user is None else "wrong password" if used_password
                  else "no password given")
        log.warning("login failed: user '%s' from %s: %s (failure %d in a row; answered after %.1f s)",
                    user, self.peer, reason, count, delay)
        message = (f"Access denied for user '{user}'@'{self.peer}' "
                   f"(using password: {'YES' if used_password else 'NO'})").encode()
        seq = self.seq

        def answer() -> None:
            self.send_packet(err_packet(ER.ACCESS_DENIED_ERROR, ER.sqlstate(ER.ACCESS_DENIED_ERROR), message), seq)
            self.close()

        if delay <= 0:
            answer()
            return
        self.auth_state = "denied"  # packets sent meanwhile are ignored; the answer ends the connection
        timer, self._login_timer = self._login_timer, None
        if timer is not None:
            timer.cancel()
        self.transport.pause_reading()
        self.loop.call_later(delay, answer)

    def _send_handshake(self) -> None:
        version = (self.config.server.server_version or self.server.version_string()).encode()
        caps = CLIENT.SERVER_CAPABILITIES
        if not self.server.tls_context:
            caps &= ~CLIENT.SSL
        # MariaDB's extended capabilities the data nodes offer and ddm can forward (CLIENT.MARIADB_OFFERED); like
        # MariaDB, LONG_PASSWORD (CLIENT_MYSQL) is then clear and the last 4 reserved bytes carry them
        ext = CLIENT.MARIADB_OFFERED & getattr(self.server, "node_ext_caps", 0)
        if ext:
            caps &= ~CLIENT.LONG_PASSWORD
        s = self.scramble
        payload = (b"\x0a" + version + b"\0" + struct.pack("<I", self.conn_id) + s[:8] + b"\0"
                   + struct.pack("<HBHHB", caps & 0xFFFF, 45, SS.AUTOCOMMIT, caps >> 16, 21) + b"\0" * 6
                   + struct.pack("<I", ext) + s[8:] + b"\0" + NATIVE + b"\0")
        self.server_caps = caps
        self.server_ext_caps = ext
        self.send_packet(payload, 0)
        self.phase = PH_AUTH
        self.auth_state = "response"

    def _on_auth_packet(self, payload: bytes) -> None:
        state = self.auth_state
        if state == "response":
            caps = struct.unpack_from("<I", payload, 0)[0]
            if len(payload) == 32 and caps & CLIENT.SSL:  # SSLRequest: switch to TLS, the real response follows
                self._start_tls(caps)
                return
            self._on_handshake_response(payload)
        elif state == "switch":
            self._verify(payload)
        elif state == "sha2_full":
            self._sha2_full(payload)
        else:
            self.send_error(ER.HANDSHAKE_ERROR, "Bad handshake", self.seq)
            self.close()
            return
        self.command_done()

    def _start_tls(self, caps: int) -> None:
        if not self.server.tls_context:
            self.send_error(ER.HANDSHAKE_ERROR, "TLS is not enabled on this server", self.seq)
            self.close()
            return

        # The client may send its TLS ClientHello right behind the SSLRequest, in the same read: those bytes are in
        # the framer and must reach the TLS layer once start_tls has installed it (it runs connection_made and
        # resume_reading via call_soon in its first step; two call_soon hops land after both).
        early = self.framer.take_pending()
        self.expect_seq = self.seq  # the handshake response follows the SSLRequest without an answer from ddm

        async def upgrade() -> None:
            try:
                self.transport = await self.loop.start_tls(self.transport, self, self.server.tls_context,
                                                           server_side=True)
            except Exception as exc:  # a failed TLS handshake ends the connection
                log.info("TLS handshake with %s failed: %s", self.peer, exc)
                self.close()
                return
            self.tls = True
            self.command_done()

        def feed_early() -> None:
            proto = self.transport.get_protocol()
            if hasattr(proto, "get_buffer"):
                buf = proto.get_buffer(len(early))
                buf[:len(early)] = early
                proto.buffer_updated(len(early))
            else:
                proto.data_received(early)

        self._task = self.loop.create_task(upgrade())
        if early:
            self.loop.call_soon(self.loop.call_soon, feed_early)

    def _on_handshake_response(self, p: bytes) -> None:
        caps, _max_packet, charset = struct.unpack_from("<IIB", p, 0)
        if not caps & CLIENT.PROTOCOL_41:
            self.send_error(ER.HANDSHAKE_ERROR, "Client does not support the 4.1 protocol", self.seq)
            self.close()
            return
        if self.config.server.tls.require and not self.tls:
            self.send_error(ER.ACCESS_DENIED_ERROR, "Connections using insecure transport are prohibited", self.seq)
            self.close()
            return
        pos = 32
        end = p.index(b"\0", pos)
        user = p[pos:end].decode("utf-8", "replace")
        pos = end + 1
        if caps & CLIENT.PLUGIN_AUTH_LENENC_CLIENT_DATA:
            n = p[pos]
            if n == 0xFC:
                n = struct.unpack_from("<H", p, pos + 1)[0]
                pos += 2
            pos += 1
            resp = p[pos:pos + n]
            pos += n
        elif caps & CLIENT.SECURE_CONNECTION:
            n = p[pos]
            resp = p[pos + 1:pos + 1 + n]
            pos += 1 + n
        else:
            end = p.index(b"\0", pos)
            resp = p[pos:end]
            pos = end + 1
        db = None
        if caps & CLIENT.CONNECT_WITH_DB and pos < len(p):
            raw_db, pos = _cstring(p, pos)
            db = raw_db.decode("utf-8", "replace") or None
        plugin = NATIVE
        if caps & CLIENT.PLUGIN_AUTH and pos < len(p):
            plugin, pos = _cstring(p, pos)
        self.caps = caps & self.server_caps
        if not caps & CLIENT.LONG_PASSWORD and len(p) >= 32:
            self.ext_caps = struct.unpack_from("<I", p, 28)[0] & self.server_ext_caps
        self.flavour = self.caps & FLAVOUR_BITS
        self.deprecate_eof = bool(self.caps & CLIENT.DEPRECATE_EOF)
        self.session_track = bool(self.caps & CLIENT.SESSION_TRACK)
        self.session.multi_statements = bool(self.caps & CLIENT.MULTI_STATEMENTS)
        if not self._client_charset(charset):
            return
        self.pending_db = db
        self._begin_auth(user, plugin, resp)

    def _client_charset(self, charset: int) -> bool:
        """Record the SET NAMES that gives node connections the client's collation (the node's own collation
        list, ddm.wire.session.CharsetTable); a character set MariaDB refuses for a client is refused as it does."""
        table = self.server.charset_table() if hasattr(self.server, "charset_table") else None
        try:
            names = set_names_for(charset, table)
        except CharsetRefused as exc:
            self.send_error(ER.WRONG_VALUE_FOR_VAR, str(exc), self.seq)
            self.close()
            return False
        if names:
            self.session.record(names)
        return True

    def _begin_auth(self, user: str, plugin: bytes, resp: bytes) -> None:
        self.session.user = user
        self.user = self.config.users.get(user)
        # an unknown user goes through the same exchange as a caching_sha2_password user (the default plugin; or
        # as a mysql_native_password user when every user has that) and only then gets 1045: the first reply does
        # not tell whether the user exists
        if self.user is not None:
            want = NATIVE if self.user.auth_plugin == "mysql_native_password" else SHA2
        else:
            users = self.config.users.values()
            want = NATIVE if users and all(u.auth_plugin == "mysql_native_password" for u in users) else SHA2
        self.auth_plugin = want
        if plugin != want:
            # AuthSwitchRequest: https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_packets_protocol_auth_switch_request.html
            self.scramble = auth.new_scramble()
            self.auth_state = "switch"
            self.send_packet(b"\xfe" + want + b"\0" + self.scramble + b"\0", self.seq)
            return
        self._verify(resp)

    def _password(self) -> bytes | None:
        return self.user.password.encode() if self.user is not None else None

    def _verify(self, resp: bytes) -> None:
        pw = self._password()
        if self.auth_plugin == NATIVE:
            ok = pw is not None and auth.native_password_verify(pw, self.scramble, resp)
            self._auth_result(ok, bool(resp))
            return
        # caching_sha2_password: ddm holds the password, so the fast path verifies any client that has it; a
        # non-matching scramble gets full authentication (cleartext over TLS, else RSA). An empty response means an
        # empty password and is answered at once, as MySQL does.
        if not resp:
            self._auth_result(pw == b"", False)
            return
        if pw is not None and auth.sha2_password_verify_fast(pw, self.scramble, resp):
            self.send_packet(b"\x01\x03", self.seq)  # fast_auth_success, then OK
            self.seq = (self.seq + 1) & 0xFF
            self._auth_result(True, True)
            return
        self.auth_state = "sha2_full"
        self.send_packet(b"\x01\x04", self.seq)  # perform_full_authentication

    def _sha2_full(self, p: bytes) -> None:
        pw = self._password()
        if p == b"\x02" and not self.tls:  # the client asks for the server's RSA public key
            self.send_packet(b"\x01" + self.server.rsa_keys.public_pem(), self.seq)
            return
        if self.tls:
            given = auth.clear_password_decode(p)
        else:
            try:
                given = auth.sha2_decrypt_password(self.server.rsa_keys, p, self.scramble)
            except Exception:
                given = None
        self._auth_result(pw is not None and given is not None and auth.constant_time_eq(given, pw), True)

    def _auth_result(self, ok: bool, used_password: bool) -> None:
        if not ok:
            self.server.auth_failures += 1
            self._login_failed(used_password)
            return
        self.server.login_throttle.succeeded(self.session.user or "", self.peer)
        db = self.pending_db
        if db is not None:
            problem = self.check_db(db)
            if problem:
                self.send_error(problem[0], problem[1], self.seq)
                self.close()
                return
        self.session.bind_database(self.config, db)
        self._end_preauth()
        self.framer.max_payload = self.config.server.max_packet_size
        self.phase = PH_COMMAND
        self.send_packet(ok_packet(0, 0, SS.AUTOCOMMIT, 0, b"", self.session_track), self.seq)
        watch = getattr(self.server, "idle_watch", None)
        if watch is not None:
            watch.start()  # wait_timeout (ddm.frontend.idle)

    def check_db(self, db: str) -> tuple[int, str] | None:
        if db not in self.config.databases:
            return ER.BAD_DB_ERROR, f"Unknown database '{db}'"
        allowed = self.user.databases if self.user is not None else ()
        if "*" not in allowed and db not in allowed:
            return ER.DBACCESS_DENIED_ERROR, f"Access denied for user '{self.session.user}'@'{self.peer}' to database '{db}'"
        return None

    def _com_change_user(self, p: bytes) -> None:
        pos = 1
        end = p.index(b"\0", pos)
        user = p[pos:end].decode("utf-8", "replace")
        pos = end + 1
        if self.caps & CLIENT.SECURE_CONNECTION:
            n = p[pos]
            resp = p[pos + 1:pos + 1 + n]
            pos += 1 + n
        else:
            end = p.index(b"\0", pos)
            resp = p[pos:end]
            pos = end + 1
        db = None
        if pos < len(p):
            raw_db, pos = _cstring(p, pos)
            db = raw_db.decode("utf-8", "replace") or None
        charset = None
        if pos + 2 <= len(p):
            charset = struct.unpack_from("<H", p, pos)[0]
            pos += 2
        plugin = NATIVE
        if self.caps & CLIENT.PLUGIN_AUTH and pos < len(p):
            plugin, pos = _cstring(p, pos)
        # A new user starts from a clean session, like after COM_RESET_CONNECTION.
        conn, self.conn = self.conn, None
        if conn is not None:
            self.give_back(conn, dirty=True)
        self._release_txn_conns()
        self.sticky.clear()
        self._drop_statements()
        self.cursors = 0
        self.session = Session()
        self._target_key = None
        self.session.multi_statements = bool(self.caps & CLIENT.MULTI_STATEMENTS)
        if charset is not None and not self._client_charset(charset):
            return
        self.pending_db = db
        self.phase = PH_AUTH
        self.seq = 1
        self.expect_seq = 2
        self._begin_auth(user, plugin, resp)
        self.command_done()
