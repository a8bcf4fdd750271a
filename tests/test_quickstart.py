"""examples/quickstart.py runs the way its docstring says, and prints what it shows."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "examples" / "quickstart.py"


def test_quickstart_runs_as_its_docstring_says(tmp_path: Path) -> None:
    doc = ast.get_docstring(ast.parse(QUICKSTART.read_text())) or ""
    assert ".venv/bin/python examples/quickstart.py" in doc, doc
    # Run as a script, as the docstring does, on its default database (SQLite). PYTHONPATH:
    # this checkout's package, whichever one the interpreter has installed.
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, str(QUICKSTART)], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**env, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("-- insert a container with two forums\ncommitted 3 change(s):\n"), out
    assert "-- rename a forum, then roll back: nothing is published\n-- a bulk UPDATE" in out, out
    assert out.endswith("NotifierStats(batches=4, notifications=9, sink_errors=0)\n"), out
    assert (tmp_path / "quickstart.db").exists()
