"""Runs the README's Python examples, in order, in one namespace, checking their output.

A line ``# -> text`` after a statement states a line the block prints; each block's printed
lines must equal its ``# ->`` lines.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def test_readme_examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = BLOCK.findall(README.read_text())
    assert len(blocks) >= 5
    # A real module: SQLAlchemy resolves Mapped[...] annotations through sys.modules.
    module = types.ModuleType("readme_examples")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace: dict[str, Any] = module.__dict__
    for number, code in enumerate(blocks, 1):
        expected = [line.split("# -> ", 1)[1] for line in code.splitlines() if "# -> " in line]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"README.md block {number}", "exec"), namespace)
        assert out.getvalue().splitlines() == expected, f"README.md block {number}"
