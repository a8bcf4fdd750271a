"""What every benchmark records about the code it measured, next to the machine and versions."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).parent.parent


def git_state() -> dict[str, object]:
    """The commit measured, and the package's files that differed from it (work in progress).

    Call it before the run starts: it is what the benchmark's server processes import.
    """
    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    return {"commit": git("rev-parse", "--short", "HEAD"),
            "uncommitted_package_files": git("status", "--porcelain", "--", "sqla_notify").splitlines()}
