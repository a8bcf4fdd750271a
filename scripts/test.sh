#!/usr/bin/env bash
# The whole check, as CI runs it: mypy --strict, then the test suite against SQLAlchemy 2.1
# (.venv) and again against SQLAlchemy 2.0 (.venv-sa20). Extra arguments go to pytest.
#
# PostgreSQL: SQLA_NOTIFY_PG_URL (default postgresql+psycopg://127.0.0.1/test). Its tests
# skip when it is unreachable, and fail instead under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh

venv_for .venv -e ".[dev]" "sqlalchemy>=2.1,<2.2"
venv_for .venv-sa20 -e ".[dev]" "sqlalchemy>=2.0.30,<2.1"

echo "== mypy --strict"
.venv/bin/python -m mypy

for env in .venv .venv-sa20; do
  echo "== pytest, $($env/bin/python -c 'import sqlalchemy; print("SQLAlchemy", sqlalchemy.__version__)')"
  # pytest exits 5 when it collected no tests: set -e makes that a failure too.
  "$env/bin/python" -m pytest "$@"
done
