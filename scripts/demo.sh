#!/usr/bin/env bash
# ddm in one command: set up, start two MariaDB data nodes (./.sandbox), start ddm-server in front of them, run
# sysbench oltp_read_write through ddm for a few seconds, print how to connect.
#
#   bash scripts/demo.sh          # (re)start everything and run the benchmark
#   bash scripts/demo.sh stop     # stop ddm-server and the sandbox
#
# Environment: DDM_DEMO_PORT (first data node port, default 3310; ddm listens on it minus 3 = 3307),
# DDM_DEMO_TIME (sysbench seconds, default 10), DDM_DEMO_THREADS (default 4).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
SB=$ROOT/.sandbox
PORT=${DDM_DEMO_PORT:-3310}
LISTEN=$((PORT - 3))
TIME=${DDM_DEMO_TIME:-10}
THREADS=${DDM_DEMO_THREADS:-4}
PIDFILE=$SB/ddm-server.pid

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
    if [ -x .venv/bin/ddm ]; then
        .venv/bin/ddm sandbox down --dir "$SB" >/dev/null
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
.venv/bin/ddm sandbox up --dir "$SB" --nodes 2 --port "$PORT" --listen-port "$LISTEN"

say "starting ddm-server on 127.0.0.1:$LISTEN"
nohup .venv/bin/ddm-server --config "$SB/ddm.yaml" >"$SB/ddm-server.log" 2>&1 </dev/null &
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

# sysbench uses the mysql_native_password user: libmariadb can fail to load its caching_sha2_password plugin when
# several sysbench threads connect at the same moment ("plugin ... is already loaded"), a client-side race.
SB_ARGS=(--db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$LISTEN" --mysql-user=ddm_native --mysql-password=ddm
    --mysql-db=sbtest --tables=4 --table-size=10000)

say "sysbench oltp_read_write through ddm: prepare 4 tables x 10000 rows"
sysbench oltp_read_write "${SB_ARGS[@]}" prepare >"$SB/sysbench-prepare.log"

say "sysbench oltp_read_write through ddm: $THREADS threads, $TIME s"
sysbench oltp_read_write "${SB_ARGS[@]}" --threads="$THREADS" --time="$TIME" --report-interval=0 run \
    | tee "$SB/sysbench-run.log" | grep -E 'queries:|transactions:|ignored errors:|95th percentile:' \
    || { echo "sysbench failed; see $SB/sysbench-run.log" >&2; exit 1; }

say "ddm is running"
cat <<EOF
  connect:   mariadb -h127.0.0.1 -P$LISTEN -uddm -pddm sbtest
  config:    $SB/ddm.yaml        (data nodes: .venv/bin/ddm sandbox status --dir .sandbox)
  logs:      $SB/ddm-server.log, $SB/sysbench-run.log
  stop:      bash scripts/demo.sh stop
EOF
