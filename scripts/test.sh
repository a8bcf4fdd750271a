#!/usr/bin/env bash
# The whole check, as CI runs it: mypy --strict, then the test suite against SQLAlchemy 2.1
# (.venv) and again, but for the tests between processes, against SQLAlchemy 2.0
# (.venv-sa20), then the core tests on each other
# supported Python, 3.10 to 3.13 (.venv-py310, ...), with the delivery tests on the first
# >= 3.12. Extra arguments go to pytest.
#
# PostgreSQL: SQLA_NOTIFY_PG_URL (default postgresql+psycopg://127.0.0.1/test). Its tests
# skip when it is unreachable, and fail instead under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh

# .venv also gets the bench extra: tests/test_benchmarks.py runs two scenarios small, so that a
# change that breaks the benchmarks fails here.
venv_for .venv -e ".[dev,bench]" "sqlalchemy>=2.1,<2.2"
venv_for .venv-sa20 -e ".[dev]" "sqlalchemy>=2.0.30,<2.1"

echo "== mypy --strict"
.venv/bin/python -m mypy

# The browser client, the npm package in clients/js/: its unit tests (Node's own runner,
# against fake WebSocket and EventSource classes) and tsc --strict over its declarations and a
# usage file. Node.js comes with this machine (20, from the nodesource repository); if it is
# missing, Debian's (apt). TypeScript comes from the npm registry (npm ci: package-lock.json).
# tests/test_js_client.py runs the unit tests again within pytest, with the npm pack check.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "== installing Node.js and npm (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm >/dev/null; }
fi
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "== Node.js $(node --version) is too old: the client's tests need 20 or newer" >&2
  exit 1
fi
(
  cd clients/js
  [ -x node_modules/.bin/tsc ] && npm ls --silent >/dev/null 2>&1 || npm ci --no-audit --no-fund --silent
  echo "== node --test (clients/js, Node $(node --version))"
  node --test --test-reporter=spec test/*.test.js
  echo "== tsc --strict (clients/js/types-test)"
  node_modules/.bin/tsc -p types-test
)

# The documentation site (mkdocs.yml, docs/), built with --strict: a broken link, a page
# missing from the nav or an API reference to a name that no longer exists fails. A few
# seconds; into site/, which git ignores.
venv_for .venv -e ".[docs]"
echo "== mkdocs build --strict"
NO_MKDOCS_2_WARNING=1 .venv/bin/python -m mkdocs build --strict --quiet

# The whole suite on SQLAlchemy 2.1; on 2.0, all but the tests of transports between
# processes (uvicorn subprocesses, restarts, the browser: minutes of the run), whose use of
# SQLAlchemy is what the rest covers. pytest exits 5 when it collected no tests: set -e makes
# that a failure too.
process_tests=(
  tests/test_server.py tests/test_redis_faults.py tests/test_multiprocess.py tests/test_multiprocess_counts.py
  tests/test_multiprocess_postgres.py tests/test_browser.py tests/test_rolling_restart.py
  tests/test_echo_processes.py tests/test_shutdown.py tests/test_limits.py
)
echo "== pytest, $(.venv/bin/python -c 'import sqlalchemy; print("SQLAlchemy", sqlalchemy.__version__)')"
.venv/bin/python -m pytest "$@"
echo "== pytest, $(.venv-sa20/bin/python -c 'import sqlalchemy; print("SQLAlchemy", sqlalchemy.__version__)'): all but the process tests"
.venv-sa20/bin/python -m pytest "$@" "${process_tests[@]/#/--ignore=}"

# == Every supported Python, 3.10 to 3.13. .venv's Python ran everything above; each other one
# runs the core tests in a venv of its own (.venv-py310, ...; on 3.10 pip picks SQLAlchemy 2.0
# and Starlette 1.7, the newest there). The WebSocket writer drives its coroutine by hand
# (sqla_notify/_web/eager.py: it sends inside the hub's dispatch), which leans on asyncio's
# task protocol: the newest Python also runs the delivery tests, against a real uvicorn.
# PYTHON310 .. PYTHON313 name an interpreter; one that is missing is a note, and a failure
# under CI=true.
core_tests=(
  tests/test_capture.py tests/test_capture_updates.py tests/test_notifier.py tests/test_sinks.py
  tests/test_hub.py tests/test_options.py tests/test_bulk.py tests/test_threads.py tests/test_async.py
  tests/test_public_api.py tests/test_notification.py tests/test_internals.py tests/test_fastapi.py
  tests/test_readme.py tests/test_quickstart.py tests/test_subscriber.py tests/test_replay.py
  tests/test_broker_contract.py tests/test_layout.py tests/test_sse.py tests/test_filtered.py
  tests/test_eager.py
)
delivery_tests=(tests/test_server.py tests/test_security.py tests/test_shutdown.py tests/test_limits.py)
find_python() {  # find_python 3.12: an interpreter of that version, or nothing
  local version=$1 var=PYTHON${1/./} candidate
  # pyenv's shims exist for versions that are not active: try each, and pyenv's own directories.
  for candidate in ${!var:-} "python$version" /root/.pyenv/versions/"$version".*/bin/python; do
    if "$candidate" -c "import sys; assert sys.version_info[:2] == (${version/./, })" >/dev/null 2>&1; then
      echo "$candidate"
      return
    fi
  done
}
default_version=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
missing=()
for version in 3.10 3.11 3.12 3.13; do
  [ "$version" = "$default_version" ] && continue
  python=$(find_python "$version")
  if [ -z "$python" ]; then
    missing+=("$version")
    continue
  fi
  dir=.venv-py${version/./}
  PYTHON=$python venv_for "$dir" -e ".[dev]"
  tests=("${core_tests[@]}") what="the core tests"
  if [ "$version" = 3.13 ]; then
    tests+=("${delivery_tests[@]}") what="the core and the delivery tests"
  fi
  echo "== pytest, $($dir/bin/python -V): $what"
  "$dir/bin/python" -m pytest "$@" "${tests[@]}"
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== Python ${missing[*]} not found (set PYTHON${missing[0]/./}=...): not tested" >&2
  if [ "${CI:-}" = true ]; then exit 1; fi
fi
