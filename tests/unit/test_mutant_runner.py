"""The mutant runner (``make mutants``): every patch well-formed, and verdicts
that never count a broken mutant as killed."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("mutant_runner", ROOT / "tests/mutants/run.py")
assert _spec is not None and _spec.loader is not None
run = importlib.util.module_from_spec(_spec)
sys.modules["mutant_runner"] = run
_spec.loader.exec_module(run)

PATCHES = sorted((ROOT / "tests" / "mutants").glob("*.patch"))


@pytest.mark.parametrize("path", PATCHES, ids=lambda p: p.stem)
def test_every_mutant_is_well_formed_and_names_tests_that_exist(path):
    m = run.load(path)
    assert m.promise and m.diff.startswith("diff --git ")
    targets, args = [], list(m.tests)
    while args:
        arg = args.pop(0)
        if arg in ("-k", "-m", "-o", "-p"):
            args.pop(0)  # its value
        elif not arg.startswith("-"):
            targets.append(arg.split("::")[0])
    assert targets, f"{path.name}: tests: names no test file"
    for t in targets:
        assert (ROOT / t).exists(), f"{path.name}: no such test file or folder {t}"
    if "-k" in m.tests:  # one -k: pytest keeps only the last
        assert m.tests.count("-k") == 1, f"{path.name}: -k given twice"


def test_header_problems_name_the_patch(tmp_path):
    bad = tmp_path / "typo.patch"
    bad.write_text("promise: x\ntets: tests/unit\ndiff --git a/x b/x\n")
    with pytest.raises(run.MutantError, match=r"typo\.patch:2: expected 'promise:'"):
        run.load(bad)
    missing = tmp_path / "nodiff.patch"
    missing.write_text("promise: x\ntests: tests/unit\n")
    with pytest.raises(run.MutantError, match="nodiff.patch: no 'diff --git' line"):
        run.load(missing)
    extended = tmp_path / "ok.patch"
    extended.write_text("# why\npromise: p\ntests: tests/unit -k 'a or b'\ntimeout: 30\n\n"
                        "diff --git a/x b/x\n")  # fmt: skip
    m = run.load(extended)
    assert (m.tests, m.timeout) == (("tests/unit", "-k", "a or b"), 30.0)
    assert shlex.join(m.tests) == "tests/unit -k 'a or b'"


@pytest.mark.parametrize(
    ("code", "verdict"),
    [(1, "killed"), (None, "killed (timeout)"), (0, "SURVIVED"), (5, "ERROR"), (2, "ERROR"),
     (4, "ERROR")],
)  # fmt: skip
def test_only_failing_tests_kill_a_mutant(code, verdict):
    assert run.judge(code, "1 failed in 0.1s")[0] == verdict


def test_a_patch_that_no_longer_applies_is_an_error_naming_it(tmp_path):
    copy = tmp_path / "copy"
    (copy / "maild").mkdir(parents=True)
    (copy / "maild" / "x.py").write_text("a = 1\n")
    path = tmp_path / "stale.patch"
    path.write_text(
        "promise: p\ntests: tests/unit\ndiff --git a/maild/x.py b/maild/x.py\n"
        "--- a/maild/x.py\n+++ b/maild/x.py\n@@ -1 +1 @@\n-a = 2\n+a = 3\n"
    )
    with pytest.raises(run.MutantError, match="stale.patch no longer applies"):
        run.apply(run.load(path), copy, check_only=True)
