# Hot-path MySQL lexer and statement digest. Other Cython modules cimport Lexed and read the token array
# directly: lx.toks[i].kind / .start / .end / .kw for i < lx.ntokens, lx.slot_tok[k] for k < lx.nslots.

cpdef enum:
    T_KEYWORD = 1
    T_IDENT = 2
    T_QUOTED_IDENT = 3      # `name`
    T_NUMBER = 4
    T_STRING = 5            # '..', "..", N'..', _charset'..', adjacent literals joined ('a' 'b')
    T_HEX = 6               # X'..', 0x.., B'..', 0b.. (binary strings in MySQL)
    T_PARAM = 7             # prepared-statement ?
    T_OPERATOR = 8
    T_PUNCT = 9             # ( ) , . ; { }
    T_VARIABLE = 10         # @x, @'x', @@x, @@session.x
    T_COMMENT_EXEC = 11     # /*! .. */, /*M! .. */, /*+ .. */
    T_ERROR = 12            # unterminated string/comment/quoted name, malformed X'..', stray byte

cdef enum:
    INLINE_TOKENS = 64      # statements with more tokens move the array to the heap
    INLINE_SLOTS = 32

ctypedef struct LexToken:
    Py_ssize_t start        # byte span in the original sql
    Py_ssize_t end
    int kind
    int kw                  # keyword number (index into KEYWORDS) for T_KEYWORD, else -1

cdef class Lexed:
    cdef readonly bytes sql
    cdef readonly bytes digest
    cdef readonly int ntokens
    cdef readonly int nslots
    cdef readonly int statement_count
    cdef readonly bytes first_keyword
    cdef LexToken* toks         # ntokens tokens (_tok_inline or heap)
    cdef int* slot_tok          # nslots token indexes of the digest's ? positions
    cdef int _tok_cap
    cdef int _slot_cap
    cdef tuple _slots
    cdef LexToken _tok_inline[INLINE_TOKENS]
    cdef int _slot_inline[INLINE_SLOTS]

    cdef int _push(self, int kind, Py_ssize_t start, Py_ssize_t end, int kw) except -1
    cpdef int kind(self, int i) except -1
    cpdef Py_ssize_t start(self, int i) except -1
    cpdef Py_ssize_t end(self, int i) except -1
    cpdef bytes text(self, int i)
    cpdef bytes keyword(self, int i)
    cpdef object slot_value(self, int k)

cpdef Lexed lex(bytes sql)
