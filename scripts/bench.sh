#!/usr/bin/env bash
# Every benchmark in one go (benchmarks/run_all.py), in .venv with the bench extra: the
# contenders (python-socketio, broadcaster) and matplotlib for the plots. PostgreSQL and
# Redis are used when reachable. Extra arguments go to run_all.py, e.g. --quick.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
venv_for .venv -e ".[bench]" "sqlalchemy>=2.1,<2.2"
exec .venv/bin/python benchmarks/run_all.py "$@"
