# Shard functions: map a shard-key value to a shard index in [0, n). Contract: docs/CONTRACTS.md
# ("Shard functions and routing"); pure-Python twin: src/ddm/_py/shard.py.

from libc.stdint cimport uint32_t

from ddm_core.lexer cimport Lexed

# zlib-compatible CRC-32 continuing from `crc` (0 to start).
cdef uint32_t crc32_c(const unsigned char* p, Py_ssize_t n, uint32_t crc) noexcept nogil
# MurmurHash3_x86_32.
cdef uint32_t murmur3_c(const unsigned char* p, Py_ssize_t n, uint32_t seed) noexcept nogil

cdef class ShardFunction:
    cdef readonly int n
    cpdef int index(self, object value) except -1
    cpdef object indexes_for_range(self, object lo, bint lo_inclusive, object hi, bint hi_inclusive)

cdef class ModShard(ShardFunction):
    pass

cdef class TwoLevelShard(ShardFunction):
    cdef readonly long long databases

cdef enum:
    CI_STACK = 256            # ci-folded ASCII keys up to this many bytes are folded on the C stack

cdef class HashModShard(ShardFunction):
    cdef readonly str hash_name
    cdef readonly unsigned int seed
    cdef readonly str key_collation   # "ci" (fold case, accents, trailing spaces) or "binary" (exact bytes)
    cdef bint _murmur
    cdef bint _ci
    cdef uint32_t _hash(self, const unsigned char* p, Py_ssize_t n) noexcept nogil
    cdef int _index_text(self, const unsigned char* p, Py_ssize_t n) except -1

cdef class RangeShard(ShardFunction):
    cdef readonly tuple boundaries
    cdef long long* _cb       # boundaries as C integers when they all fit in int64 (else NULL)
    cdef Py_ssize_t _nb

cdef class IntervalShard(ShardFunction):
    cdef readonly str unit
    cdef readonly object start
    cdef readonly int step
    cdef int _unit            # 0 day, 1 month, 2 year
    cdef object _units(self, object dt)

cdef class ClassShard(ShardFunction):
    cdef readonly object impl
    cdef object _ranges

cdef enum:
    POINT_MAX_REFS = 8

# One equality on the shard key of one table, bound without the generic plan machinery (see PointRoute).
cdef class PointRoute:
    cdef readonly int slot
    cdef readonly bint neg
    cdef readonly tuple refs
    cdef readonly tuple datasources
    cdef readonly tuple names
    cdef readonly ShardFunction db_function
    cdef readonly tuple table_functions
    cdef int _nrefs
    cdef int _first[POINT_MAX_REFS]
    cdef int _last[POINT_MAX_REFS]
    cdef object _key_from_text(self, Lexed lx)
    cdef object _negate(self, object value)
    cdef object _place(self, object value, Lexed lx, bint framed)
    cpdef object route_query(self, object lexed)
    cpdef object route_execute(self, object lexed, bytes payload, int nparams, object types)
