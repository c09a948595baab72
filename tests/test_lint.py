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


def test_no_sleep_then_assert():
    """tests/lint_waits.py: wait for events, never sleep and then assert."""
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "lint_waits.py")], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_sleep_rule_catches_a_sleep_then_an_assertion(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import time\n\ndef test_x(n):\n    n.send()\n    time.sleep(0.3)\n"
        "    count = n.count()\n    assert count == 1\n\n"
        "def test_paced(n):\n    while n.more():\n        n.send()\n        time.sleep(0.1)\n"
        "    assert n.done()\n"
    )
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "lint_waits.py"), str(sample)],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stdout.count("sleep, then assert") == 1 and ":5:" in proc.stdout
