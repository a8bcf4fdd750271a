"""The suite's own layout: helpers live in modules made for them (``tests/support/``), shared
fixtures in ``conftest.py``; no module imports from ``conftest`` or from a ``test_*`` module,
so that running one test file never depends on how another is written."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def forbidden_imports(source: str) -> list[str]:
    """The imports in ``source`` that name ``conftest`` or a ``test_*`` module, as written."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            # "from . import test_server" names the module among the imported names.
            modules = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        parts = {part for module in modules for part in module.split(".")}
        if "conftest" in parts or any(part.startswith("test_") for part in parts):
            found.append(ast.unparse(node))
    return found


def test_no_module_imports_from_conftest_or_from_a_test_module() -> None:
    offenders = {
        str(path.relative_to(TESTS)): found
        for path in sorted(TESTS.rglob("*.py"))
        if (found := forbidden_imports(path.read_text()))
    }
    assert offenders == {}, (
        f"expected helpers imported from tests/support/ (fixtures come from conftest.py "
        f"without an import), got: {offenders}"
    )


def test_every_way_of_writing_such_an_import_is_found() -> None:
    written = [
        "from .conftest import Recorder",
        "from . import conftest",
        "from .test_server import Server",
        "from . import rawws, test_server",
        "from ..test_redis import until",
        "from tests.test_server import Server",
        "import tests.conftest",
        "import test_hub",
    ]
    assert [forbidden_imports(line) for line in written] == [[line] for line in written]
    allowed = "from .support.servers import Server\nfrom . import rawws\nimport pytest\nfrom .models import Base"
    assert forbidden_imports(allowed) == []
