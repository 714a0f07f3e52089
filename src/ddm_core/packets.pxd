# MySQL packet codec: framing, length-encoded integers/strings, OK/ERR/EOF, column definitions, text rows.
# https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_basic_packets.html

cdef enum:
    MAX_PAYLOAD = 0xFFFFFF      # a payload of exactly this length is continued in the next packet
    HDR_OK = 0x00
    HDR_EOF = 0xFE
    HDR_ERR = 0xFF
    HDR_LOCAL_INFILE = 0xFB
    NULL_COLUMN = 0xFB          # a NULL column value in a text row

cdef inline unsigned int u16(const unsigned char* p) noexcept nogil:
    return p[0] | (<unsigned int>p[1] << 8)

cdef inline unsigned int u24(const unsigned char* p) noexcept nogil:
    return p[0] | (<unsigned int>p[1] << 8) | (<unsigned int>p[2] << 16)

cdef inline unsigned int u32(const unsigned char* p) noexcept nogil:
    return p[0] | (<unsigned int>p[1] << 8) | (<unsigned int>p[2] << 16) | (<unsigned int>p[3] << 24)

# Reads a length-encoded integer at p[*pos] (bounded by n); returns -1 on a NULL marker (0xFB), -2 when truncated.
cdef long long read_lenenc(const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos) noexcept nogil
# The full unsigned 64-bit range (insert ids): 0 read, -1 NULL marker, -2 truncated.
cdef int read_lenenc_u64(const unsigned char* p, Py_ssize_t n, Py_ssize_t* pos, unsigned long long* out) noexcept nogil

cpdef bytes lenenc_int(unsigned long long value)
cpdef bytes lenenc_str(bytes value)
cpdef bytes frame(bytes payload, int seq)
cpdef tuple frame_rows(list payloads, int seq)
cpdef bytes ok_packet(unsigned long long affected_rows=*, unsigned long long insert_id=*, int status=*,
                      int warnings=*, bytes info=*, bint session_track=*)
cpdef bytes err_packet(int code, bytes sqlstate, bytes message)
cpdef bytes eof_packet(int warnings=*, int status=*)
cpdef tuple parse_ok(bytes payload, bint session_track=*)
cpdef tuple parse_err(bytes payload)
cpdef bytes first_word(bytes sql)

cdef class PacketFramer:
    """Cuts a byte stream into packet payloads, joining 16 MiB continuation packets."""
    cdef bytearray _buf
    cdef Py_ssize_t _pos
    cdef bytearray _partial       # payload pieces of a continued packet
    cdef bint _continuing
    cdef public int last_seq
    cdef public Py_ssize_t max_payload
    cpdef feed(self, bytes data)
    cpdef object next_packet(self)
    cpdef Py_ssize_t pending(self)
    cpdef bytes take_pending(self)
