"""ddm.frontend.connid: CONNECTION_ID() calls become ddm's id, unaliased SELECT items keep their name."""

from ddm.frontend.connid import HINT, PLAIN, rewrite


def test_calls_become_the_id_and_items_keep_their_names() -> None:
    assert rewrite(b"SELECT CONNECTION_ID()+0", 77) == b"SELECT 77+0 AS `CONNECTION_ID()+0`"
    assert rewrite(b"SELECT DISTINCT connection_id() + 0 FROM t WHERE a = CONNECTION_ID()", 5) == (
        b"SELECT DISTINCT 5 + 0 AS `connection_id() + 0` FROM t WHERE a = 5")
    assert rewrite(b"SELECT CONCAT(`a``b`, CONNECTION_ID()), 1", 9) == (
        b"SELECT CONCAT(`a``b`, 9) AS `CONCAT(``a````b``, CONNECTION_ID())`, 1")


def test_aliases_and_other_statements_are_kept() -> None:
    assert rewrite(b"SELECT CONNECTION_ID() AS x, 1", 77) == b"SELECT 77 AS x, 1"
    assert rewrite(b"SELECT CONNECTION_ID() x", 77) == b"SELECT 77 x"
    assert rewrite(b"SELECT CONNECTION_ID()+a FROM t", 77) == b"SELECT 77+a AS `CONNECTION_ID()+a` FROM t"
    assert rewrite(b"INSERT INTO t VALUES (CONNECTION_ID())", 3) == b"INSERT INTO t VALUES (3)"
    assert rewrite(b"SET @x = CONNECTION_ID()", 3) == b"SET @x = 3"


def test_strings_and_comments_are_not_calls() -> None:
    assert rewrite(b"SELECT 'CONNECTION_ID()' /* CONNECTION_ID() */", 1) is None
    assert rewrite(b"SELECT connection_id_x()", 1) is None
    assert HINT(b"select Connection_Id()") is not None and HINT(b"select 1") is None
    assert PLAIN(b"SELECT CONNECTION_ID() AS id") and not PLAIN(b"SELECT CONNECTION_ID()+0")
