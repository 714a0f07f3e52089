# cython: language_level=3
"""Packet state machines of ddm's two kinds of connections.

BackendCore follows one response of a data node. In M_FORWARD mode it only looks at the head of each packet (up
to 36 bytes, gathered across chunk boundaries) to know where the response ends and which status flags closed it,
and writes every received chunk to the client untouched: a single-node result reaches the client as the bytes the
node sent, with the node's sequence ids (they continue from the client's command, whose id 0 ddm kept).

In M_COLLECT mode it keeps the response's packets for ddm; with `streaming` set it hands them over at the end of
every received chunk (`packets_ready`), with `marks`: the indexes of the packets where the response's state
changed (result heads, the last column definition, the EOF after them, terminators), so a consumer can split
results and rows without looking at every row.

FrontendCore cuts the client's stream into commands and hands them one at a time to `on_command`; commands that
arrive while one is running (pipelining, COM_STMT_CLOSE sent ahead of the next command) wait in the framer.

Response shapes: https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_query_response.html and
https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_com_stmt_prepare.html#sect_protocol_com_stmt_prepare_response
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memcpy

from ddm_core.packets cimport MAX_PAYLOAD, PacketFramer, read_lenenc, u16, u24

cdef enum:
    PEEK_BODY = 36                 # enough for an OK packet's status flags (1 + 9 + 9 + 2) and a prepare-OK
    MORE_RESULTS_EXISTS = 0x0008
    CURSOR_EXISTS = 0x0040

# Python-visible copies of the enums, for ddm.wire.backend.
MODE_IDLE = M_IDLE
MODE_RAW = M_RAW
MODE_FORWARD = M_FORWARD
MODE_COLLECT = M_COLLECT
KIND_RESULT = K_RESULT
KIND_PREPARE = K_PREPARE
KIND_FIELD_LIST = K_FIELD_LIST
KIND_ONE = K_ONE
KIND_ROWS = K_ROWS


cdef inline unsigned int ok_status(const unsigned char* p, Py_ssize_t avail) noexcept:
    # OK packet: header, affected_rows<lenenc>, last_insert_id<lenenc>, status_flags<2>, warnings<2>
    cdef Py_ssize_t pos = 1
    if read_lenenc(p, avail, &pos) < 0 or read_lenenc(p, avail, &pos) < 0 or pos + 2 > avail:
        return 0
    return u16(p + pos)


cdef inline unsigned long long ok_insert_id(const unsigned char* p, Py_ssize_t avail) noexcept:
    cdef Py_ssize_t pos = 1
    cdef long long v
    if read_lenenc(p, avail, &pos) < 0:
        return 0
    v = read_lenenc(p, avail, &pos)
    return <unsigned long long>v if v > 0 else 0


cdef inline unsigned int ok_warnings(const unsigned char* p, Py_ssize_t avail) noexcept:
    cdef Py_ssize_t pos = 1
    if read_lenenc(p, avail, &pos) < 0 or read_lenenc(p, avail, &pos) < 0 or pos + 4 > avail:
        return 0
    return u16(p + pos + 2)


cdef class BackendCore:

    def __cinit__(self, *args, **kwargs):
        self.framer = PacketFramer()
        self.packets = []
        self.mode = M_IDLE
        self.state = S_DONE
        self.result_cols = []
        self.marks = []

    cdef void _reset_scan(self, int kind):
        self.kind = kind
        self.skip = 0
        self.continued = False
        self.peek_len = 0
        self.peek_need = 4
        self.last_status = 0
        self.last_warnings = 0
        self.last_insert_id = 0
        self.last_error = False
        self.local_infile = False
        self.forwarded_any = False
        self.result_sets = 0
        if kind == K_RESULT:
            self.state = S_FIRST
        elif kind == K_PREPARE:
            self.state = S_PREP_FIRST
        elif kind == K_FIELD_LIST:
            self.state = S_FIELD_LIST
        elif kind == K_ONE:
            self.state = S_ONE
        else:
            self.state = S_ROWS

    cpdef begin(self, int mode, int kind):
        """Expect one response of `kind`, handled in `mode` (the command itself is written by the caller)."""
        self._reset_scan(kind)
        self.mode = mode
        self.streaming = False
        if mode == M_COLLECT:
            self.packets = []
            self.result_cols = []
            self.marks = []

    cdef int _classify(self, const unsigned char* p, Py_ssize_t avail, Py_ssize_t length):
        """Advance the response state machine by one packet whose body starts at p (avail bytes of it)."""
        cdef int h = p[0] if avail > 0 else -1
        cdef int st = self.state
        cdef unsigned int status
        cdef Py_ssize_t pos
        cdef long long n
        if st == S_ROWS:
            # EOF/terminating OK start with 0xFE and are short; a text row starting with 0xFE (an 8-byte length)
            # is at least 9 bytes long, so the length tells them apart.
            if h == 0xFE and length < MAX_PAYLOAD and (self.deprecate_eof or length < 9):
                status = ok_status(p, avail) if self.deprecate_eof else (u16(p + 3) if avail >= 5 else 0)
                self.last_status = status
                # EOF: header, warnings<2>, status_flags<2>
                self.last_warnings = ok_warnings(p, avail) if self.deprecate_eof else (u16(p + 1) if avail >= 5 else 0)
                self.state = S_FIRST if status & MORE_RESULTS_EXISTS else S_DONE
            elif h == 0xFF:
                self.last_error = True
                self.state = S_DONE
        elif st == S_FIRST:
            if h == 0x00:
                status = ok_status(p, avail)
                self.last_status = status
                self.last_warnings = ok_warnings(p, avail)
                if ok_insert_id(p, avail):
                    self.last_insert_id = ok_insert_id(p, avail)
                self.result_sets += 1
                if not (status & MORE_RESULTS_EXISTS):
                    self.state = S_DONE
            elif h == 0xFF or h == -1:
                self.last_error = True
                self.state = S_DONE
            elif h == 0xFB:
                # LOCAL INFILE request (LOAD DATA LOCAL on a connection opened with CLIENT_LOCAL_FILES): the
                # response pauses here until the file's packets and an empty one are sent. M_FORWARD leaves that
                # to the caller (ddm.frontend.connection relays the client's file); in M_COLLECT nobody can send it, so the
                # connection is given up (data_received). https://dev.mysql.com/doc/dev/mysql-server/latest/
                # page_protocol_com_query_response_local_infile_request.html
                self.local_infile = True
                self.last_error = True
                self.state = S_DONE
            else:
                pos = 0
                n = read_lenenc(p, avail, &pos)
                self.result_sets += 1
                self.ncols = n
                self.remaining = n
                self.state = S_COLS if n > 0 else S_ROWS
                if self.mode == M_COLLECT:
                    self.result_cols.append(len(self.packets))
        elif st == S_COLS:
            self.remaining -= 1
            if self.remaining <= 0:
                self.state = S_ROWS if self.deprecate_eof else S_COLS_EOF
        elif st == S_COLS_EOF:
            status = u16(p + 3) if avail >= 5 else 0
            if status & CURSOR_EXISTS:
                # COM_STMT_EXECUTE that opened a cursor: metadata only, rows come with COM_STMT_FETCH.
                self.last_status = status
                self.state = S_DONE
            else:
                self.state = S_ROWS
        elif st == S_PREP_FIRST:
            if h != 0x00 or avail < 9:
                self.last_error = True
                self.state = S_DONE
            else:
                self.ncols = u16(p + 5)
                self.nparams = u16(p + 7)
                if self.nparams:
                    self.remaining = self.nparams
                    self.state = S_PREP_PARAMS
                elif self.ncols:
                    self.remaining = self.ncols
                    self.state = S_PREP_COLS
                else:
                    self.state = S_DONE
        elif st == S_PREP_PARAMS:
            self.remaining -= 1
            if self.remaining <= 0:
                if not self.deprecate_eof:
                    self.state = S_PREP_PARAMS_EOF
                elif self.ncols:
                    self.remaining = self.ncols
                    self.state = S_PREP_COLS
                else:
                    self.state = S_DONE
        elif st == S_PREP_PARAMS_EOF:
            if self.ncols:
                self.remaining = self.ncols
                self.state = S_PREP_COLS
            else:
                self.state = S_DONE
        elif st == S_PREP_COLS:
            self.remaining -= 1
            if self.remaining <= 0:
                self.state = S_DONE if self.deprecate_eof else S_PREP_COLS_EOF
        elif st == S_PREP_COLS_EOF:
            self.state = S_DONE
        elif st == S_FIELD_LIST:
            if h == 0xFE:
                self.state = S_DONE
            elif h == 0xFF:
                self.last_error = True
                self.state = S_DONE
        elif st == S_ONE:
            self.state = S_DONE
        return self.state == S_DONE

    cdef Py_ssize_t _scan(self, const unsigned char* p, Py_ssize_t n):
        """Follow packet boundaries over one chunk; the offset just past the response's end, or -1 if not there."""
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t t, length, body
        cdef bint was_continued
        while pos < n:
            if self.skip > 0:
                t = n - pos
                if t > self.skip:
                    t = self.skip
                pos += t
                self.skip -= t
                continue
            if self.state == S_DONE:
                return pos
            if self.peek_len < 4:
                t = 4 - self.peek_len
                if t > n - pos:
                    t = n - pos
                memcpy(self.peek + self.peek_len, p + pos, t)
                self.peek_len += t
                pos += t
                if self.peek_len < 4:
                    return -1
                length = u24(self.peek)
                self.peek_need = 4 + (length if length < PEEK_BODY else PEEK_BODY)
            if self.peek_len < self.peek_need:
                t = self.peek_need - self.peek_len
                if t > n - pos:
                    t = n - pos
                memcpy(self.peek + self.peek_len, p + pos, t)
                self.peek_len += t
                pos += t
                if self.peek_len < self.peek_need:
                    return -1
            length = u24(self.peek)
            body = self.peek_len - 4
            self.skip = length - body
            self.peek_len = 0
            was_continued = self.continued
            self.continued = length == MAX_PAYLOAD
            if not was_continued:
                self._classify(self.peek + 4, body, length)
        if self.state == S_DONE and self.skip == 0:
            return pos
        return -1

    def data_received(self, bytes data):
        cdef int mode = self.mode
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef Py_ssize_t end
        cdef bytes payload
        cdef bint done
        cdef int before
        self.rx_bytes += n
        if mode == M_FORWARD:
            end = self._scan(<const unsigned char*>PyBytes_AS_STRING(data), n)
            if self.sink is not None:
                self.sink.write(data if end < 0 or end == n else data[:end])
                self.forwarded_any = True
            if end < 0:
                return
            self.mode = M_IDLE
            if end != n:
                self.protocol_violation(data[end:])
            self.response_done()
        elif mode == M_COLLECT:
            self.framer.feed(data)
            while True:
                payload = self.framer.next_packet()
                if payload is None:
                    if self.streaming and self.packets:
                        self.packets_ready()
                    return
                before = self.state
                done = self.continued_classify(payload)
                # Streaming: a result head (S_FIRST), the last column definition, the EOF after them and a
                # result's terminator each change the state (or start from S_FIRST); rows never do.
                if self.streaming and (before == S_FIRST or before != self.state):
                    self.marks.append(len(self.packets))
                self.packets.append(payload)
                if done:
                    break
            self.mode = M_IDLE
            if self.framer.pending() or self.local_infile:
                self.protocol_violation(b"")
            self.response_done()
        elif mode == M_RAW:
            self.framer.feed(data)
            while True:
                payload = self.framer.next_packet()
                if payload is None:
                    break
                self.packets.append(payload)
            self.raw_ready()
        else:
            self.protocol_violation(data)

    cdef bint continued_classify(self, bytes payload):
        cdef Py_ssize_t n = PyBytes_GET_SIZE(payload)
        return self._classify(<const unsigned char*>PyBytes_AS_STRING(payload), n, n if n < MAX_PAYLOAD else n)

    # Hooks for the Python subclass (ddm.wire.backend.BackendConnection).
    def response_done(self):
        pass

    def raw_ready(self):
        pass

    def packets_ready(self):
        pass

    def protocol_violation(self, bytes extra):
        pass


cdef class FrontendCore:

    def __cinit__(self, *args, **kwargs):
        self.framer = PacketFramer()
        self.busy = False
        self._pumping = False

    def data_received(self, bytes data):
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
        cdef Py_ssize_t length
        # Likely case first: an idle connection receives exactly one whole command.
        if not self.busy and n >= 4 and self.framer.pending() == 0:
            length = u24(p)
            if length + 4 == n and length < MAX_PAYLOAD and length <= self.framer.max_payload:
                self.framer.last_seq = p[3]
                self.busy = True
                self.raw = data
                self.on_command(data[4:])
                return
        self.framer.feed(data)
        self.pump()

    cpdef pump(self):
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self.busy:
                try:
                    payload = self.framer.next_packet()
                except ValueError as exc:
                    self.busy = True
                    self.on_framing_error(exc)
                    return
                if payload is None:
                    return
                self.busy = True
                self.raw = None
                self.on_command(payload)
        finally:
            self._pumping = False

    cpdef command_done(self):
        self.busy = False
        if self.framer.pending() and not self._pumping:
            self.pump()

    def on_command(self, bytes payload):
        raise NotImplementedError

    def on_framing_error(self, exc):
        raise NotImplementedError
