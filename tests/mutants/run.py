"""Run the deliberate bugs in tests/mutants/ and require the tests to catch each.

Each ``tests/mutants/NAME.patch`` is a few header lines, then a unified diff
made by ``git diff`` (it applies with ``git apply`` at the repository root)::

    promise: <the promise this bug breaks, one line>
    tests: <arguments for pytest, run at the repository root>
    diff --git a/maild/... b/maild/...
    ...

``promise:`` and ``tests:`` are required. Optional header lines:
``timeout: SECONDS`` (the named tests' time limit, default 600; a mutant that
makes its tests hang past it counts as killed, and is reported so) and
``# comments``. Blank lines are allowed before the diff.

For each mutant the runner copies the checkout (what git tracks plus new files
not ignored: not ``.venv``, ``var/`` or caches) to a temporary directory,
applies the patch there, and runs its tests with this Python (the project's
venv) in the copy, ``PYTHONPATH`` pointing at the copy so every process the
tests start imports the mutated code, not the editable install. The tests must
FAIL: a mutant whose tests pass SURVIVED. A patch that no longer applies, a
``tests:`` line that selects no test, or tests that cannot even be collected
are errors, never kills. Prints a table; exits 1 if any mutant survived or
erred, 2 on a usage error.

    python tests/mutants/run.py [-j JOBS] [--budget SECONDS [--recent N]] [--check]
                                [--baseline] [--keep] [-v] [NAME ...]

``--check`` only checks that every patch is well-formed and applies (fast;
``make lint`` runs it). ``--baseline`` first runs all named tests on the
unchanged copy and requires them to pass (use it when writing a mutant).
``--budget`` (CI's) starts no mutant after SECONDS, cuts short one still
running a minute later, and names those not run or not finished (never
counted killed); the ones the last ``--recent`` commits touch go first.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MUTANTS = Path(__file__).resolve().parent
DEFAULT_TIMEOUT = 600.0
# With --budget: a mutant still running this long after the deadline is cut
# short and reported as not run (neither killed nor survived).
STOP_GRACE = 60.0
HEADER_KEYS = {"promise", "tests", "timeout"}
PYTEST = ["-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=-ra"]
# pytest's exit codes: 0 all passed, 1 some failed, 2 interrupted or collection
# errors, 3 internal error, 4 usage error, 5 no tests collected.
EXIT_FAILED = 1


class MutantError(Exception):
    """A mutant that cannot be run as written (names the patch)."""


@dataclass(frozen=True)
class Mutant:
    name: str
    path: Path
    promise: str
    tests: tuple[str, ...]
    diff: str
    timeout: float = DEFAULT_TIMEOUT


@dataclass
class Outcome:
    mutant: Mutant
    result: str  # "killed", "killed (timeout)", "SURVIVED", "ERROR"
    seconds: float
    detail: str = ""
    log: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result.startswith("killed")


def load(path: Path) -> Mutant:
    """Parse one patch file; every problem names the file."""
    text = path.read_text(encoding="utf-8")
    header: dict[str, str] = {}
    lines = text.splitlines(keepends=True)
    start = None
    for number, line in enumerate(lines, 1):
        if line.startswith("diff --git "):
            start = number - 1
            break
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, value = stripped.partition(":")
        key = key.strip().lower()
        if not sep or key not in HEADER_KEYS:
            raise MutantError(
                f"{path.name}:{number}: expected 'promise:', 'tests:', 'timeout:' or "
                f"'diff --git', got {stripped[:60]!r}"
            )
        if key in header:
            raise MutantError(f"{path.name}:{number}: '{key}:' given twice")
        header[key] = value.strip()
    if start is None:
        raise MutantError(f"{path.name}: no 'diff --git' line: not a patch made by git diff")
    for key in ("promise", "tests"):
        if not header.get(key):
            raise MutantError(f"{path.name}: the '{key}:' header line is missing or empty")
    try:
        tests = tuple(shlex.split(header["tests"]))
    except ValueError as exc:
        raise MutantError(f"{path.name}: tests: {exc}") from None
    timeout = DEFAULT_TIMEOUT
    if "timeout" in header:
        try:
            timeout = float(header["timeout"])
        except ValueError:
            raise MutantError(f"{path.name}: timeout: not a number of seconds") from None
    return Mutant(
        name=path.stem,
        path=path,
        promise=header["promise"],
        tests=tests,
        diff="".join(lines[start:]),
        timeout=timeout,
    )


def checkout_files(root: Path) -> list[str]:
    """What a fresh clone would hold, plus new files not ignored (work in progress)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        check=True,
        capture_output=True,
    ).stdout
    return [name for name in out.decode().split("\0") if name]


def patched_paths(diff: str) -> set[str]:
    """The files a patch changes (both sides of each ``diff --git`` line)."""
    paths: set[str] = set()
    for match in re.finditer(r"^diff --git a/(\S+) b/(\S+)$", diff, re.MULTILINE):
        paths.update(match.groups())
    return paths


def make_copy(
    root: Path, files: list[str], parent: Path, name: str, patched: Collection[str] = ()
) -> Path:
    """Copy the checkout, with the bytecode Python already compiled for it.

    ``copy2`` keeps each source's modification time, so a cached ``.pyc``
    (checked against the source's time and size) stays valid in the copy; the
    files the patch changes get none, and are compiled afresh.
    """
    dest = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent))
    for rel in files:
        src = root / rel
        if not src.is_file():  # deleted in the working tree, not yet committed
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
        if rel.endswith(".py") and rel not in patched:
            cache = src.parent / "__pycache__"
            for pyc in cache.glob(f"{src.stem}.*.pyc") if cache.is_dir() else ():
                (target.parent / "__pycache__").mkdir(exist_ok=True)
                shutil.copy2(pyc, target.parent / "__pycache__" / pyc.name)
    # A repository of its own: git apply never looks for an enclosing one
    # (where it would skip paths outside the current directory).
    subprocess.run(["git", "init", "-q", str(dest)], check=True)
    return dest


def apply(mutant: Mutant, copy: Path, check_only: bool = False) -> None:
    args = ["git", "apply", "--whitespace=nowarn"] + (["--check"] if check_only else [])
    proc = subprocess.run(args, cwd=copy, input=mutant.diff.encode(), capture_output=True)
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        raise MutantError(
            f"{mutant.path.name} no longer applies to this checkout (re-make it with git diff): "
            + "; ".join(reason[:4])
        )


def run_tests(copy: Path, tests: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
    """(pytest's exit code or None on timeout, its output)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(copy), env.get("PYTHONPATH", "")) if p)
    # Bytecode is written into the copy (gone with it) and pytest's rewritten
    # plugins into the venv: without it every process the tests start compiles
    # maild afresh, and every pytest rewrites Hypothesis's asserts (seconds).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.Popen(
        [sys.executable, *PYTEST, *tests],
        cwd=copy,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode(errors="replace")
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return None, out.decode(errors="replace")
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise


def summary_line(output: str) -> str:
    for line in reversed(output.strip().splitlines()):
        if re.search(r"\b(passed|failed|error|errors|skipped|no tests ran|deselected)\b", line):
            return line.strip("= ").strip()
    return (output.strip().splitlines() or [""])[-1][:200]


def judge(code: int | None, output: str) -> tuple[str, str]:
    last = summary_line(output)
    if code is None:
        return "killed (timeout)", f"the tests hung past their time limit; {last}"
    if code == EXIT_FAILED:
        return "killed", last
    if code == 0:
        return "SURVIVED", f"the named tests passed with the bug in place: {last}"
    if code == 5:
        return "ERROR", "the tests: line selects no test (pytest exit 5)"
    return "ERROR", f"the tests could not run (pytest exit {code}): {last}"


def recently_changed(root: Path, commits: int) -> set[str]:
    """Files changed by the last `commits` commits (empty outside a repository)."""
    proc = subprocess.run(
        ["git", "log", f"-{commits}", "--name-only", "--format="],
        cwd=root,
        capture_output=True,
        text=True,
    )
    return {line.strip() for line in proc.stdout.splitlines() if line.strip()}


def test_files(mutant: Mutant) -> set[str]:
    """The test files (or folders) a mutant's ``tests:`` line names."""
    files, args = set(), list(mutant.tests)
    while args:
        arg = args.pop(0)
        if arg in ("-k", "-m", "-o", "-p"):
            del args[:1]  # its value
        elif not arg.startswith("-"):
            files.add(arg.split("::")[0].rstrip("/"))
    return files


def touches(mutant: Mutant, changed: set[str]) -> bool:
    """Whether a change to `changed` may bear on this mutant: its patch file, a
    file it mutates, or a test file it names (or one under a folder it names)."""
    own = {str(mutant.path.relative_to(ROOT)) if mutant.path.is_relative_to(ROOT) else ""}
    own |= patched_paths(mutant.diff)
    tests = test_files(mutant)
    return bool(own & changed) or any(
        c == t or c.startswith(t + "/") for c in changed for t in tests
    )


def budget_order(mutants: list[Mutant], changed: set[str], turn: int) -> list[Mutant]:
    """The order for a run that may not finish them all: first the mutants the
    latest changes touch, then the others starting at `turn` (mod their number)
    and wrapping around, so that successive runs start at different places."""
    first = [m for m in mutants if touches(m, changed)]
    rest = [m for m in mutants if not touches(m, changed)]
    if rest:
        turn %= len(rest)
        rest = rest[turn:] + rest[:turn]
    return first + rest


def head_turn(root: Path) -> int:
    """A number that differs from commit to commit: the HEAD commit's hash."""
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return int(proc.stdout.strip()[:8] or "0", 16)


def run_one(
    mutant: Mutant, files: list[str], parent: Path, keep: bool, stop_at: float | None = None
) -> Outcome:
    """Run one mutant; with `stop_at` (a monotonic time) its tests are cut
    short then, and the outcome is "not finished", never a kill."""
    started = time.monotonic()
    copy = None
    try:
        copy = make_copy(ROOT, files, parent, mutant.name, patched_paths(mutant.diff))
        apply(mutant, copy)
        timeout, cut = mutant.timeout, False
        if stop_at is not None and stop_at - time.monotonic() < timeout:
            timeout, cut = max(stop_at - time.monotonic(), 1.0), True
        code, output = run_tests(copy, mutant.tests, timeout)
        if code is None and cut:
            return Outcome(mutant, "not finished", time.monotonic() - started)
        result, detail = judge(code, output)
        lines = output.strip().splitlines()
        if result.startswith("killed"):  # why: the failed test and its assertion
            tail = [x for x in lines if x.startswith(("E ", "FAILED", "ERROR"))][:12]
        else:
            tail = lines[-40:]
        if keep:
            detail += f" (copy kept in {copy})"
        return Outcome(mutant, result, time.monotonic() - started, detail, tail)
    except MutantError as exc:
        return Outcome(mutant, "ERROR", time.monotonic() - started, str(exc))
    finally:
        if copy is not None and not keep:
            shutil.rmtree(copy, ignore_errors=True)


def baseline(mutants: list[Mutant], files: list[str], parent: Path) -> list[str]:
    """Run each mutant's tests on the unchanged code: they must pass."""
    problems = []
    copy = make_copy(ROOT, files, parent, "baseline")
    try:
        for m in mutants:
            code, output = run_tests(copy, m.tests, m.timeout)
            if code != 0:
                problems.append(
                    f"{m.name}: its tests do not pass unmutated: {summary_line(output)}"
                )
            print(f"  baseline {m.name}: {'ok' if code == 0 else 'FAILS'}", flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return problems


def table(outcomes: list[Outcome]) -> str:
    width = max([len("mutant")] + [len(o.mutant.name) for o in outcomes])
    promise_width = 64
    rows = [f"{'mutant':<{width}}  {'promise':<{promise_width}}  {'result':<16}  seconds"]
    rows.append("-" * len(rows[0]))
    for o in outcomes:
        promise = o.mutant.promise
        if len(promise) > promise_width:
            promise = promise[: promise_width - 1] + "…"
        rows.append(
            f"{o.mutant.name:<{width}}  {promise:<{promise_width}}  {o.result:<16}  {o.seconds:7.1f}"
        )
    return "\n".join(rows)


def env_number(parser: argparse.ArgumentParser, name: str, kind: Callable[[str], float]) -> float:
    """A number from the environment, 0 if unset; a usage error naming it if not a number."""
    try:
        return kind(os.environ.get(name, "0") or "0")
    except ValueError:
        parser.error(f"{name}: not a number: {os.environ[name]!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="run only these mutants (file stems)")
    parser.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=int(env_number(parser, "MAILD_MUTANT_JOBS", int)) or min(2, os.cpu_count() or 1),
        help="mutants run at once (default: 2, or MAILD_MUTANT_JOBS)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=env_number(parser, "MAILD_MUTANT_BUDGET", float),
        metavar="SECONDS",
        help="start no mutant after SECONDS and cut short any still running a minute "
        "later (default: no limit, or MAILD_MUTANT_BUDGET); the mutants the last --recent "
        "commits touch run first, the others from a place that moves with the HEAD commit; "
        "those not run or not finished are named, never counted killed",
    )
    parser.add_argument(
        "--recent",
        type=int,
        default=20,
        metavar="N",
        help="with --budget: the commits whose changes put a mutant first (default 20)",
    )
    parser.add_argument("--check", action="store_true", help="only check that every patch applies")
    parser.add_argument("--baseline", action="store_true", help="first run the tests unmutated")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also say how each mutant was killed"
    )
    args = parser.parse_args(argv)

    paths = sorted(MUTANTS.glob("*.patch"))
    if args.names:
        wanted = {n.removesuffix(".patch") for n in args.names}
        unknown = wanted - {p.stem for p in paths}
        if unknown:
            print(f"mutants: no such mutant: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        paths = [p for p in paths if p.stem in wanted]
    if not paths:
        print("mutants: no tests/mutants/*.patch", file=sys.stderr)
        return 2

    errors: list[str] = []
    mutants: list[Mutant] = []
    for path in paths:
        try:
            mutants.append(load(path))
        except MutantError as exc:
            errors.append(str(exc))

    files = checkout_files(ROOT)
    parent = Path(tempfile.mkdtemp(prefix="maild-mutants-"))
    try:
        if args.check:
            copy = make_copy(ROOT, files, parent, "check")
            for m in mutants:
                try:
                    apply(m, copy, check_only=True)
                except MutantError as exc:
                    errors.append(str(exc))
            for e in errors:
                print(f"mutants: {e}", file=sys.stderr)
            print(f"mutants: {len(paths) - len(errors)} of {len(paths)} patches apply")
            return 1 if errors else 0

        if args.baseline:
            problems = baseline(mutants, files, parent)
            if problems:
                for p in problems:
                    print(f"mutants: {p}", file=sys.stderr)
                return 1

        started = time.monotonic()
        deadline = started + args.budget if args.budget else None
        if deadline is not None:
            mutants = budget_order(mutants, recently_changed(ROOT, args.recent), head_turn(ROOT))
        print(
            f"mutants: {len(mutants)} to run, {args.jobs} at a time"
            + (f", none started after {args.budget:.0f} s" if deadline else ""),
            flush=True,
        )
        outcomes: list[Outcome] = []
        not_run: list[Mutant] = []

        def run_in_time(m: Mutant) -> Outcome | None:
            if deadline is not None and time.monotonic() > deadline:
                not_run.append(m)
                return None
            stop_at = deadline + STOP_GRACE if deadline is not None else None
            o = run_one(m, files, parent, args.keep, stop_at)
            if o.result == "not finished":
                not_run.append(m)
                return None
            return o

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(run_in_time, m) for m in mutants]
            for future in as_completed(futures):
                o = future.result()
                if o is None:
                    continue
                outcomes.append(o)
                print(f"  {o.mutant.name}: {o.result} ({o.seconds:.1f} s)", flush=True)
        outcomes.sort(key=lambda o: o.mutant.name)
        elapsed = time.monotonic() - started
    finally:
        if not args.keep:
            shutil.rmtree(parent, ignore_errors=True)

    print()
    print(table(outcomes))
    bad = [o for o in outcomes if not o.ok]
    if args.verbose:
        for o in outcomes:
            if o.ok:
                print(f"\n{o.mutant.name} [{o.result}]: {o.detail}")
                for line in o.log:
                    print(f"  | {line}")
    for o in bad:
        print(f"\n{o.mutant.name} [{o.result}]: {o.detail}\n  promise: {o.mutant.promise}")
        print(f"  tests:   {shlex.join(o.mutant.tests)}")
        for line in o.log:
            print(f"  | {line}")
    for e in errors:
        print(f"\nmutants: ERROR {e}")
    if not_run:
        print(
            f"\nmutants: {len(not_run)} NOT RUN (or cut short): the {args.budget:.0f} s budget "
            "was spent "
            f"(`make mutants` runs them all): {', '.join(sorted(m.name for m in not_run))}"
        )
    killed = sum(o.ok for o in outcomes)
    total = len(outcomes) + len(errors)
    print(
        f"\nmutants: {killed} of {total} killed"
        + (f", {sum(o.result == 'SURVIVED' for o in outcomes)} SURVIVED" if bad else "")
        + (
            f", {len(errors) + sum(o.result == 'ERROR' for o in outcomes)} errors"
            if bad or errors
            else ""
        )
        + (f", {len(not_run)} not run" if not_run else "")
        + f" in {elapsed:.0f} s"
    )
    return 1 if bad or errors else 0


if __name__ == "__main__":
    sys.exit(main())
