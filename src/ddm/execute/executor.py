"""Execution of statements on a sharded logical database: plan (cached) -> bind -> run units -> merge -> reply.

The frontend (`ClientConnection`) calls `fast_units` on every COM_QUERY of a sharded database: on a plan-cache hit that binds to
one statement for one data source, the frontend forwards it like a pass-through statement (no coroutine, response
bytes untouched). Everything else comes here as a coroutine: several units run in parallel over pooled
connections, and their buffered results are merged by `ddm_core.merge`. An error from any unit is the client's
error; nothing partial is ever reported as success.

Transactions: a connection that ends a statement inside a transaction stays with the client (one per data node)
until COMMIT/ROLLBACK. On a database with `transactions: xa` (the default) an explicit transaction's branches are XA
branches and COMMIT is ddm.execute.xa's two-phase commit; with `transactions: local` COMMIT/ROLLBACK go to every
such connection in turn, and a COMMIT that fails on one node after succeeding on another is reported as an error
naming the nodes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import struct
from typing import TYPE_CHECKING

from ddm.execute import keygen, lockwait, metadata, scatter, xa
from ddm.execute.columns import ColumnCache
from ddm.sharding.plan import (
    DatabasePlan,
    InsertPlan,
    NeedsColumns,
    Plan,
    PlanError,
    QueryPlan,
    UnsupportedPlan,
    database_ddl_refusal,
)
from ddm.sharding.plan_cache import PlanCache
from ddm.sharding.planner import plan as make_plan
from ddm.sharding.rewrite import apply_edits, keys_needed
from ddm.wire.backend import BackendConnection, BackendError, NodeUnavailable
from ddm.wire.constants import er as ER
from ddm.wire.params import decode_params as _decode_params
from ddm.wire.resultset import text_resultset
from ddm.wire.rowcodec import ColumnDef, text_rows_to_binary
from ddm.wire.session import synchronize
from ddm_core.lexer import Lexed, lex
from ddm_core.merge import Merger, MergeSpec
from ddm_core.packets import frame, ok_packet

if TYPE_CHECKING:
    from ddm.execute.client import ClientSession

log = logging.getLogger("ddm.execute.executor")

TXN_BEGIN = {b"BEGIN", b"START"}
TXN_END = {b"COMMIT", b"ROLLBACK"}
TXN_WORDS = frozenset(TXN_BEGIN | TXN_END)
_DDL = frozenset({"CREATE", "ALTER", "DROP", "RENAME"})


class ShardingContext:
    """Per-worker state of the sharding engine: the plan cache and the key generators."""

    def __init__(self, server) -> None:
        self.server = server
        self.plans = PlanCache(server.config.server.plan_cache_size)
        self.keygen = keygen.Generators(server, synchronize_db)
        self.columns = ColumnCache()
        self.column_plans = PlanCache(256)  # -> (table, its columns, plan): INSERTs without a column list
        self.xa = xa.Coordinator(server)

    async def plan_async(self, db: str, dbconf, lexed, generation: int) -> Plan:
        """The cached plan, else a new one (cached), reading a table's columns from its shards when an INSERT
        without a column list needs them: such a plan is kept with the columns it was built on and used while they
        are still the table's (ddm.execute.columns)."""
        found = self.plans.get(db, generation, lexed.digest)
        if found is not None:
            return found
        held = self.column_plans.get(db, generation, lexed.digest)
        for _attempt in range(4):
            known = self.columns.known(db, generation)
            if held is not None and held[0] in known:
                if known[held[0]] == held[1]:
                    return held[2]
                held = None  # the definition changed: plan again
            try:
                found = make_plan(lexed, dbconf, lexed.sql, known)
            except NeedsColumns as e:
                rule = next(r for n, r in dbconf.tables.items() if n.lower() == e.table)
                try:
                    await self.columns.fetch(db, generation, rule,
                                             lambda ds, sql: self.keygen.run_on(db, ds, sql))
                except PlanError as pe:
                    return UnsupportedPlan(pe.code, pe.message)
                continue
            if known.used is None:
                self.plans.put(db, generation, lexed.digest, found)
            else:
                self.column_plans.put(db, generation, lexed.digest, (known.used, known[known.used], found))
            return found
        return UnsupportedPlan(ER.NOT_SUPPORTED_YET, "INSERT without a column list: table definitions keep changing")

    def after_ddl(self, db: str, plan: Plan) -> None:
        """A DDL statement ran on a sharded table: forget its columns (plans built on them are checked against the
        columns read again)."""
        rule = getattr(plan, "rule", None)
        if rule is not None:
            self.columns.forget(db, rule.name.lower())

    def generator(self, db: str, plan: InsertPlan):
        return self.keygen.get(db, plan.rule)


async def synchronize_db(conn: BackendConnection, physical_db: bytes) -> None:
    if conn.signature:
        await conn.command(b"\x1f")
        conn.forget_statements()
        conn.signature = ()
        conn.db = None
    if conn.db != physical_db:
        await conn.command(b"\x02" + physical_db)
        conn.db = physical_db


def fast_units(client: ClientSession, sql: bytes, lexed: Lexed | None = None):
    """(route, lexed, bound) of a COM_QUERY on a sharded database. route = (node, physical database, packet) when
    the statement binds to one unit that can be forwarded as is (packet: that unit framed as a COM_QUERY), else
    None; bound: the bound plan when one was cached and bound, so the slow path does not bind the same query again.

    A plan with a point route (`key = literal` on one sharded table) binds in C without building the generic
    ExecutionUnits; everything else, and every value the point route is not sure about, binds generically.
    `lexed`: the statement's tokens when the caller has them already (ddm.protect.privileges lexed it)."""
    if lexed is None:
        lexed = lex(sql)
    if lexed.statement_count > 1 or lexed.first_keyword in TXN_WORDS:
        return None, lexed, None
    plan = client.server.sharding.plans.get(client.session.db, client.config.generation, lexed.digest)
    if type(plan) is not QueryPlan:
        return None, lexed, None
    free = not client.txn_conns and client.txn_begin is None  # inside a transaction run_query takes `bound`
    point = plan.point
    if point is not None and free:
        r = point.route_query(lexed)
        if r is not None:
            ds = client.session.dbconf.datasources[r[0]]
            return (ds.node, ds.database.encode(), r[1]), lexed, None
    try:
        eu = plan.bind(lexed)
    except PlanError:
        return None, lexed, None
    if not free or len(eu.units) != 1 or eu.merge is not None:
        return None, lexed, eu
    unit = eu.units[0]
    node, phys = location(client, unit.datasource)
    return (node, phys, frame(b"\x03" + unit.sql, 0)), lexed, eu


def fast_execute(client: ClientSession, stmt, payload: bytes) -> bool:
    """COM_STMT_EXECUTE of a sharded statement that lands on one shard whose connection is ready and already has
    the rewritten statement prepared: forward the client's packet (statement id swapped). False otherwise."""
    plan = stmt.plan
    if type(plan) is not QueryPlan or stmt.long_data or client.txn_conns or client.txn_begin is not None:
        return False
    lexed = stmt.lexed
    if lexed.first_keyword in TXN_WORDS:
        return False
    payload = without_cursor(payload)
    point = plan.point
    r = point.route_execute(lexed, payload, stmt.nparams, stmt.param_types) if point is not None else None
    if r is None:
        values, _ = _decode_params(payload, stmt.nparams, stmt.param_types)
        try:
            eu = plan.bind(lexed, values, None, None, inline=False)
        except (PlanError, ValueError):
            return False
        if len(eu.units) != 1 or eu.merge is not None:
            return False
        r = eu.units[0]
    node, phys = location(client, r[0])
    pipes = client.server.pipelines
    if (pipes.nodes and lexed.first_keyword == b"SELECT"
            and pipes.submit_execute(client, node, phys, stmt, payload, r[1])):
        stmt.last_payload = payload
        return True  # queued on a shared connection (ddm.execute.pipeline)
    conn = client.ready_conn(node, phys)
    if conn is None:
        return False
    bstmt = conn.cached_stmt(r[1])
    if bstmt is None:
        if conn is not client.conn:
            conn.pool.release(conn)
        return False
    stmt.last_payload = payload
    if bstmt not in stmt.held:
        stmt.hold(conn, bstmt)
    client.forward(conn, frame(client.execute_payload(stmt, bstmt, payload), 0))
    return True


# --- connections ------------------------------------------------------------------------------------------
def location(client: ClientSession, datasource: str) -> tuple[str, bytes]:
    ds = client.session.dbconf.datasources[datasource]
    return ds.node, ds.database.encode()


async def _conn_for_unit(client: ClientSession, node: str, phys: bytes) -> BackendConnection:
    if client.conn is not None:  # a connection the fast path pinned (transaction) joins the per-node set
        client.txn_conns[client.conn.node_name] = client.conn
        client.conn = None
    conn = client.txn_conns.get(node)
    if conn is None:
        conn = await client.pool_for(node).acquire()
        try:
            await synchronize(conn, client.session, phys)
            if client.txn_begin is not None:
                if client.txn_begin.startswith(b"XA START "):
                    await xa.Coordinator.start_branch(conn, client.txn_begin, node)
                else:
                    await conn.query(client.txn_begin)
                client.txn_conns[node] = conn
        except BaseException:
            client.give_back(conn, dirty=True)
            raise
        return conn
    await synchronize(conn, client.session, phys)
    return conn


def _settle_unit_conn(client: ClientSession, conn: BackendConnection) -> None:
    if conn.closed:
        client.txn_conns.pop(conn.node_name, None)
        return
    if conn.in_transaction or client.txn_begin is not None:
        client.txn_conns[conn.node_name] = conn
    elif client.txn_conns.get(conn.node_name) is conn:
        del client.txn_conns[conn.node_name]
        conn.pool.release(conn) if conn.pool else conn.close()
    elif conn.last_warnings or conn.last_error:
        client.keep_diagnostics(conn)  # for a SHOW WARNINGS next (of several shards: the last one's)
    else:
        conn.pool.release(conn) if conn.pool else conn.close()


async def _run_units(client: ClientSession, units, payload_of) -> list:
    """Run every unit; Results in unit order. Units of one data source travel as one multi-statement query (one
    round trip for all its physical tables); data sources run in parallel outside transactions."""
    groups: dict[str, list[int]] = {}
    for i, unit in enumerate(units):
        groups.setdefault(unit.datasource, []).append(i)
    results: list = [None] * len(units)

    async def one(datasource: str, idx: list[int]) -> None:
        node, phys = location(client, datasource)
        conn = await _conn_for_unit(client, node, phys)
        guarded = lockwait.spans_nodes(client, node)
        try:
            if len(idx) == 1:
                work = conn.command(payload_of(units[idx[0]]))
                packets = await (lockwait.guard(client, conn, work) if guarded else work)
                results[idx[0]] = conn.to_result(packets)
            else:
                # "\n;\n": a statement ending in a `--` or `#` comment cannot swallow the separator
                sql = b"\n;\n".join(units[i].sql for i in idx)
                work = conn.command(b"\x03" + sql)
                packets = await (lockwait.guard(client, conn, work) if guarded else work)
                for i, res in zip(idx, conn.split_results(packets), strict=True):
                    results[i] = res
        finally:
            _settle_unit_conn(client, conn)

    if len(groups) == 1:
        for ds, idx in groups.items():
            await one(ds, idx)
        return results
    in_txn = client.txn_begin is not None or client.txn_conns or client.conn is not None
    if in_txn:
        # one connection per node inside a transaction: the data sources of one node take turns on it, the
        # nodes run in parallel
        per_node: dict[str, list[tuple[str, list[int]]]] = {}
        for ds, idx in groups.items():
            per_node.setdefault(location(client, ds)[0], []).append((ds, idx))

        async def node_turns(turns: list[tuple[str, list[int]]]) -> None:
            for ds, idx in turns:
                await one(ds, idx)

        outcome = await asyncio.gather(*(node_turns(t) for t in per_node.values()), return_exceptions=True)
    else:
        outcome = await asyncio.gather(*(one(ds, idx) for ds, idx in groups.items()), return_exceptions=True)
    for item in outcome:
        if isinstance(item, BaseException):
            raise item
    return results


# --- replies ----------------------------------------------------------------------------------------------
def _send_ok(client: ClientSession, affected: int, insert_id: int, warnings: int = 0, info: bytes = b"") -> None:
    client.send_packet(ok_packet(affected, insert_id, client.status_flags(), warnings, info, client.session_track), 1)


def _reply(client: ClientSession, per_shard, eu, binary: bool) -> None:
    if not any(res.columns for res in per_shard):
        # writes / DDL: one OK for the client, affected rows added up
        # a broadcast write changed every copy of the same rows: the client changed them once
        counted = per_shard[:1] if eu.replicated else per_shard
        affected = sum(res.affected_rows for res in counted)
        warnings = sum(res.warnings for res in counted)
        insert_id = eu.generated_ids[0] if eu.generated_ids else next(
            (res.insert_id for res in per_shard if res.insert_id), 0)
        if insert_id:
            client.session.last_insert_id = insert_id  # SELECT LAST_INSERT_ID() (frontend._select_database)
        _send_ok(client, affected, insert_id, warnings)
        return
    columns = per_shard[0].columns
    if eu.merge is None:
        rows = [r for res in per_shard for r in res.rows]
        out_cols = columns
    else:
        desc = eu.merge.resolve(len(columns))
        spec = MergeSpec(order_by=desc.order_by, group_by=desc.group_by,
                         aggregates=tuple((c, f.lower(), a) for c, f, a in desc.aggregates),
                         distinct=desc.distinct, having=desc.having, limit=desc.limit, offset=desc.offset,
                         visible_columns=desc.visible_columns, binary=False,
                         shard_order=tuple((g, False) for g in desc.group_by) or None)
        merger = Merger(spec, columns, len(per_shard))
        for i, res in enumerate(per_shard):
            merger.feed(i, res.rows)
            merger.finish(i)
        rows = merger.take()
        out_cols = [c.to_payload() if isinstance(c, ColumnDef) else c
                    for c in merger.output_columns[:desc.visible_columns]]
    if binary:
        rows = text_rows_to_binary(rows, [ColumnDef.parse(c) for c in out_cols])
    client.transport.write(text_resultset(out_cols, rows, deprecate_eof=client.deprecate_eof,
                                          status=client.status_flags()))


# --- entry points -----------------------------------------------------------------------------------------
async def run_query(client: ClientSession, sql: bytes, lexed=None, bound=None) -> None:
    """A COM_QUERY on a sharded logical database (slow path). `bound`: this query's plan already bound by
    fast_units (a cached QueryPlan; statements that metadata or transaction control answer never have one)."""
    try:
        await _run_query(client, sql, lexed, bound)
    except lockwait.CrossNodeDeadlock as exc:
        await _deadlock_abort(client, exc)
    except BackendError as exc:
        await _after_error(client, exc.code)
        raise


async def _deadlock_abort(client: ClientSession, exc: lockwait.CrossNodeDeadlock) -> None:
    """The transaction lost a lock wait across nodes (ddm.execute.lockwait): roll it back everywhere, report a deadlock."""
    try:
        await _finish_transaction(client, b"ROLLBACK")
    except (BackendError, NodeUnavailable) as e:  # the nodes end the transaction when their connection goes
        log.info("rollback after a deadlock across nodes: %s", e)
    raise BackendError(ER.LOCK_DEADLOCK, ER.sqlstate(ER.LOCK_DEADLOCK),
                       f"Deadlock found when trying to get lock; try restarting transaction ({exc})".encode())


async def _run_query(client: ClientSession, sql: bytes, lexed=None, bound=None) -> None:
    if lexed is None:
        lexed = lex(sql)
    kw = lexed.first_keyword
    if await _transaction_control(client, sql, kw):
        return
    if await metadata.answer(client, lexed, sql, lambda s: run_query(client, s)):  # before planning: SHOW TABLES etc. must not get a cached plan
        return
    if lexed.statement_count > 1 and not is_compound(kw, sql):
        raise PlanError(ER.NOT_SUPPORTED_YET, "multi-statement queries on a sharded database are not supported")
    if bound is not None:
        await _run_and_reply(client, bound, False)
        return
    plan = await client.server.sharding.plan_async(client.session.db, client.session.dbconf, lexed,
                                                   client.config.generation)
    await _execute_plan(client, plan, lexed, None, binary=False)
    if type(plan) is QueryPlan and plan.statement in _DDL:
        client.server.sharding.after_ddl(client.session.db, plan)


# FOR UPDATE / FOR SHARE / LOCK IN SHARE MODE (a match inside a string literal only costs streaming)
_LOCKING_READ = re.compile(rb"\bFOR\s+(?:UPDATE|SHARE)\b|\bLOCK\s+IN\s+SHARE\s+MODE\b", re.I)
_COMPOUND = re.compile(rb"^\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:DEFINER\s*=\s*\S+\s+)?"
                       rb"(?:PROCEDURE|FUNCTION|TRIGGER|EVENT)\b", re.I)


def is_compound(kw: bytes, sql: bytes) -> bool:
    """Stored-program bodies hold `;` inside one statement."""
    return (kw == b"CREATE" and _COMPOUND.match(sql) is not None) or (kw == b"BEGIN" and b"ATOMIC" in sql.upper())


async def _transaction_control(client: ClientSession, sql: bytes, kw: bytes) -> bool:
    """BEGIN / START TRANSACTION / COMMIT / ROLLBACK on a sharded database (text or prepared): True if handled."""
    if kw in TXN_BEGIN and _is_begin(sql):
        await _finish_transaction(client, b"COMMIT")  # an implicit commit, as MySQL does on BEGIN
        client.txn_begin = (client.server.sharding.xa.begin_sql() if xa.session_xa(client) and xa.is_begin_plain(sql)
                            else sql)
        _send_ok(client, 0, 0)
        return True
    if kw == b"XA":
        raise xa.client_xa_refusal()
    if kw in TXN_END and _is_end(sql):
        await _finish_transaction(client, sql)
        _send_ok(client, 0, 0)
        return True
    return False


def _is_end(sql: bytes) -> bool:
    words = sql.upper().replace(b";", b" ").split()
    # ROLLBACK TO SAVEPOINT keeps the transaction open: not an end
    return bool(words) and words[0] in TXN_END and b"TO" not in words[1:3]


def _is_begin(sql: bytes) -> bool:
    words = sql.upper().split()
    return words[:1] == [b"BEGIN"] or words[:2] == [b"START", b"TRANSACTION"]


async def _finish_transaction(client: ClientSession, stmt: bytes) -> None:
    conns = dict(client.txn_conns)
    if client.conn is not None:
        conns[client.conn.node_name] = client.conn
    client.txn_conns.clear()
    client.conn = None
    client.txn_begin = None
    branches = {n: c for n, c in conns.items() if getattr(c, "xa_xid", None) is not None}
    if branches:  # an XA transaction (ddm.execute.xa); any other connection is ended as below
        commit = stmt.upper().replace(b";", b" ").split()[:1] == [b"COMMIT"]
        for n in branches:
            del conns[n]
        try:
            await client.server.sharding.xa.end(branches, commit)
        except BackendError:
            for c in conns.values():
                try:
                    await c.query(b"ROLLBACK")
                    c.pool.release(c) if c.pool else c.close()
                except (BackendError, NodeUnavailable):
                    client.give_back(c, dirty=True)
            raise
    failed = []
    first_error: Exception | None = None
    for node, conn in conns.items():
        try:
            await conn.query(stmt)
            conn.pool.release(conn) if conn.pool else conn.close()
        except (BackendError, NodeUnavailable) as exc:
            failed.append(node)
            first_error = first_error or exc
            client.give_back(conn, dirty=True)
    if first_error is not None:
        word = stmt.split()[0].decode(errors="replace").upper() if stmt.split() else "COMMIT"
        raise BackendError(ER.XAER_RMFAIL if len(conns) > 1 else getattr(first_error, "code", ER.UNKNOWN_ERROR),
                           b"XAE07" if len(conns) > 1 else getattr(first_error, "sqlstate", b"HY000"),
                           f"{word} failed on data node(s) {', '.join(failed)}: {first_error}".encode())


async def _execute_plan(client: ClientSession, plan: Plan, lexed, params, binary: bool, stmt=None) -> None:
    if type(plan) is UnsupportedPlan:
        raise plan.error()
    if type(plan) is DatabasePlan:  # the frontend refuses these before planning; never run on the nodes
        raise PlanError(ER.NOT_SUPPORTED_YET, database_ddl_refusal(lexed.sql) or "CREATE/DROP DATABASE")
    keys = None
    if type(plan) is InsertPlan:
        if plan.rule.key_generator is not None:  # explicit ids first: never generated afterwards
            await client.server.sharding.keygen.observe_insert(client.session.db, plan, lexed, params)
        need = keys_needed(plan, lexed, params)
        if need:
            keys = await client.server.sharding.generator(client.session.db, plan).next_ids(need)
    if binary and stmt is not None:
        eu = plan.bind(lexed, params, keys, None, inline=False)
        if len(eu.units) == 1 and eu.merge is None and not eu.generated_ids:
            await _execute_prepared_unit(client, eu.units[0], stmt)
            return
    await _run_and_reply(client, plan.bind(lexed, params, keys), binary)


async def _run_and_reply(client: ClientSession, eu, binary: bool) -> None:
    if await _stream_select(client, eu, binary):
        return
    units = scatter.union_units(eu) or eu.units  # one result set per data source where the statement allows
    results = await _run_units(client, units, lambda u: b"\x03" + u.sql)
    _reply(client, results, eu, binary)


async def _stream_select(client: ClientSession, eu, binary: bool) -> bool:
    """A multi-shard SELECT whose merge needs bounded state: streamed (ddm.execute.scatter). False: not streamable."""
    in_txn = client.txn_begin is not None or bool(client.txn_conns) or client.conn is not None
    if client.txn_begin is not None and _LOCKING_READ.search(eu.units[0].sql):
        # a locking read over several nodes in a transaction can wait on another's locks in a cycle no node sees:
        # the buffered path runs each node's part under ddm.execute.lockwait's watch
        return False
    planned = scatter.plan_sources(eu, lambda ds: location(client, ds), in_txn)
    if planned is None:
        return False
    sources, nshards = planned

    async def connect(src: scatter.Source) -> None:
        src.conn = await _conn_for_unit(client, src.node, src.phys)

    # (in a transaction every source is on its own node: plan_sources made sure, so each has its node's connection)
    outcome = await asyncio.gather(*(connect(s) for s in sources), return_exceptions=True)
    failed = next((x for x in outcome if isinstance(x, BaseException)), None)
    if failed is not None:
        for src in sources:
            if src.conn is not None:
                _settle_unit_conn(client, src.conn)
        raise failed
    await scatter.ScatterStream(client, eu, sources, nshards, binary, _settle_unit_conn).run()
    return True


async def _execute_prepared_unit(client: ClientSession, unit, stmt) -> None:
    """One shard, one statement: prepare the rewritten text there and forward the client's execute as is."""
    node, phys = location(client, unit.datasource)
    conn = await _conn_for_unit(client, node, phys)
    try:
        bstmt = await client.node_statement(conn, stmt, unit.sql)
    except BaseException:
        _settle_unit_conn(client, conn)
        raise
    work = client.execute_on(conn, stmt, bstmt, stmt.last_payload)
    try:
        await (lockwait.guard(client, conn, work) if lockwait.spans_nodes(client, node) else work)
    except lockwait.CrossNodeDeadlock:
        _settle_unit_conn(client, conn)
        raise
    if conn.last_error and await xa.branch_lost(client, conn):  # forwarded: the error code went to the client
        await _after_error(client, ER.LOCK_DEADLOCK)
        return
    if conn.closed and conn.forwarded_any:
        client.close()
        return
    if conn.closed:
        raise NodeUnavailable(node, "connection lost during a statement")
    _settle_unit_conn(client, conn)


async def prepare(client: ClientSession, sql: bytes):
    """COM_STMT_PREPARE on a sharded database: plan it, prepare a representative physical statement on one shard
    for the metadata (parameter and column definitions) the client needs."""
    lexed = lex(sql)
    if lexed.first_keyword == b"XA":
        raise xa.client_xa_refusal()
    plan = await client.server.sharding.plan_async(client.session.db, client.session.dbconf, lexed,
                                                   client.config.generation)
    if type(plan) is UnsupportedPlan:
        raise plan.error()
    if type(plan) is DatabasePlan:
        raise PlanError(ER.NOT_SUPPORTED_YET, database_ddl_refusal(sql) or "CREATE/DROP DATABASE")
    if type(plan) is QueryPlan and plan.mode == 0:
        datasource, text = plan.datasource, sql
    else:
        target = next(iter(plan.names))
        edits = [(lexed.start(r.first), lexed.end(r.last), x) for r, x in zip(plan.tables, plan.names[target], strict=True)]
        datasource, text = target[0], apply_edits(sql, edits) if edits else sql
    node, phys = location(client, datasource)
    conn = await _conn_for_unit(client, node, phys)
    try:
        prepared, _ = await conn.prepare(text, fresh=True)  # the node's answer, never a cached one
    finally:
        _settle_unit_conn(client, conn)
    return plan, lexed, prepared, node


def without_cursor(payload: bytes) -> bytes:
    """A COM_STMT_EXECUTE with its cursor request (flags & 7) dropped. On a sharded database the rows come back as
    an ordinary result set: a node's cursor (or a merged result) cannot be fetched by this client's later
    COM_STMT_FETCH. A server may answer a cursor request so: the client sees no SERVER_STATUS_CURSOR_EXISTS and reads
    the rows that follow, as it does for statements that cannot have a cursor."""
    if len(payload) > 5 and payload[5] & 0x07:
        return payload[:5] + bytes((payload[5] & ~0x07,)) + payload[6:]
    return payload


async def execute(client: ClientSession, stmt, payload: bytes) -> None:
    """COM_STMT_EXECUTE of a sharded statement (slow path)."""
    try:
        await _execute(client, stmt, payload)
    except lockwait.CrossNodeDeadlock as exc:
        await _deadlock_abort(client, exc)
    except BackendError as exc:
        await _after_error(client, exc.code)
        raise


async def _after_error(client: ClientSession, code: int) -> None:
    """A statement of an XA transaction failed: a deadlock (or any error after which the node rolled the branch
    back) has ended the transaction on that node, as MySQL ends it: end it on every node, so that the client's next
    BEGIN / COMMIT / ROLLBACK find no transaction, as they would on one server (not a half-rolled-back one)."""
    if code in (ER.LOCK_DEADLOCK, 1402, 1613, 1614) and client.txn_begin is not None \
            and client.txn_begin.startswith(b"XA START "):
        try:
            await _finish_transaction(client, b"ROLLBACK")
        except (BackendError, NodeUnavailable) as e:
            log.info("rollback after a deadlock in an XA transaction: %s", e)


async def _execute(client: ClientSession, stmt, payload: bytes) -> None:
    from ddm.wire.params import decode_params

    payload = without_cursor(payload)
    long_data: dict[int, bytes] = {}
    for chunk in stmt.long_data:
        pid = struct.unpack_from("<H", chunk, 5)[0]
        long_data[pid] = long_data.get(pid, b"") + chunk[7:]
    stmt.long_data = []  # used by this execute only, as on MariaDB (and not counted again by max_long_data_size)
    values, _blobs = decode_params(payload, stmt.nparams, stmt.param_types, long_data)
    if stmt.nparams and payload[10 + (stmt.nparams + 7) // 8]:
        stmt.param_types = payload[11 + (stmt.nparams + 7) // 8:11 + (stmt.nparams + 7) // 8 + 2 * stmt.nparams]
    stmt.last_payload = payload
    if await _transaction_control(client, stmt.sql, stmt.lexed.first_keyword):
        return
    await _execute_plan(client, stmt.plan, stmt.lexed, values, binary=True, stmt=stmt)

