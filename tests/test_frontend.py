"""Pure helpers of ddm.frontend (local statements, pinning): which statements are session SETs, which need logical
metadata names, which pin their connection."""

from __future__ import annotations

import pytest

from ddm.frontend import pinning
from ddm.frontend.local import SET_STATEMENT, metadata_statement, sets_global
from ddm.wire import backend


@pytest.mark.parametrize("sql,is_global", [
    (b"SET GLOBAL max_connections = 10", True),
    (b"set global max_connections=10", True),
    (b"SET @@global.max_connections = 10", True),
    (b"SET @@session.sql_mode = '', @@GLOBAL.x = 1", True),
    (b"SET @a = 'GLOBAL'", False),  # inside a string literal
    (b"SET @global = 1", False),  # a user variable
    (b"SET global_x = 1", False),
    (b"SET SESSION sql_mode = ''", False),
])
def test_set_global(sql: bytes, is_global: bool) -> None:
    assert sets_global(sql) is is_global


@pytest.mark.parametrize("sql,match", [
    (b"SET STATEMENT max_statement_time=1 FOR SELECT 1", True),
    (b"  set statement sql_mode='' for insert into t values (1)", True),
    (b"SET @statement = 1", False),
    (b"SET SESSION sql_mode = 'STATEMENT'", False),
])
def test_set_statement(sql: bytes, match: bool) -> None:
    assert bool(SET_STATEMENT.match(sql)) is match


@pytest.mark.parametrize("kw,sql,wanted", [
    (b"SHOW", b"SHOW TABLES", True),
    (b"SHOW", b"SHOW FULL TABLES FROM app", True),
    (b"SHOW", b"SHOW CREATE TABLE t", True),
    (b"SHOW", b"SHOW INDEX FROM t", True),
    (b"SHOW", b"SHOW TABLE STATUS LIKE 't%'", True),
    (b"SHOW", b"SHOW WARNINGS", False),  # must stay on the direct path (the last statement's connection)
    (b"SHOW", b"SHOW VARIABLES LIKE 'sql_mode'", False),
    (b"SHOW", b"SHOW FULL PROCESSLIST", False),
    (b"DESCRIBE", b"DESCRIBE t", True),
    (b"SELECT", b"SELECT * FROM information_schema.TABLES", True),
    (b"SELECT", b"SELECT DATABASE(), 1", True),
    (b"SELECT", b"SELECT c FROM sbtest1 WHERE id = 1", False),
])
def test_metadata_statement(kw: bytes, sql: bytes, wanted: bool) -> None:
    assert metadata_statement(kw, sql) is wanted


def test_sets_global_only_for_global_targets():
    from ddm.frontend.local import sets_global

    assert sets_global(b"SET GLOBAL max_connections = 10")
    assert sets_global(b"set @@global.x = 1")
    assert sets_global(b"SET @a = 1, GLOBAL b = 2")
    assert not sets_global(b"SET @x = @@global.max_connections")  # reads a global: session state
    assert not sets_global(b"SET @a = concat(1, @@global.x), @b = 2")
    assert not sets_global(b"SET SESSION sql_mode = @@GLOBAL.sql_mode")


class _Noted:
    """What ClientConnection._note_sticky reads and writes."""

    def __init__(self) -> None:
        self.sticky: set[str] = set()
        self.ddl_ran = False


@pytest.mark.parametrize("sql, sticky", [
    (b"SELECT GET_LOCK('a', 0)", {"userlock"}),
    (b"select get_lock('a', 0)", {"userlock"}),
    (b"DO Get_Lock('a', 1)", {"userlock"}),
    (b"SELECT gEt_LoCk('a', 1)", {"userlock"}),
    (b"SELECT IS_FREE_LOCK('a')", set()),  # reads, takes nothing
    (b"SELECT RELEASE_LOCK('a')", set()),
    (b"CREATE TEMPORARY TABLE t (a INT)", {"temporary"}),
    (b"LOCK TABLES t WRITE", {"lock"}),
    (b"SELECT my_lock_column FROM t", set()),  # a hit of the bytes search only: the regex says no
])
def test_note_sticky(sql: bytes, sticky: set[str]) -> None:
    state = _Noted()
    kw = sql.split()[0].upper()
    if kw in pinning.NOTE_WORDS or pinning.LOCK_HINT(sql) is not None:  # as _com_query decides
        pinning.PinningMixin._note_sticky(state, kw, sql)
    assert state.sticky == sticky


def test_release_all_locks_unpins_and_ddl_moves_the_schema_epoch() -> None:
    state = _Noted()
    pinning.PinningMixin._note_sticky(state, b"SELECT", b"SELECT GET_LOCK('a', 0)")
    pinning.PinningMixin._note_sticky(state, b"SELECT", b"SELECT RELEASE_LOCK('a')")
    assert state.sticky == {"userlock"}  # other locks may still be held
    pinning.PinningMixin._note_sticky(state, b"SELECT", b"SELECT RELEASE_ALL_LOCKS()")
    assert state.sticky == set()
    before = backend.schema_epoch
    pinning.PinningMixin._note_sticky(state, b"ALTER", b"ALTER TABLE t ADD c INT")
    assert backend.schema_epoch == before + 1 and state.ddl_ran
    state.ddl_ran = False
    pinning.PinningMixin._note_sticky(state, b"CREATE", b"CREATE TEMPORARY TABLE tmp (a INT)")
    pinning.PinningMixin._note_sticky(state, b"DROP", b"DROP TEMPORARY TABLE tmp")
    assert backend.schema_epoch == before + 1 and not state.ddl_ran and state.sticky == {"temporary"}
