#!/usr/bin/env bash
# Installs sqla_notify with the example's extras into .venv and serves examples/fastapi_app
# on http://127.0.0.1:8000 (SQLite file ./example.db; set DATABASE_URL for PostgreSQL).
# Extra arguments go to uvicorn, e.g. --port 8080.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
venv_for .venv -e ".[example]"
# Browsers always offer per-message deflate; for small JSON it doubles the send cost and
# adds memory per connection, so it is off. uvicorn reads a whole WebSocket message into
# memory before the app sees it, up to --ws-max-size (16 MiB by default): the protocol's
# client messages are tiny, so 64 KiB bounds that. See docs/hub.md, "Serving".
exec .venv/bin/python -m uvicorn examples.fastapi_app.app:app --ws-per-message-deflate false \
  --ws-max-size 65536 "$@"
