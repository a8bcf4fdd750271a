#!/usr/bin/env bash
# The whole check, as CI runs it: mypy --strict, then the test suite against SQLAlchemy 2.1
# (.venv) and again against SQLAlchemy 2.0 (.venv-sa20), then the delivery tests on
# Python >= 3.12 if one is installed (.venv-py312). Extra arguments go to pytest.
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

# The documentation site (mkdocs.yml, docs/), built with --strict: a broken link, a page
# missing from the nav or an API reference to a name that no longer exists fails. A few
# seconds; into site/, which git ignores.
venv_for .venv -e ".[docs]"
echo "== mkdocs build --strict"
NO_MKDOCS_2_WARNING=1 .venv/bin/python -m mkdocs build --strict --quiet

for env in .venv .venv-sa20; do
  echo "== pytest, $($env/bin/python -c 'import sqlalchemy; print("SQLAlchemy", sqlalchemy.__version__)')"
  # pytest exits 5 when it collected no tests: set -e makes that a failure too.
  "$env/bin/python" -m pytest "$@"
done

# On Python >= 3.12 the WebSocket writer starts eagerly (sends inside the hub's dispatch):
# run the delivery tests there too when such a Python is at hand (PYTHON312 names it).
py312=${PYTHON312:-}
if [ -z "$py312" ]; then  # pyenv's shims exist for versions that are not active: try each
  for candidate in python3.13 python3.12 /root/.pyenv/versions/3.1[23]*/bin/python; do
    if "$candidate" -c 'import sys; assert sys.version_info >= (3, 12)' >/dev/null 2>&1; then
      py312=$candidate
      break
    fi
  done
fi
if [ -n "$py312" ]; then
  PYTHON=$py312 venv_for .venv-py312 -e ".[dev]"
  echo "== pytest, delivery tests on $(.venv-py312/bin/python -V)"
  .venv-py312/bin/python -m pytest "$@" tests/test_hub.py tests/test_fastapi.py tests/test_server.py \
    tests/test_security.py tests/test_publication.py tests/test_redis_faults.py \
    tests/test_multiprocess.py tests/test_multiprocess_counts.py tests/test_browser.py
else
  echo "== no Python >= 3.12 found (set PYTHON312): the eager WebSocket writer is not tested"
fi
