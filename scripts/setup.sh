#!/usr/bin/env bash
# Prepare a machine and this checkout for ddm: system packages (apt), .venv with ddm installed editable plus the
# test tools, and the Cython extensions compiled in place (src/ddm_core/*.so).
#
# Idempotent and quick on a second run: apt is only touched when something is missing, pip only when
# pyproject.toml/setup.py changed, the compiler only when a .pyx/.pxd is newer than its .so.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=${DDM_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# ---------------------------------------------------------------------------------------------- system packages
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
have_cmd() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

missing=()
have_cmd "$PY" || missing+=(python3 python3-dev python3-venv)
# Debian splits venv/ensurepip and the C headers out of python3; a python built elsewhere (pyenv) has both.
if have_cmd "$PY"; then
    if ! "$PY" -c 'import ensurepip, venv' 2>/dev/null \
        || { [ "$(command -v "$PY")" = /usr/bin/python3 ] && ! have_pkg python3-venv; }; then
        missing+=(python3-venv)
    fi
    "$PY" - <<'EOF' 2>/dev/null || missing+=(python3-dev)
import os, sysconfig, sys
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
EOF
fi
{ have_cmd gcc && have_cmd make; } || missing+=(build-essential)
have_cmd mariadbd || missing+=(mariadb-server)
have_cmd mariadb || missing+=(mariadb-client)
have_cmd sysbench || missing+=(sysbench)
have_cmd systemd-analyze || missing+=(systemd)  # the unit-file test runs `systemd-analyze verify`
# mysqlclient (a test dependency, the driver suite's second driver) is built from source against these
have_pkg libmariadb-dev || missing+=(libmariadb-dev)
have_cmd pkg-config || missing+=(pkg-config)
# JDBC: MariaDB Connector/J and a JDK to compile the probe that runs through ddm and directly (test_jdbc.py)
have_pkg libmariadb-java || missing+=(libmariadb-java)
have_cmd javac || missing+=(default-jdk-headless)

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo)
    else
        echo "missing system packages: ${missing[*]}" >&2
        echo "run as root:  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    log "installing ${missing[*]}"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# ---------------------------------------------------------------------------------------------- virtualenv
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PY" -m venv "$VENV"
fi
VPY=$VENV/bin/python

stamp=$VENV/.ddm-setup-stamp
want=$(cat pyproject.toml setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$VPY" -c 'import ddm, pytest, pymysql, MySQLdb' 2>/dev/null; then
    log "installing ddm (editable) and test dependencies into $VENV"
    "$VPY" -m pip install -q --upgrade pip
    # Build tools in the venv too: extensions are recompiled in place below when a .pyx changes.
    "$VPY" -m pip install -q 'setuptools>=68' wheel 'Cython>=3.0.10'
    "$VPY" -m pip install -q -e '.[test]'
    echo "$want" >"$stamp"
fi

# ---------------------------------------------------------------------------------------------- extensions
# The editable install leaves the import path pointing at src/; make sure every extension is compiled there and
# current (another engineer's .pyx edit must not leave a stale .so behind).
stale=0
for pyx in src/ddm_core/*.pyx; do
    [ -e "$pyx" ] || continue
    mod=${pyx%.pyx}
    so=$(ls "$mod".*.so 2>/dev/null | head -n1 || true)
    pxd=$mod.pxd
    if [ -z "$so" ] || [ "$pyx" -nt "$so" ] || { [ -e "$pxd" ] && [ "$pxd" -nt "$so" ]; }; then
        stale=1
    fi
done
if [ $stale -eq 1 ]; then
    log "compiling Cython extensions"
    "$VPY" setup.py -q build_ext --inplace -j "$(nproc 2>/dev/null || echo 2)"
fi

"$VPY" - <<'EOF'
import glob, importlib, os
mods = sorted(os.path.basename(p)[:-4] for p in glob.glob("src/ddm_core/*.pyx"))
for m in mods:
    importlib.import_module("ddm_core." + m)
import ddm
print(f"[setup] ready: ddm {ddm.__version__}, extensions: {', '.join(mods) or 'none'}")
EOF
