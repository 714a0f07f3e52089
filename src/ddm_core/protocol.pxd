# Connection protocol cores: I/O-free packet state machines under thin asyncio Protocol subclasses (ddm.frontend.connection,
# ddm.wire.backend). The hot path (a client command forwarded to a data node, its response forwarded back as the bytes
# that arrived) runs here without creating Python objects per packet.

from ddm_core.packets cimport PacketFramer

cdef enum Mode:
    M_IDLE = 0        # no command in flight: unexpected bytes are a protocol error
    M_RAW = 1         # handshake/auth: every packet goes to the raw queue
    M_FORWARD = 2     # response bytes are written to the sink as they arrive; only packet heads are inspected
    M_COLLECT = 3     # response packets are kept (payloads) for ddm to use

cdef enum ResponseKind:
    K_RESULT = 1      # COM_QUERY / COM_STMT_EXECUTE: OK | ERR | result set(s), MORE_RESULTS chains them
    K_PREPARE = 2     # COM_STMT_PREPARE: OK-prepare, param defs, column defs
    K_FIELD_LIST = 3  # COM_FIELD_LIST: column defs until EOF
    K_ONE = 4         # COM_STATISTICS: one packet
    K_ROWS = 5        # COM_STMT_FETCH: rows until EOF

cdef enum ScanState:
    S_FIRST = 1
    S_COLS = 2
    S_COLS_EOF = 3
    S_ROWS = 4
    S_PREP_FIRST = 5
    S_PREP_PARAMS = 6
    S_PREP_PARAMS_EOF = 7
    S_PREP_COLS = 8
    S_PREP_COLS_EOF = 9
    S_FIELD_LIST = 10
    S_ONE = 11
    S_DONE = 12

cdef class BackendCore:
    cdef public object transport
    cdef public object sink                 # client transport in M_FORWARD
    cdef public int mode
    cdef public bint deprecate_eof
    cdef public bint session_track
    cdef int kind
    cdef int state
    cdef long long remaining                # column/param definitions still expected
    cdef long long nparams
    cdef long long ncols
    # packet scanning across chunk boundaries (M_FORWARD)
    cdef Py_ssize_t skip                    # body bytes of the current packet still to pass over
    cdef bint continued                     # current packet is a continuation of a 16 MiB one: not classified
    cdef unsigned char peek[40]
    cdef int peek_len                       # bytes of header+body head gathered so far
    cdef int peek_need
    cdef public PacketFramer framer
    cdef public list packets                # M_COLLECT / M_RAW payloads
    cdef public unsigned int last_status    # status flags of the final OK/EOF
    cdef public unsigned int last_warnings  # warning count of the final OK/EOF (SHOW WARNINGS has them)
    cdef public unsigned long long last_insert_id  # last_insert_id of the last OK packet (0: none)
    cdef public bint last_error             # the response ended with an ERR packet
    cdef public bint local_infile           # it ended with a LOCAL INFILE request: the node awaits a file
    cdef public bint forwarded_any          # some bytes of this response already reached the client
    cdef public long long result_sets       # result sets (or OKs) seen in this response
    cdef public object result_cols          # M_COLLECT: index in packets where each result's rows start (list)
    cdef public bint streaming              # M_COLLECT: hand packets over as chunks arrive (packets_ready)
    cdef public list marks                  # streaming: indexes in packets where the response state changed
    cdef public unsigned long long rx_bytes  # bytes received from the node, ever (ddm.wire.nodewatch: read_timeout)
    cdef void _reset_scan(self, int kind)
    cdef int _classify(self, const unsigned char* p, Py_ssize_t avail, Py_ssize_t length)
    cdef Py_ssize_t _scan(self, const unsigned char* p, Py_ssize_t n)
    cdef bint continued_classify(self, bytes payload)
    cpdef begin(self, int mode, int kind)

cdef class FrontendCore:
    cdef public object transport
    cdef public PacketFramer framer
    cdef public bint busy                   # a command is being executed: further packets wait in the framer
    cdef public bytes raw                   # the command as framed by the client, when it came whole (else None)
    cdef bint _pumping
    cpdef command_done(self)
    cpdef pump(self)
