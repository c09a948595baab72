"""The mutant runner (``make mutants``): every patch well-formed, and verdicts
that never count a broken mutant as killed."""

from __future__ import annotations

import importlib.util
import shlex
import sys
import time
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
    targets = run.test_files(m)
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


def _mutant(tmp_path, name, mutated, tests):
    path = tmp_path / f"{name}.patch"
    path.write_text(f"promise: p\ntests: {tests}\ndiff --git a/{mutated} b/{mutated}\n")
    return run.load(path)


def test_a_budgeted_run_takes_the_mutants_recent_changes_touch_first_then_moves_on(tmp_path):
    ms = [
        _mutant(tmp_path, "a", "maild/a.py", "tests/unit/test_a.py"),
        _mutant(tmp_path, "b", "maild/b.py", "tests/integration -k b"),
        _mutant(tmp_path, "c", "maild/c.py", "tests/unit/test_c.py::test_one"),
        _mutant(tmp_path, "d", "maild/d.py", "tests/unit/test_d.py"),
        _mutant(tmp_path, "e", "maild/e.py", "tests/unit/test_e.py"),
    ]
    names = lambda order: [m.name for m in order]  # noqa: E731
    # A mutated file, a test under a named folder, a named test file.
    changed = {"maild/d.py", "tests/integration/test_b.py", "tests/unit/test_c.py", "README.md"}
    assert names(run.budget_order(ms, changed, 0)) == ["b", "c", "d", "a", "e"]
    # The others start at a place that moves with the commit, wrapping around.
    assert names(run.budget_order(ms, changed, 1)) == ["b", "c", "d", "e", "a"]
    assert names(run.budget_order(ms, set(), 7)) == ["c", "d", "e", "a", "b"]
    # Each turn runs every mutant once.
    for turn in range(6):
        assert sorted(names(run.budget_order(ms, changed, turn))) == list("abcde")


def test_a_run_out_of_budget_names_the_mutants_it_did_not_run(capsys):
    two = [p.stem for p in PATCHES[:2]]
    assert run.main(["--budget", "0.000001", "-j", "1", *two]) == 0
    out = capsys.readouterr().out
    assert (
        f"2 NOT RUN (or cut short): the 0 s budget was spent (`make mutants` runs them all): {', '.join(two)}"
        in out
    )
    assert "0 of 0 killed, 2 not run" in out


def test_a_copy_keeps_compiled_bytecode_except_for_the_files_the_patch_changes(tmp_path):
    root = tmp_path / "root"
    (root / "pkg" / "__pycache__").mkdir(parents=True)
    for name in ("kept", "mutated"):
        (root / "pkg" / f"{name}.py").write_text(f"{name} = 1\n")
        (root / "pkg" / "__pycache__" / f"{name}.cpython-311.pyc").write_bytes(b"compiled")
    copy = run.make_copy(root, ["pkg/kept.py", "pkg/mutated.py"], tmp_path, "m", {"pkg/mutated.py"})
    assert sorted(p.name for p in (copy / "pkg" / "__pycache__").iterdir()) == [
        "kept.cpython-311.pyc"
    ]
    assert (copy / "pkg" / "mutated.py").read_text() == "mutated = 1\n"


def test_a_mutant_cut_short_at_the_budgets_end_is_not_finished_never_killed(tmp_path):
    probe = (
        "diff --git a/tests/mutants/_probe.txt b/tests/mutants/_probe.txt\n"
        "new file mode 100644\n--- /dev/null\n+++ b/tests/mutants/_probe.txt\n"
        "@@ -0,0 +1 @@\n+x\n"
    )
    m = run.Mutant(name="probe", path=tmp_path / "probe.patch", promise="p",
                   tests=("tests/integration/test_lifecycle.py",), diff=probe)  # fmt: skip
    files = run.checkout_files(run.ROOT)
    o = run.run_one(m, files, tmp_path, False, stop_at=time.monotonic())  # its tests get 1 s
    assert (o.result, o.ok) == ("not finished", False)


def test_a_budget_that_is_not_a_number_is_a_usage_error_naming_it(monkeypatch, capsys):
    monkeypatch.setenv("MAILD_MUTANT_BUDGET", "20m")
    with pytest.raises(SystemExit) as exit_:
        run.main(["--check"])
    assert exit_.value.code == 2
    assert "MAILD_MUTANT_BUDGET: not a number: '20m'" in capsys.readouterr().err
