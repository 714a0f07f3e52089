#!/usr/bin/env bash
# ddm in one command: set up, start two MariaDB data nodes (./.sandbox) and ddm-server in front of them with two
# logical databases - `sbtest`, passed through to node n0, and `sbshard`, sysbench's tables sharded over both nodes
# (examples/rules/sbshard-2x2.yaml) - show where a few statements go (`ddm route`: node, physical database and
# table) and run them, then sysbench oltp_read_write through ddm on both databases for a few seconds.
#
#   bash scripts/demo.sh          # (re)start everything and run the benchmark
#   bash scripts/demo.sh stop     # stop ddm-server and the sandbox
#
# Environment: DDM_DEMO_PORT (first data node port, default 3310; ddm listens on it minus 3 = 3307),
# DDM_DEMO_TIME (sysbench seconds per database, default 10), DDM_DEMO_THREADS (default 8),
# DDM_VENV (the virtualenv, default ./.venv, as for scripts/setup.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SB=$ROOT/.sandbox
PORT=${DDM_DEMO_PORT:-3310}
LISTEN=$((PORT - 3))
TIME=${DDM_DEMO_TIME:-10}
THREADS=${DDM_DEMO_THREADS:-8}
PIDFILE=$SB/ddm-server.pid
VENV=${DDM_VENV:-$ROOT/.venv}
RULES=examples/rules/sbshard-2x2.yaml
T0=$(date +%s)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

stop_all() {
    if [ -f "$PIDFILE" ]; then
        pid=$(cat "$PIDFILE")
        # Only signal it if that pid is still our ddm-server (pids get reused).
        if grep -qs ddm-server "/proc/$pid/cmdline"; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$PIDFILE"
    fi
    if [ -x "$VENV/bin/ddm" ]; then
        "$VENV/bin/ddm" sandbox down --dir "$SB" >/dev/null
    elif [ -f "$SB/sandbox.json" ]; then
        echo "cannot stop the sandbox in $SB: no $VENV/bin/ddm (set DDM_VENV to the virtualenv used)" >&2
        return 1
    fi
}

if [ "${1:-}" = stop ]; then
    stop_all
    echo "ddm-server and the sandbox in $SB are stopped"
    exit 0
fi

say "setup"
bash scripts/setup.sh </dev/null

say "starting 2 MariaDB data nodes in $SB"
stop_all  # a previous demo run: start clean
"$VENV/bin/ddm" sandbox up --dir "$SB" --nodes 2 --port "$PORT" --listen-port "$LISTEN" --rules "$RULES"

say "starting ddm-server on 127.0.0.1:$LISTEN"
nohup "$VENV/bin/ddm-server" --config "$SB/ddm.yaml" >"$SB/ddm-server.log" 2>&1 </dev/null &
echo $! >"$PIDFILE"
for i in $(seq 1 150); do
    if ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        echo "ddm-server exited during start; $SB/ddm-server.log:" >&2
        tail -n 30 "$SB/ddm-server.log" >&2
        exit 1
    fi
    if mariadb -h127.0.0.1 -P"$LISTEN" -uddm -pddm -N -e 'SELECT 1' sbtest >/dev/null 2>&1; then
        break
    fi
    if [ "$i" -eq 150 ]; then
        echo "ddm-server did not accept connections within 15 s; $SB/ddm-server.log:" >&2
        tail -n 30 "$SB/ddm-server.log" >&2
        exit 1
    fi
    sleep 0.1
done

ddm_sql() { mariadb -h127.0.0.1 -P"$LISTEN" -uddm -pddm "$@"; }
node_sql() {  # node_sql NODE_INDEX SQL: straight to a data node, bypassing ddm
    mariadb -h127.0.0.1 -P"$((PORT + $1))" -uddm_node -pddm_node -t -e "$2"
}

say "two logical databases behind one ddm (SHOW DATABASES through ddm)"
ddm_sql -t -e 'SHOW DATABASES'
echo "  sbtest   pass-through: every statement goes unchanged to database sbtest on node n0"
echo "  sbshard  sharded ($RULES): sbtest1..sbtest4 split by id over node n0 (database sbshard_0)"
echo "           and node n1 (sbshard_1), 2 physical tables each: data source = id % 2, table = id / 2 % 2"

# The default user `ddm` is mysql_native_password, which sysbench's libmariadb handles with many threads connecting
# at once (the caching_sha2_password user is `ddm_sha2`: libmariadb can race on loading that plugin).
SB_ARGS=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$LISTEN" --mysql-user=ddm --mysql-password=ddm
    --tables=4 --table-size=10000)

say "sysbench prepare through ddm: 4 tables x 10000 rows in sbtest (pass-through) and in sbshard (sharded)"
sysbench oltp_read_write "${SB_ARGS[@]}" --mysql-db=sbtest prepare >"$SB/sysbench-prepare-sbtest.log"
# --auto_inc=off: sysbench writes ids 1..10000 itself (with AUTO_INCREMENT, ddm's key generator would choose them)
sysbench oltp_read_write "${SB_ARGS[@]}" --mysql-db=sbshard --auto_inc=off prepare \
    >"$SB/sysbench-prepare-sbshard.log"

say "where statements go: ddm route (a preview from the config, nothing runs), then the statement through ddm"
STMTS=(
    "SELECT id, k FROM sbtest1 WHERE id = 7"
    "SELECT id, k FROM sbtest1 WHERE id IN (1, 2, 3, 4) ORDER BY id"
    "SELECT COUNT(*), SUM(k) FROM sbtest1"
    "UPDATE sbtest2 SET k = k + 1 WHERE id = 5"
    "INSERT INTO sbtest3 (id, k, c, pad) VALUES (10001, 1, 'demo', 'demo'), (10002, 2, 'demo', 'demo')"
)
for stmt in "${STMTS[@]}"; do
    echo
    "$VENV/bin/ddm" route --config "$SB/ddm.yaml" --database sbshard "$stmt"
    # -vv: "Query OK, N rows affected" for the writes; the echo of the statement is filtered out
    ddm_sql -t -vv -e "$stmt" sbshard | grep -vxF -e "$stmt" -e '--------------' -e 'Bye' -e '' | sed 's/^/  | /'
done
echo
"$VENV/bin/ddm" route --config "$SB/ddm.yaml" --database sbtest "SELECT id, k FROM sbtest1 WHERE id = 7"
echo
echo "CREATE DATABASE through ddm (logical databases come from the config file):"
ddm_sql -e "CREATE DATABASE newdb" 2>&1 | grep '^ERROR' | sed 's/^/  | /' || true

say "sbtest1's 4 physical tables, read on the data nodes directly (ddm counted 10000 rows above)"
for n in 0 1; do
    echo "node n$n:"
    node_sql "$n" "SELECT 'sbshard_$n.sbtest1_0' AS physical_table, COUNT(*) AS row_count, MIN(id), MAX(id)
                   FROM sbshard_$n.sbtest1_0 UNION ALL
                   SELECT 'sbshard_$n.sbtest1_1', COUNT(*), MIN(id), MAX(id) FROM sbshard_$n.sbtest1_1"
done

for db in sbtest sbshard; do
    say "sysbench oltp_read_write through ddm on $db: $THREADS threads, $TIME s"
    sysbench oltp_read_write "${SB_ARGS[@]}" --mysql-db="$db" --threads="$THREADS" --time="$TIME" \
        --report-interval=0 run \
        | tee "$SB/sysbench-run-$db.log" | grep -E 'queries:|transactions:|ignored errors:|95th percentile:' \
        || { echo "sysbench failed; see $SB/sysbench-run-$db.log" >&2; exit 1; }
done

say "ddm is running (demo took $(($(date +%s) - T0)) s)"
cat <<EOF
  connect:   mariadb -h127.0.0.1 -P$LISTEN -uddm -pddm sbshard     (or sbtest)
  users:     ddm/ddm (mysql_native_password), ddm_sha2/ddm (caching_sha2_password)
  preview:   $VENV/bin/ddm route --config $SB/ddm.yaml -D sbshard "SELECT * FROM sbtest1 WHERE id = 42"
  config:    $SB/ddm.yaml        (data nodes: $VENV/bin/ddm sandbox status --dir $SB)
  logs:      $SB/ddm-server.log, $SB/sysbench-run-sbtest.log, $SB/sysbench-run-sbshard.log
  stop:      bash scripts/demo.sh stop
EOF
