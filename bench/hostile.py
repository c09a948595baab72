"""Benchmark: the CPU each hostile message of ``tests/integration/test_hostile.py``
costs to parse, against a baseline in the same run.

The daemon parses in child processes with a budget of ``limits.
parse_cpu_seconds`` (2 s) per message; a parse over it is killed and salvaged.
This reports, per case, the CPU of a full parse (with maild's pre-parse
limits, as the parse processes run it) and its ratio to parsing an ordinary
message, and which cases would meet the budget. Each parse runs in a fresh
child process (the same address-space cap as the daemon's children: 256 MB
over what it started with), so one case cannot skew the next.

Usage: ``python bench/hostile.py [--case NAME ...]``. Timings on a shared
machine are noisy; the ratios are what to compare between runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from maild.mail.limits import ParseLimits  # noqa: E402
from maild.service.parsepool import _cap_memory, parse_one  # noqa: E402
from tests.integration.test_hostile import CASES  # noqa: E402
from tests.support.desk import make_message  # noqa: E402

BUDGET_SECONDS = 2.0
MEMORY_MB = 256


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(raw: bytes, repeat: int) -> tuple[float, str]:
    """In a fresh child: the best CPU time of `repeat` parses, and what came out."""
    _cap_memory(MEMORY_MB)
    resource.setrlimit(resource.RLIMIT_CPU, (int(BUDGET_SECONDS * 10), resource.RLIM_INFINITY))
    best = float("inf")
    outcome = ""
    for _ in range(repeat):
        before = _cpu()
        result = parse_one(raw, 0, ParseLimits())
        best = min(best, _cpu() - before)
        outcome = "parsed" if not isinstance(result, tuple) else f"{result[0]}: {result[1][:50]}"
    return best, outcome


def measure(raw: bytes, repeat: int = 1) -> tuple[float, str]:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1, maxtasksperchild=1) as pool:
        try:
            return pool.apply(_measure, (raw, repeat))
        except Exception as exc:  # killed by its CPU backstop, or worse
            return float("nan"), f"child failed: {type(exc).__name__}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", help="only these cases")
    args = parser.parse_args()
    names = args.case or sorted(CASES)
    baseline, _ = measure(make_message(), repeat=20)
    print(f"baseline: an ordinary message parses in {baseline * 1e3:.2f} ms of CPU")
    rows = []
    over = []
    for name in names:
        cpu, outcome = measure(CASES[name]())
        ratio = cpu / baseline if baseline > 0 else float("nan")
        within = cpu <= BUDGET_SECONDS
        if not within:
            over.append(name)
        rows.append({"case": name, "cpu_seconds": cpu, "ratio": ratio, "outcome": outcome})
        print(f"  {name:<32} {cpu:8.3f} s  x{ratio:>9.0f}  {'ok  ' if within else 'OVER'}  "
              f"{outcome}")  # fmt: skip
    print(f"{len(names) - len(over)} of {len(names)} cases parse within the {BUDGET_SECONDS:g} s "
          f"budget" + (f"; over it (killed and salvaged in the daemon): {', '.join(over)}"
                       if over else ""))  # fmt: skip
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "hostile.json").write_text(
        json.dumps({"baseline_cpu_seconds": baseline, "cases": rows}, indent=1)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
