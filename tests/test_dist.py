"""The Python distribution: what the sdist and the wheel hold, their metadata, and that
``twine check`` passes, from archives built with hatchling (about two seconds, no network:
hatchling is in the ``dev`` extra and builds in this environment)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def _need(module: str) -> None:
    """Skip unless ``module`` can be imported; fail instead under CI=true."""
    try:
        __import__(module)
    except ImportError:
        message = f"{module} is not installed (it is in the dev extra: pip install -e '.[dev]')"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The sdist and the wheel, built from this checkout into a temporary directory."""
    _need("hatchling")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-d", str(out)],
        cwd=ROOT, check=True, capture_output=True, timeout=60,
    )
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    yield sdist, wheel


def _sdist_names(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as tar:
        # Every member sits under "sqla_notify-<version>/": drop that prefix.
        return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as zf:
        return set(zf.namelist())


def test_the_sdist_holds_the_source_and_the_licence_but_no_benchmark_results(built: tuple[Path, Path]) -> None:
    names = _sdist_names(built[0])
    expected = {
        "LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "PKG-INFO", "mkdocs.yml",
        "sqla_notify/__init__.py", "sqla_notify/py.typed", "clients/js/sqla-notify.js", "clients/js/package.json",
        "tests/test_dist.py", "docs/index.md", "examples/quickstart.py", "scripts/test.sh",
        "benchmarks/bench_capture.py",
    }
    assert expected <= names, sorted(expected - names)
    unwanted = sorted(
        n for n in names
        if n.startswith(("benchmarks/results/", ".venv", "site/", "dist/", "build/"))
        or "node_modules/" in n or "__pycache__" in n or n.endswith((".db", ".pyc"))
    )
    assert unwanted == [], f"expected no results, environments or build output, got {unwanted}"


def test_the_wheel_holds_only_the_package_with_its_typing_marker_and_static_files(built: tuple[Path, Path]) -> None:
    names = _wheel_names(built[1])
    dist_info = {n for n in names if n.split("/", 1)[0].endswith(".dist-info")}
    outside = sorted(n for n in names - dist_info if not n.startswith("sqla_notify/"))
    assert outside == [], f"expected only sqla_notify/ and its .dist-info, got {outside}"
    package = names - dist_info
    assert {
        "sqla_notify/__init__.py", "sqla_notify/py.typed",
        "sqla_notify/static/sqla-notify.js", "sqla_notify/static/sqla-notify.d.ts",
    } <= package
    # Every module of the checkout's package is in it, and nothing that is not source.
    on_disk = {
        p.relative_to(ROOT).as_posix() for p in (ROOT / "sqla_notify").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert on_disk <= package, sorted(on_disk - package)
    assert not [n for n in package if n.endswith((".pyc", ".db"))]
    assert {n.split("/", 1)[1] for n in dist_info} >= {"METADATA", "WHEEL", "RECORD", "licenses/LICENSE"}


def test_the_metadata_names_the_licence_the_project_urls_and_the_tested_pythons(built: tuple[Path, Path]) -> None:
    with zipfile.ZipFile(built[1]) as zf:
        (metadata_name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(zf.read(metadata_name).decode())
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL") or [])
    assert sorted(urls) == ["Changelog", "Documentation", "Homepage", "Issues"]
    assert all(u.startswith("https://github.com/sqla-notify/sqla_notify") for u in urls.values()), urls
    classified = sorted((
        c.rsplit(" :: ", 1)[1] for c in metadata.get_all("Classifier") or []
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    ), key=_version)
    assert classified == _tested_pythons()
    assert metadata["Requires-Python"] == f">={_tested_pythons()[0]}"


def _tested_pythons() -> list[str]:
    """The Python versions scripts/test.sh runs the tests on (``for version in ...``)."""
    match = re.search(r"^for version in ((?:3\.\d+ ?)+); do$", (ROOT / "scripts/test.sh").read_text(), re.M)
    assert match, "expected scripts/test.sh to loop over the supported Python versions"
    return sorted(match[1].split(), key=_version)


def _version(text: str) -> tuple[int, ...]:
    return tuple(map(int, text.split(".")))


def test_twine_check_passes(built: tuple[Path, Path]) -> None:
    _need("twine")
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, built)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_licence_is_mit_for_the_projects_developers() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 sqla_notify developers\n")
