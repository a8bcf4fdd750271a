#!/usr/bin/env bash
# Installs sqla_notify into .venv and runs the example on its embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
venv_for .venv -e .
exec .venv/bin/python examples/quickstart.py "$@"
