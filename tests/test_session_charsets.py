"""ddm.wire.session.set_names_for with the node's collation table (CharsetTable)."""

import pytest

from ddm.wire.session import GLOBAL_NAMES, CharsetRefused, CharsetTable, set_names_for

ROWS = [(b"8", b"latin1", b"latin1_swedish_ci"), (b"48", b"latin1", b"latin1_general_ci"),
        (b"51", b"cp1251", b"cp1251_general_ci"), (b"35", b"ucs2", b"ucs2_general_ci"), (b"63", b"binary", b"binary"),
        (b"45", b"utf8mb4", b"utf8mb4_general_ci"), (b"60", b"utf32", b"utf32_general_ci")]


def test_node_table_names_every_collation_it_knows() -> None:
    t = CharsetTable.from_rows(ROWS, (b"utf8mb4", b"utf8mb4_general_ci", b"utf8mb4"))
    assert set_names_for(48, t) == b"SET NAMES latin1 COLLATE latin1_general_ci"
    assert set_names_for(51, t) == b"SET NAMES cp1251 COLLATE cp1251_general_ci"
    assert set_names_for(63, t) == b"SET NAMES binary"
    assert set_names_for(45, t) is None
    assert set_names_for(255, t) is None  # unknown to the node: its defaults, which ddm's connections have


def test_client_charsets_mariadb_refuses() -> None:
    t = CharsetTable.from_rows(ROWS, None)
    for cs in (35, 60):
        with pytest.raises(CharsetRefused, match="character_set_client"):
            set_names_for(cs, t)


def test_unknown_id_with_other_node_defaults_copies_the_globals() -> None:
    t = CharsetTable.from_rows(ROWS, (b"latin1", b"latin1_swedish_ci", b"latin1"))
    assert set_names_for(999, t) == GLOBAL_NAMES


def test_without_a_node_table_the_static_one() -> None:
    assert set_names_for(8) == b"SET NAMES latin1 COLLATE latin1_swedish_ci"
    assert set_names_for(255) is None and set_names_for(999) is None


def test_session_state_ok_packets_are_mariadbs_bytes() -> None:
    # captured from MariaDB 10.11 with CLIENT_SESSION_TRACK
    from ddm.wire.session import names_tracked, ok_with_state, track_schema, track_variables
    assert ok_with_state(2, names_tracked(b"latin1")) == (
        b"\x00\x00\x00\x02@\x00\x00\x00_\x00 \x18character_set_connection\x06latin1\x00\x1c\x14character_set_client"
        b"\x06latin1\x00\x1d\x15character_set_results\x06latin1")
    assert ok_with_state(2, track_schema(b"mysql")) == b"\x00\x00\x00\x02@\x00\x00\x00\x08\x01\x06\x05mysql"
    assert ok_with_state(0, track_variables([(b"autocommit", b"OFF")])) == (
        b"\x00\x00\x00\x00@\x00\x00\x00\x11\x00\x0f\nautocommit\x03OFF")
    assert b"utf8mb3" in names_tracked(b"UTF8")
