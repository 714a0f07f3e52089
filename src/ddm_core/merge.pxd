# Scatter-gather result merge: comparison keys computed in C once per row, k-way heap over shard heads.
# The Python-level API and semantics are documented at the top of merge.pyx.

from cpython.object cimport PyObject

cdef class _Plan:
    # A list of (column, desc) key parts.
    cdef int n
    cdef int maxcol
    cdef int* cols
    cdef unsigned char* desc


cdef class _ColInfo:
    # Per-column key/wire metadata of one column set (input or output columns) plus scratch buffers.
    cdef int ncols
    cdef bint binary
    cdef int* kind
    cdef int* ciflags
    cdef int* wire
    cdef unsigned char* unsigned_
    cdef Py_ssize_t* vb           # value begin offsets of the last located row
    cdef Py_ssize_t* vl           # value lengths (-1 = NULL)
    cdef unsigned char* buf       # key scratch buffer
    cdef Py_ssize_t cap
    cdef Py_ssize_t len
    cdef object fold              # ddm.wire.rowcodec.fold_ci (non-ASCII case-insensitive strings)
    cdef list cols                # the ColumnDefs

    cdef Py_ssize_t locate(self, const unsigned char* p, Py_ssize_t n, int upto) except -1
    cdef int reserve(self, Py_ssize_t extra) except -1
    cdef int enc(self, int col, const unsigned char* v, Py_ssize_t n, bint desc) except -1
    cdef bytes key_row(self, bytes row, _Plan plan)
    cdef bytes key_located(self, const unsigned char* p, _Plan plan)
    cdef object num_at(self, const unsigned char* p, int col)
    cdef bytes key_fields(self, list fields, _Plan plan)
    cdef list split(self, bytes row)


cdef class Merger:
    cdef readonly object spec
    cdef readonly list columns
    cdef readonly list output_columns
    cdef readonly int nshards
    cdef public Py_ssize_t max_buffer
    cdef int ncols
    cdef int vis
    cdef int need_cols            # columns to locate for group keys and aggregate inputs
    cdef bint binary
    cdef bint grouped
    cdef bint stream_group
    cdef bint final_sort
    cdef bint simple              # no grouping/having/distinct/final sort: rows go straight to the output
    cdef bint _done
    cdef bint flushed
    cdef _ColInfo cin
    cdef _ColInfo cout
    cdef _Plan merge_plan         # None when rows are concatenated instead of merged
    cdef _Plan group_plan
    cdef _Plan distinct_plan
    cdef _Plan order_plan
    cdef list bufs                # per shard: list of row payloads
    cdef list keys                # per shard: list of merge keys (parallel to bufs)
    cdef Py_ssize_t* pos          # per shard: index of the head row in bufs
    cdef unsigned char* finished
    cdef unsigned char* waiting   # merge mode: unfinished shard with no buffered head
    cdef int nwaiting
    cdef int* heap                # binary min-heap of shard indices, ordered by head key then shard
    cdef int heapn
    cdef PyObject** headkey       # borrowed: keys[s][pos[s]] (the list keeps the reference)
    cdef list output
    cdef Py_ssize_t skip
    cdef Py_ssize_t left          # -1 = no limit
    cdef object cur_key
    cdef list cur
    cdef dict groups
    cdef set seen
    cdef list sorted_rows
    cdef list aggs                # [(col, func_code, arg0, arg1, key plan)]

    cdef inline bint less(self, int a, int b) noexcept
    cdef void sift_down(self, int i) noexcept
    cdef void sift_up(self, int i) noexcept
    cdef int run_merge(self) except -1
    cdef int push(self, bytes row) except -1
    cdef bytes strip_binary(self, bytes row)
    cdef list new_group(self, object row)
    cdef int accumulate(self, list g, const unsigned char* p) except -1
    cdef list finish_group(self, list g)
    cdef int post(self, list fields, object row) except -1
    cdef int emit(self, list fields, object row) except -1
    cdef int flush(self) except -1
    cdef int release(self) except -1
