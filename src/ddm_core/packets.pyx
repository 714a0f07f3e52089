# cython: language_level=3
"""MySQL packet codec used on both sides of ddm (server to clients, client to data nodes).

Every packet is a 3-byte little-endian payload length, a 1-byte sequence id and the payload. A payload of
16 MiB - 1 bytes or more is sent as several packets, each full one followed by the next (the last one shorter,
possibly empty): https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_packets.html
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_FromStringAndSize
from libc.string cimport memcpy


class PacketTooLarge(ValueError):
    """A peer announced a packet larger than the configured maximum."""


class MalformedPacket(ValueError):
    """A packet that does not follow the protocol (truncated field, bad length)."""


cdef long long read_lenenc(const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos) noexcept nogil:
    # https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_dt_integers.html (length-encoded)
    cdef Py_ssize_t i = pos[0]
    cdef unsigned char c
    cdef unsigned long long v
    if i >= n:
        return -2
    c = p[i]
    if c < 0xFB:
        pos[0] = i + 1
        return c
    if c == 0xFB:
        pos[0] = i + 1
        return -1
    if c == 0xFC:
        if i + 3 > n:
            return -2
        pos[0] = i + 3
        return u16(p + i + 1)
    if c == 0xFD:
        if i + 4 > n:
            return -2
        pos[0] = i + 4
        return u24(p + i + 1)
    if c == 0xFE:
        if i + 9 > n:
            return -2
        v = u32(p + i + 1) | (<unsigned long long>u32(p + i + 5) << 32)
        pos[0] = i + 9
        return <long long>v
    return -2  # 0xFF is not a valid length prefix


cdef int read_lenenc_u64(const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos, unsigned long long* out) noexcept nogil:
    cdef Py_ssize_t i = pos[0]
    if i < n and p[i] == 0xFE:
        if i + 9 > n:
            return -2
        out[0] = u32(p + i + 1) | (<unsigned long long>u32(p + i + 5) << 32)
        pos[0] = i + 9
        return 0
    cdef long long v = read_lenenc(p, n, pos)
    if v < 0:
        return <int>v
    out[0] = <unsigned long long>v
    return 0


cpdef bytes lenenc_int(unsigned long long value):
    if value < 0xFB:
        return bytes((value,))
    if value < 0x10000:
        return b"\xfc" + (<int>value).to_bytes(2, "little")
    if value < 0x1000000:
        return b"\xfd" + (<int>value).to_bytes(3, "little")
    return b"\xfe" + value.to_bytes(8, "little")


cpdef bytes lenenc_str(bytes value):
    return lenenc_int(len(value)) + value


cpdef bytes frame(bytes payload, int seq):
    """Wrap one payload into packets starting at sequence id `seq`, splitting at 16 MiB."""
    cdef Py_ssize_t n = len(payload)
    cdef Py_ssize_t off = 0
    cdef Py_ssize_t chunk
    if n < MAX_PAYLOAD:
        return bytes((n & 0xFF, (n >> 8) & 0xFF, n >> 16, seq & 0xFF)) + payload
    parts = []
    while True:
        chunk = n - off
        if chunk > MAX_PAYLOAD:
            chunk = MAX_PAYLOAD
        parts.append(bytes((chunk & 0xFF, (chunk >> 8) & 0xFF, chunk >> 16, seq & 0xFF)))
        parts.append(payload[off:off + chunk])
        off += chunk
        seq += 1
        if chunk < MAX_PAYLOAD:
            break
    return b"".join(parts)


cpdef tuple frame_rows(list payloads, int seq):
    """(packets, next seq): each payload framed in turn from sequence id `seq` (a payload of 16 MiB or more takes
    one id per packet it is split into), as one bytes object: rows of a result set ddm writes itself."""
    cdef Py_ssize_t total = 0
    cdef Py_ssize_t n, pos = 0
    cdef bytes p, out
    cdef char* q
    for p in payloads:
        n = PyBytes_GET_SIZE(p)
        if n >= MAX_PAYLOAD:
            return _frame_rows_split(payloads, seq)
        total += 4 + n
    out = PyBytes_FromStringAndSize(NULL, total)
    q = PyBytes_AS_STRING(out)
    for p in payloads:
        n = PyBytes_GET_SIZE(p)
        q[pos] = <char>(n & 0xFF)
        q[pos + 1] = <char>((n >> 8) & 0xFF)
        q[pos + 2] = <char>(n >> 16)
        q[pos + 3] = <char>(seq & 0xFF)
        memcpy(q + pos + 4, PyBytes_AS_STRING(p), n)
        pos += 4 + n
        seq = (seq + 1) & 0xFF
    return out, seq


cdef tuple _frame_rows_split(list payloads, int seq):
    parts = []
    for p in payloads:
        parts.append(frame(p, seq))
        seq = (seq + (1 if len(p) < MAX_PAYLOAD else len(p) // MAX_PAYLOAD + 1)) & 0xFF
    return b"".join(parts), seq


cpdef bytes ok_packet(unsigned long long affected_rows=0, unsigned long long insert_id=0, int status=2,
                      int warnings=0, bytes info=b"", bint session_track=False):
    # https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_ok_packet.html
    # With CLIENT_SESSION_TRACK the info string is length-encoded; without it, it runs to the end of the packet.
    head = b"\x00" + lenenc_int(affected_rows) + lenenc_int(insert_id) + bytes(
        (status & 0xFF, (status >> 8) & 0xFF, warnings & 0xFF, (warnings >> 8) & 0xFF))
    if session_track:
        return head + lenenc_str(info) if info else head
    return head + info


cpdef bytes err_packet(int code, bytes sqlstate, bytes message):
    # https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_err_packet.html
    return b"\xff" + bytes((code & 0xFF, (code >> 8) & 0xFF)) + b"#" + sqlstate[:5] + message


cpdef bytes eof_packet(int warnings=0, int status=2):
    return bytes((0xFE, warnings & 0xFF, (warnings >> 8) & 0xFF, status & 0xFF, (status >> 8) & 0xFF))


cpdef tuple parse_ok(bytes payload, bint session_track=False):
    """(affected_rows, insert_id, status, warnings, info) of an OK packet (header 0x00 or 0xFE)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(payload)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
    cdef Py_ssize_t pos = 1
    cdef unsigned long long affected = 0, insert_id = 0
    cdef long long ilen
    cdef unsigned int status = 0, warnings = 0
    if read_lenenc_u64(p, n, &pos, &affected) != 0 or read_lenenc_u64(p, n, &pos, &insert_id) != 0:
        raise MalformedPacket("truncated OK packet")
    if pos + 4 <= n:
        status = u16(p + pos)
        warnings = u16(p + pos + 2)
        pos += 4
    info = b""
    if pos < n:
        if session_track:
            ilen = read_lenenc(p, n, &pos)
            if ilen > 0 and pos + ilen <= n:
                info = payload[pos:pos + ilen]
        else:
            info = payload[pos:]
    return affected, insert_id, status, warnings, info


cpdef tuple parse_err(bytes payload):
    """(code, sqlstate, message) of an ERR packet."""
    cdef Py_ssize_t n = len(payload)
    if n < 3:
        raise MalformedPacket("truncated ERR packet")
    code = payload[1] | (payload[2] << 8)
    if n >= 9 and payload[3:4] == b"#":
        return code, payload[4:9], payload[9:]
    return code, b"HY000", payload[3:]


cpdef bytes first_word(bytes sql):
    """Upper-cased first word of a statement, skipping whitespace, `(`, `;` and comments (not `/*!` ones)."""
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(sql)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(sql)
    cdef Py_ssize_t i = 0, j
    cdef unsigned char c
    cdef char out[16]
    while i < n:
        c = p[i]
        if c == 32 or c == 9 or c == 10 or c == 13 or c == 40 or c == 59:
            i += 1
        elif c == 47 and i + 2 < n and p[i + 1] == 42 and p[i + 2] != 33:  # /* comment */
            j = i + 2
            while j + 1 < n and not (p[j] == 42 and p[j + 1] == 47):
                j += 1
            i = j + 2
        elif (c == 45 and i + 2 < n and p[i + 1] == 45 and (p[i + 2] == 32 or p[i + 2] == 9)) or c == 35:
            while i < n and p[i] != 10:  # -- comment / # comment
                i += 1
        else:
            break
    j = 0
    while i < n and j < 16:
        c = p[i]
        if 97 <= c <= 122:
            c -= 32
        elif not (65 <= c <= 90 or c == 95):
            break
        out[j] = <char>c
        i += 1
        j += 1
    if j == 16:
        return b""  # longer than any keyword ddm acts on
    return PyBytes_FromStringAndSize(out, j)


cdef class PacketFramer:

    def __cinit__(self):
        self._buf = bytearray()
        self._pos = 0
        self._partial = bytearray()
        self._continuing = False
        self.last_seq = -1
        self.max_payload = 1 << 30

    cpdef feed(self, bytes data):
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    cpdef Py_ssize_t pending(self):
        return len(self._buf) - self._pos

    cpdef bytes take_pending(self):
        """Hand over the bytes not yet cut into packets (the start of a TLS handshake after SSLRequest)."""
        rest = bytes(self._buf[self._pos:])
        self._buf = bytearray()
        self._pos = 0
        return rest

    cpdef object next_packet(self):
        """The next whole payload as bytes (continuations joined), or None until more data arrives."""
        cdef Py_ssize_t avail, length
        cdef const unsigned char* p
        while True:
            avail = len(self._buf) - self._pos
            if avail < 4:
                return None
            p = <const unsigned char*>(<char*>self._buf) + self._pos
            length = u24(p)
            if len(self._partial) + length > self.max_payload:
                raise PacketTooLarge(f"packet of {len(self._partial) + length} bytes exceeds the limit of "
                                     f"{self.max_payload} bytes")
            if avail < 4 + length:
                return None
            self.last_seq = p[3]
            start = self._pos + 4
            self._pos = start + length
            if length == MAX_PAYLOAD:
                self._partial += self._buf[start:self._pos]
                self._continuing = True
                continue
            if self._continuing:
                self._partial += self._buf[start:self._pos]
                payload = bytes(self._partial)
                self._partial = bytearray()
                self._continuing = False
            else:
                payload = bytes(self._buf[start:self._pos])
            if self._pos > 65536 and self._pos * 2 > len(self._buf):
                del self._buf[:self._pos]
                self._pos = 0
            return payload
