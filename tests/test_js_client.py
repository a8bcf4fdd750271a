"""The browser client as an npm package (``clients/js/``): its version is the Python package's,
its one source is what the router serves and what the wheel carries, its Node unit tests pass,
and ``npm pack`` gives a tarball that installs and imports. Node, npm and TypeScript
(``npm ci`` in ``clients/js/``, as scripts/test.sh does) are needed: without them these tests
skip, and fail under ``CI=true``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import sqla_notify
from sqla_notify import Hub
from sqla_notify.fastapi import notify_router

from .support.services import require_service

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "clients" / "js"
FILES = ("sqla-notify.js", "sqla-notify.d.ts")


def tool(name: str) -> str:
    """The path of a command-line tool, or a skip (a failure under CI=true)."""
    path = shutil.which(name)
    if path is None:
        require_service(name, f"{name} is not on PATH (scripts/test.sh installs it)")
        raise AssertionError("unreachable")
    return path


def run(*args: str, cwd: Path, timeout: float = 120) -> str:
    """Run a command and return its output; on failure, fail with that output."""
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_npm_package_has_the_python_packages_version() -> None:
    package = json.loads((PACKAGE / "package.json").read_text())
    lock = json.loads((PACKAGE / "package-lock.json").read_text())
    assert (package["version"], lock["version"], lock["packages"][""]["version"]) == (sqla_notify.__version__,) * 3, (
        f"expected clients/js/package.json and package-lock.json at version {sqla_notify.__version__} "
        f"(sqla_notify.__version__), got {package['version']} and {lock['version']}: edit package.json, "
        "then run `npm install --package-lock-only` in clients/js"
    )


def test_the_package_exports_the_client_and_its_types() -> None:
    package = json.loads((PACKAGE / "package.json").read_text())
    assert package["type"] == "module"
    assert package["exports"]["."] == {"types": "./sqla-notify.d.ts", "default": "./sqla-notify.js"}
    assert set(FILES) <= set(package["files"])


def test_the_router_serves_the_packages_own_files() -> None:
    app = FastAPI()
    app.include_router(notify_router(Hub(), collections={"forums"}), prefix="/notify")
    with TestClient(app) as client:
        for name in FILES:
            response = client.get(f"/notify/{name}")
            assert response.status_code == 200 and response.content == (PACKAGE / name).read_bytes(), name


def test_a_wheel_carries_the_client_where_its_router_serves_it_from(tmp_path: Path) -> None:
    try:
        from hatchling.builders.wheel import WheelBuilder
    except ImportError:
        require_service("hatchling", "not installed (it is in the dev extra)")
        raise
    [wheel] = list(WheelBuilder(str(ROOT)).build(directory=str(tmp_path / "dist"), versions=["standard"]))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        for name in FILES:
            assert archive.read(f"sqla_notify/static/{name}") == (PACKAGE / name).read_bytes(), name
        archive.extractall(site)
    # Imported from the unpacked wheel (not this checkout), the router finds the files there.
    folder = subprocess.run(
        [sys.executable, "-c", "import sqla_notify.fastapi as f; print(f.STATIC)"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(folder) == site / "sqla_notify" / "static"


def test_the_sdist_keeps_the_client_so_that_its_wheel_can_carry_it(tmp_path: Path) -> None:
    try:
        from hatchling.builders.sdist import SdistBuilder
    except ImportError:
        require_service("hatchling", "not installed (it is in the dev extra)")
        raise
    [sdist] = list(SdistBuilder(str(ROOT)).build(directory=str(tmp_path), versions=["standard"]))
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {f"clients/js/{name}" for name in FILES} <= names
    assert not [name for name in names if "node_modules" in name]


def test_the_node_unit_tests_pass() -> None:
    node = tool("node")
    tests = sorted(str(p.relative_to(PACKAGE)) for p in (PACKAGE / "test").glob("*.test.js"))
    assert tests, "expected clients/js/test/*.test.js"
    output = run(node, "--test", *tests, cwd=PACKAGE)
    assert "# fail 0" in output and "# pass 0" not in output, output


def test_npm_pack_gives_a_tarball_that_installs_imports_and_type_checks(tmp_path: Path) -> None:
    npm, node = tool("npm"), tool("node")
    tarball = run(npm, "pack", "--silent", "--pack-destination", str(tmp_path), cwd=PACKAGE).strip().splitlines()[-1]
    app = tmp_path / "app"
    app.mkdir()
    (app / "package.json").write_text('{"name": "app", "private": true, "type": "module"}')
    run(npm, "install", "--no-audit", "--no-fund", "--offline", str(tmp_path / tarball), cwd=app)
    installed = sorted(p.name for p in (app / "node_modules" / "sqla-notify").iterdir())
    assert installed == ["README.md", "package.json", "sqla-notify.d.ts", "sqla-notify.js"]
    script = (
        'import { connect, ALL } from "sqla-notify";'
        "class WS { constructor(url) { console.log(url); } close() {} }"
        'const c = connect("ws://localhost/notify/ws", { WebSocket: WS });'
        'c.subscribe("posts", { where: { forum_id: 7 } }, () => {});'
        "setTimeout(() => { console.log(ALL, c.state); c.close(); }, 10);"
    )
    out = run(node, "--input-type=module", "-e", script, cwd=app).splitlines()
    assert out == ['ws://localhost/notify/ws?collections=%5B%7B%22collection%22%3A%22posts%22%2C%22where'
                   '%22%3A%7B%22forum_id%22%3A%5B7%5D%7D%7D%5D', "* connecting"], out
    # A TypeScript app that resolves packages as bundlers do (Angular, Vite) finds the types.
    tsc = PACKAGE / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.exists():
        require_service("TypeScript", "run `npm ci` in clients/js")
    (app / "main.ts").write_text(
        'import { connect, type Notification } from "sqla-notify";\n'
        'const client = connect<{ posts: { data: { id: number }; old: { forum_id?: number } } }>("/notify/ws");\n'
        'client.subscribe("posts", { where: { forum_id: 7 } }, (n: Notification<{ id: number }, { forum_id?: number }, "posts">) => n.data?.id);\n'
    )
    options = ["--strict", "--noEmit", "--module", "esnext", "--moduleResolution", "bundler", "--lib", "es2022,dom"]
    run(node, str(tsc), *options, "main.ts", cwd=app)
