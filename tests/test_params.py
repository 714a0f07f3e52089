"""COM_STMT_EXECUTE parameter decoding against an encoder written from the protocol documentation."""

import datetime
import struct
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ddm.wire.constants import field_type as FT
from ddm.wire.params import ParamError, decode_params
from ddm_core.packets import lenenc_str


def encode(values, bound=True):
    """A client's COM_STMT_EXECUTE payload for `values` (None, int, float, bytes, Decimal, date, datetime)."""
    n = len(values)
    bitmap = bytearray((n + 7) // 8)
    types, body = b"", b""
    for i, v in enumerate(values):
        if v is None:
            bitmap[i >> 3] |= 1 << (i & 7)
            types += bytes((FT.NULL, 0))
        elif isinstance(v, bool) or isinstance(v, int):
            unsigned = v >= 2**63
            types += bytes((FT.LONGLONG, 0x80 if unsigned else 0))
            body += struct.pack("<Q" if unsigned else "<q", v)
        elif isinstance(v, float):
            types += bytes((FT.DOUBLE, 0))
            body += struct.pack("<d", v)
        elif isinstance(v, Decimal):
            types += bytes((FT.NEWDECIMAL, 0))
            body += lenenc_str(str(v).encode())
        elif isinstance(v, datetime.datetime):
            types += bytes((FT.DATETIME, 0))
            body += b"\x0b" + struct.pack("<HBBBBBI", v.year, v.month, v.day, v.hour, v.minute, v.second,
                                           v.microsecond)
        elif isinstance(v, datetime.date):
            types += bytes((FT.DATE, 0))
            body += b"\x04" + struct.pack("<HBB", v.year, v.month, v.day)
        else:
            types += bytes((FT.VAR_STRING, 0))
            body += lenenc_str(v)
    head = b"\x17" + struct.pack("<IBI", 1, 0, 1)
    if n == 0:
        return head, types
    return head + bytes(bitmap) + (b"\x01" + types if bound else b"\x00") + body, types


values = st.lists(st.one_of(
    st.none(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=False), st.binary(max_size=300),
    st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-10**9, max_value=10**9),
    st.dates(min_value=datetime.date(1, 1, 1)), st.datetimes(min_value=datetime.datetime(1, 1, 1)),
), max_size=12)


@given(values)
def test_decode_matches_what_the_client_encoded(vals):
    payload, _ = encode(vals)
    got, _ = decode_params(payload, len(vals), None)
    assert got == vals


@given(values)
def test_types_from_an_earlier_execute_are_used_when_not_resent(vals):
    _, types = encode(vals)
    payload, _ = encode(vals, bound=False)
    assert decode_params(payload, len(vals), types)[0] == vals


def test_long_data_parameter_has_no_inline_value():
    payload, _ = encode([b"", 5])
    payload = payload[:16] + payload[17:]  # the protocol sends no value for a parameter given as long data
    assert decode_params(payload, 2, None, {0: b"streamed"})[0] == [b"streamed", 5]


@pytest.mark.parametrize("payload", [b"\x17" + b"\x00" * 9, b"\x17" + b"\x00" * 10 + b"\x01\x08", b"\x17"])
def test_truncated_blocks_raise_param_error(payload):
    with pytest.raises(ParamError):
        decode_params(payload, 1, None)


def test_missing_types_raise_param_error():
    payload, _ = encode([1], bound=False)
    with pytest.raises(ParamError):
        decode_params(payload, 1, None)
