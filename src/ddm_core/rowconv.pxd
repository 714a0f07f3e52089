# Text-protocol rows -> binary-protocol rows (merged scatter results answering COM_STMT_EXECUTE). The column plan
# (which fields are copied, packed as integers, or converted by a Python callback) is made by ddm.wire.rowcodec.
# https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_binary_resultset.html

cdef enum:
    CONV_COPY = 0       # the binary field is the text field, length prefix included (strings, blobs, DECIMAL...)
    CONV_INT = 1        # integer text -> little-endian two's complement of `width` bytes (1, 2, 4, 8)
    CONV_GENERIC = 2    # callback(column, text) -> field bytes; prefixed by the wire: lenenc, length byte, none

cdef enum:
    WIRE_LENENC = 0
    WIRE_FIXED = 1
    WIRE_TEMPORAL = 2

cpdef list text_rows_to_binary(list rows, tuple kinds, tuple args, object generic)
