"""Runs the README's Python examples, so that they cannot rot.

The blocks run in order, in one module, as a reader would paste them. A line ``# -> text``
states a line the block prints; each block's printed lines must match its ``# ->`` lines
(``{epoch}`` matches a hub's instance id). The first block, the FastAPI app, is then served
with TestClient and must deliver a commit to a WebSocket.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

README = Path(__file__).parent.parent / "README.md"
BLOCKS = re.compile(r"```python\n(.*?)```", re.S).findall(README.read_text())


def _module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    monkeypatch.chdir(tmp_path)
    # A real module: SQLAlchemy resolves Mapped[...] annotations through sys.modules.
    module = types.ModuleType("readme_examples")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module.__dict__


def _pattern(line: str) -> str:
    return re.escape(line).replace(re.escape("{epoch}"), "[0-9a-f]+")


def test_examples_print_what_they_say(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(BLOCKS) >= 8
    namespace = _module(monkeypatch, tmp_path)
    for number, code in enumerate(BLOCKS, 1):
        expected = [line.split("# -> ", 1)[1] for line in code.splitlines() if "# -> " in line]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"README.md block {number}", "exec"), namespace)
        printed = out.getvalue().splitlines()
        assert len(printed) == len(expected), f"README.md block {number}: printed {printed}"
        for got, want in zip(printed, expected):
            assert re.fullmatch(_pattern(want), got), f"README.md block {number}: {got!r} != {want!r}"


def test_first_example_serves_notifications(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    namespace = _module(monkeypatch, tmp_path)
    exec(compile(BLOCKS[0], "README.md block 1", "exec"), namespace)
    with TestClient(namespace["app"]) as client, client.websocket_connect("/notify/ws?collections=forums") as ws:
        assert json.loads(ws.receive_text())["type"] == "welcome"
        assert client.post("/forums", params={"name": "general"}).json() == {"id": 1}
        message = json.loads(ws.receive_text())
        assert (message["collection"], message["action"], message["data"]) == ("forums", "insert", {"id": 1})
