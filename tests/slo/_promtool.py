"""promtool helpers. The tests fail, never skip, when promtool is missing: `make test` installs it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

INSTALL_HINT = "promtool not found: install Debian's prometheus package (bash scripts/install-system-deps.sh)"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(INSTALL_HINT)
    return path


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=60)


def check_rules(path: Path) -> str:
    """`promtool check rules` (lint included); fails the test with promtool's output if it does not pass."""
    result = run("check", "rules", path)
    if result.returncode != 0:
        pytest.fail(f"promtool check rules {path} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout
