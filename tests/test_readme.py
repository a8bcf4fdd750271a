"""Runs the Python examples of the README and of the docs pages, so that they cannot rot.

Each file's blocks run in order, in one module, as a reader would paste them. A line
``# -> text`` states a line the block prints; each block's printed lines must match its
``# ->`` lines (``{epoch}`` matches a hub's instance id, ``{connection}`` a connection's
id). The README's first block, the FastAPI app, is then served with TestClient and must
deliver a commit to a WebSocket.
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
    return (
        re.escape(line)
        .replace(re.escape("{epoch}"), "[0-9a-f]+")
        .replace(re.escape("{connection}"), "[A-Za-z0-9_-]{16}")
    )


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


def test_readme_is_a_landing_page_that_links_to_existing_docs_pages() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250, "README.md: at most 250 lines; reference material goes to docs/"
    links = re.findall(r"\]\((docs/[^)#]+)", text)
    assert links, "README.md links to no docs page"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README.md links to docs pages that do not exist: {missing}"


def test_the_extra_the_readme_installs_for_the_example_includes_a_server() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    match = re.search(r'pip install -e "\./sqla_notify\[(\w+)\]"\s+# what the first example needs', README.read_text())
    assert match, "README.md's Install section names no extra for the first example"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def requirements(extra: str) -> list[str]:
        found: list[str] = []
        for requirement in extras[extra]:
            inner = re.fullmatch(r"sqla_notify\[([\w,]+)\]", requirement)
            found += [r for name in inner.group(1).split(",") for r in requirements(name)] if inner else [requirement]
        return found

    assert any(r.startswith("uvicorn[standard]") for r in requirements(match.group(1))), (
        f"the {match.group(1)!r} extra must install uvicorn[standard] (WebSocket support) to run the "
        f"README's example; it holds {requirements(match.group(1))}"
    )
