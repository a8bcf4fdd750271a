"""Runs the Python examples of the README and of the docs pages, so that they cannot rot.

Each file's blocks run in order, in one module, as a reader would paste them. A line
``# -> text`` states a line the block prints; each block's printed lines must match its
``# ->`` lines (``{epoch}`` matches a hub's instance id). The README's first block, the
FastAPI app, is then served with TestClient and must deliver a commit to a WebSocket.
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

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
# Every Markdown file with Python examples: the README, then the docs pages.
PAGES = [README, *(p for p in sorted((ROOT / "docs").rglob("*.md")) if _BLOCK.search(p.read_text()))]


def _blocks(page: Path) -> list[str]:
    return _BLOCK.findall(page.read_text())


def _module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    monkeypatch.chdir(tmp_path)
    # A real module: SQLAlchemy resolves Mapped[...] annotations through sys.modules.
    module = types.ModuleType("readme_examples")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module.__dict__


def _pattern(line: str) -> str:
    return re.escape(line).replace(re.escape("{epoch}"), "[0-9a-f]+")


def test_the_docs_pages_with_examples_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/capture.md", "docs/hub.md", "docs/security.md"} <= names, names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_examples_print_what_they_say(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = page.relative_to(ROOT).as_posix()
    namespace = _module(monkeypatch, tmp_path)
    for number, code in enumerate(_blocks(page), 1):
        expected = [line.split("# -> ", 1)[1] for line in code.splitlines() if "# -> " in line]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{name} block {number}", "exec"), namespace)
        printed = out.getvalue().splitlines()
        assert len(printed) == len(expected), f"{name} block {number}: printed {printed}"
        for got, want in zip(printed, expected):
            assert re.fullmatch(_pattern(want), got), f"{name} block {number}: {got!r} != {want!r}"


def test_first_example_serves_notifications(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    namespace = _module(monkeypatch, tmp_path)
    exec(compile(_blocks(README)[0], "README.md block 1", "exec"), namespace)
    with TestClient(namespace["app"]) as client, client.websocket_connect("/notify/ws?collections=forums") as ws:
        assert json.loads(ws.receive_text())["type"] == "welcome"
        assert client.post("/forums", params={"name": "general"}).json() == {"id": 1}
        message = json.loads(ws.receive_text())
        assert (message["collection"], message["action"], message["data"]) == ("forums", "insert", {"id": 1})
