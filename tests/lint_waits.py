"""``make lint``: no ``time.sleep(...)`` followed by an assertion in the tests.

Sleeping, then asserting that something did not happen (or did), is a race:
on a loaded machine the thing happens just after the sleep; on a fast one the
sleep is wasted. Wait for an event instead (`tests.support.waiting`: poll
with a deadline, or `wait_settled` before asserting absence).

The rule, checked on the syntax tree of every ``tests/**/*.py``: a
``sleep(...)`` statement may not be followed, in the same block, by an
``assert`` within the next two statements. A sleep that only paces a loop or
a load generator is fine (nothing is asserted after it). A line may carry
``# lint-waits: <why>`` to say why its sleep is no such wait.

    python tests/lint_waits.py [PATH ...]      exit 1 and one line per finding
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 2  # statements after the sleep that may not be assertions
EXEMPT = "# lint-waits:"


def _is_sleep(stmt: ast.stmt) -> bool:
    if not isinstance(stmt, ast.Expr) or not isinstance(stmt.value, ast.Call):
        return False
    func = stmt.value.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    return name == "sleep"


def _blocks(tree: ast.AST) -> Iterator[list[ast.stmt]]:
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(node, field, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                yield block
        for handler in getattr(node, "handlers", []):
            yield handler.body


def findings(path: Path) -> list[str]:
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    out = []
    for block in _blocks(ast.parse(source, str(path))):
        for i, stmt in enumerate(block):
            if not _is_sleep(stmt) or EXEMPT in lines[stmt.lineno - 1]:
                continue
            for after in block[i + 1 : i + 1 + WINDOW]:
                if isinstance(after, ast.Assert):
                    out.append(
                        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:"
                        f"{stmt.lineno}: sleep, then assert (line {after.lineno}): wait for an "
                        "event instead (tests/support/waiting.py)"
                    )
                    break
    return out


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((ROOT / "tests").rglob("*.py"))
    problems = [f for p in paths if p.suffix == ".py" for f in findings(p)]
    for line in problems:
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
