"""The package's shape holds: layers enforced, no import cycles, no hidden imports.

`lint-imports` checks the contracts in pyproject.toml (`make lint` runs it). These
tests run it too, prove a contract is not vacuous (it fails on a deliberate upward
import in a copy of the package), and check two things import-linter does not:
no import cycle among maild's modules, and no import inside a function outside the
command line (where each command imports what it needs, to keep start-up fast).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_contracts_hold():
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "copy"
    shutil.copytree(ROOT / "maild", root / "maild", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    root = _copy(tmp_path)
    parse = root / "maild" / "mail" / "parse.py"
    parse.write_text(parse.read_text() + "\nfrom maild.desk import apply  # noqa\n")
    proc = _lint_imports(root)
    assert proc.returncode != 0
    assert "maild is layered" in proc.stdout and "BROKEN" in proc.stdout
    assert "maild.mail.parse -> maild.desk.apply" in proc.stdout


def test_sibling_layers_may_not_import_each_other(tmp_path):
    root = _copy(tmp_path)
    models = root / "maild" / "store" / "models.py"
    models.write_text(models.read_text() + "\nfrom maild.mail import verp  # noqa\n")
    proc = _lint_imports(root)
    assert proc.returncode != 0
    assert "maild.store.models -> maild.mail.verp" in proc.stdout


def test_the_pipeline_touches_no_database(tmp_path):
    root = _copy(tmp_path)
    screen = root / "maild" / "pipeline" / "screen.py"
    screen.write_text(screen.read_text() + "\nimport sqlalchemy  # noqa\n")
    proc = _lint_imports(root)
    assert proc.returncode != 0
    assert "maild.pipeline is not allowed to import sqlalchemy" in proc.stdout


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v) & modules:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for m in sorted(modules):
        if m not in index:
            visit(m)
    return found


def test_no_import_cycles_among_maild_modules():
    graph = grimp.build_graph("maild", cache_dir=None)  # imports inside functions included
    modules = {m for m in graph.modules if m.startswith("maild")}
    assert len(modules) > 60
    assert _cycles(graph, modules) == []


def test_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for m in ("a", "b", "c"):
        graph.add_module(m)
    graph.add_import(importer="a", imported="b")
    graph.add_import(importer="b", imported="a")
    graph.add_import(importer="b", imported="c")
    assert _cycles(graph, {"a", "b", "c"}) == [["a", "b"]]


def test_no_maild_imports_inside_functions_outside_the_cli():
    hidden = []
    for path in sorted((ROOT / "maild").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(("maild/cli/", "maild/store/migrations/")):
            continue
        tree = ast.parse(path.read_text(), rel)
        for fn in ast.walk(tree):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("maild"):
                        hidden.append(f"{rel}:{node.lineno}")
                    if isinstance(node, ast.Import) and any(
                        a.name.startswith("maild") for a in node.names
                    ):
                        hidden.append(f"{rel}:{node.lineno}")
    assert hidden == []
