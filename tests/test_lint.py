"""The code base stays ruff-clean (lint and format)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    return [str(exe)] if exe.exists() else [shutil.which("ruff") or "ruff"]


def test_ruff_check():
    proc = subprocess.run([*_ruff(), "check", "maild", "tests", "bench"], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format():
    proc = subprocess.run([*_ruff(), "format", "--check", "maild", "tests", "bench"], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
