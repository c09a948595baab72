"""A run that skipped tests for want of a service fails when ``CI`` is set,
whether the tests ran in one process or in several (pytest-xdist, as `make
test` runs them): a green CI run means the whole suite ran."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.ports import reserved_port

ROOT = Path(__file__).resolve().parents[1]
# A small test that needs PostgreSQL.
NODE = (
    "tests/integration/test_bounces_and_loops.py"
    "::test_every_outgoing_mail_has_a_verp_return_path[postgresql]"
)


@pytest.mark.parametrize("jobs", ["0", "2"], ids=["one-process", "xdist"])
def test_a_test_skipped_for_want_of_a_service_fails_a_ci_run(jobs):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILD_TEST_", "PYTEST_"))}
    with reserved_port() as port:  # nothing listens there: PostgreSQL is "missing"
        env.update(CI="1", MAILD_TEST_PG_URL=f"postgresql+psycopg://maild:x@127.0.0.1:{port}/x")
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", jobs, NODE],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert "1 skipped" in out, out[-2000:]
    assert "1 tests SKIPPED: services missing" in out, out[-2000:]
    assert "CI is set: this run FAILS" in out
    assert proc.returncode == 1, out[-2000:]
