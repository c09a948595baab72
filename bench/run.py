"""End to end, as a user runs maild: ``maild import`` of an archive, and ``maild
serve`` fed over SMTP, each a process timed from the outside, against
baselines measured in the same run.

    python bench/run.py [--n 10000] [--repeat 3] [--only import|serve]
                        [--smtp-messages 3000] [--sessions 20] [--serve-rounds 3]

**Import.** The corpus of ``bench/corpus.py`` (≈60 % new requests from ≈300
senders, 40 % replies that thread only by In-Reply-To/References, ≈15 % with
10-200 KB attachments, UTF-8 and ISO-8859-1 in QP and base64, some HTML-only)
as a Maildir. Each run gets a fresh folder; ``maild db upgrade`` is done
beforehand (once per install, not timed). Timed, start-up included, from the
moment the process is started until it exits, interleaved run by run so a
burst of load elsewhere hits every kind alike:

* **baseline** - ``bench/baseline_import.py``: the standard library's
  documented parser (``policy.default``), threading by In-Reply-To and
  References in an indexed table, one INSERT and COMMIT per message (SQLite
  WAL, ``synchronous=FULL``). The target is measured against it;
* **floor** - the same with the cheapest stdlib parser (compat32), shown for
  the range;
* **maild import** - ``maild --config FILE import MAILDIR`` as documented:
  every message committed, parsed, screened, threaded, classified, recorded
  with its events and SLA deadlines, and the acknowledgements written
  durably into the outgoing Maildir;
* **maild import --no-notify** - the same without acknowledgements (a
  migration).

Checked every run: tickets created = threads in the corpus, replies threaded
= replies, nothing quarantined.

**Serve.** ``maild serve`` (SQLite, worker and sender running alongside) fed
by 20 concurrent SMTP sessions, against a no-op aiosmtpd server with the same
client (``bench/smtp_load.py`` does both): messages per second accepted,
p50/p99 from the end of DATA to the reply (maild commits in between), end to
end until every message is processed and acknowledged. In rounds (no-op, then
maild on a fresh database); the medians are the result, and each round's p99
is printed (one round's p99 is the 30th-slowest of 3,000 replies).

Targets: ``maild import`` ≥ 0.9 × baseline (median of the runs), SMTP p99 ≤
50 ms. The SMTP target is absolute, so the run also prints maild's latencies
as multiples of the no-op server's, and says when the no-op server alone takes
over half the target (a slow or busy machine: it cannot judge the target).
Figures move with the machine's load; only ratios from one run mean
anything. Results go to ``bench/out/run.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from corpus import generate, write_maildir  # noqa: E402

TARGET_IMPORT_RATIO = 0.9
TARGET_P99_MS = 50.0
# The SMTP target means something only where the protocol, client and loopback
# alone (the no-op server) take at most this share of it.
JUDGE_SHARE = 0.5
MAILD = [sys.executable, "-m", "maild"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILD_")}
    env["PYTHONPATH"] = str(ROOT)  # this checkout, whatever is installed
    return env


def _config(work: Path) -> Path:
    cfg = work / "maild.toml"
    cfg.write_text(
        f'[database]\nurl = "sqlite:///{work / "maild.db"}"\n'
        f'[helpdesk]\nsecret_file = "{work / "secret.key"}"\n'
        f'[outgoing]\nmaildir = "{work / "outgoing"}"\n'
        # One corpus sender opens up to a dozen tickets: not a mail loop.
        "[limits]\nautoreply_per_address_per_hour = 1000\n"
        # The benchmark's clients are on this machine: answered like any other,
        # not capped as one flooding source (limits.autoreply_per_source_per_hour).
        'autoreply_unlimited_sources = ["127.0.0.0/8", "::1"]\n'
    )
    return cfg


def timed(argv: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=_env(), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return elapsed, proc


def run_import_kind(kind: str, corpus: Path, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True)
    if kind in ("baseline", "floor"):
        argv = [sys.executable, str(HERE / "baseline_import.py"), str(corpus), str(work / "b.db")]
        seconds, _proc = timed(argv + (["--compat32"] if kind == "floor" else []), work)
        return {"seconds": seconds}
    cfg = _config(work)
    timed([*MAILD, "--config", str(cfg), "db", "upgrade"], work)
    extra = ["--no-notify"] if kind == "maild-no-notify" else []
    seconds, proc = timed([*MAILD, "--config", str(cfg), "import", *extra, "--json",
                           str(corpus)], work)  # fmt: skip
    summary = json.loads(proc.stdout)
    return {"seconds": seconds, "summary": summary}


def bench_import(n: int, repeat: int, seed: int) -> dict[str, Any]:
    kinds = ("baseline", "maild", "maild-no-notify", "floor")
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="maild-bench-") as tmp:
        root = Path(tmp)
        messages = generate(n, seed=seed)
        write_maildir(messages, root / "corpus")
        threads = len({m.thread for m in messages})
        replies = sum(m.is_reply for m in messages)
        size_mb = sum(len(m.raw) for m in messages) / 1e6
        print(f"import: {n} messages ({size_mb:.0f} MB, {threads} threads, {replies} replies), "
              f"{repeat} run(s) of each, interleaved; load average "
              f"{os.getloadavg()[0]:.1f}")  # fmt: skip
        for i in range(repeat):
            for kind in kinds:
                r = run_import_kind(kind, root / "corpus", root / f"{kind}-{i}")
                runs[kind].append(r)
                print(f"  run {i + 1} {kind:<16} {r['seconds']:7.2f} s  {n / r['seconds']:6.0f} msgs/s",
                      flush=True)  # fmt: skip
                s = r.get("summary")
                if s is not None and (s["tickets_created"] != threads
                                      or s["replies_threaded"] != replies or s["quarantined"]):  # fmt: skip
                    raise SystemExit(f"{kind}: wrong result {s} (expected {threads} tickets, "
                                     f"{replies} replies)")  # fmt: skip
    med = {k: statistics.median(n / r["seconds"] for r in v) for k, v in runs.items()}
    ratios = {k: med[k] / med["baseline"] for k in kinds}
    per_run = [runs["baseline"][i]["seconds"] / runs["maild"][i]["seconds"]
               for i in range(repeat)]  # fmt: skip
    return {"n": n, "repeat": repeat, "msgs_per_s": med, "ratio": ratios,
            "ratio_per_run": per_run, "threads": threads, "replies": replies,
            "loadavg_after": os.getloadavg()[0]}  # fmt: skip


def bench_serve(messages: int, sessions: int, rounds: int) -> dict[str, Any]:
    """`rounds` rounds, each the no-op server then ``maild serve`` (a fresh
    database), so a spell of load elsewhere hits both alike; the medians are
    the result. One round's p99 is the 30th-slowest of 3,000 replies, and on a
    busy machine it moved 1.5x-4.9x the no-op's from run to run."""
    import smtp_load

    msgs = smtp_load.messages(messages, seed=1)
    out: dict[str, Any] = {"messages": messages, "sessions": sessions, "rounds": []}
    for _ in range(rounds):
        noop = smtp_load.baseline(msgs, sessions)
        with tempfile.TemporaryDirectory(prefix="maild-bench-") as tmp:
            work = Path(tmp)
            maild = smtp_load.run_maild(smtp_load.sqlite_db(work), msgs, sessions, 1, work)
        out["rounds"].append({"baseline": noop, "maild": maild})
    out["baseline"] = _medians([r["baseline"] for r in out["rounds"]])
    out["maild"] = _medians([r["maild"] for r in out["rounds"]])
    return out


_FIGURES = ("msgs_per_s", "p50_ms", "p99_ms", "end_to_end_msgs_per_s")


def _medians(summaries: list[dict[str, Any]]) -> dict[str, float]:
    """Each figure's median over the rounds (those every round has)."""
    return {k: statistics.median(s[k] for s in summaries)
            for k in _FIGURES if all(k in s for s in summaries)}  # fmt: skip


def _by_round(serve: dict[str, Any], name: str) -> str:
    return ", ".join(f"{r[name]['p99_ms']:.1f}" for r in serve["rounds"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--n", type=int, default=10000, help="messages imported")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each import kind")
    ap.add_argument("--smtp-messages", type=int, default=3000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--serve-rounds", type=int, default=3,
                    help="rounds of no-op server then maild serve; medians reported")  # fmt: skip
    ap.add_argument("--only", choices=["import", "serve"])
    ap.add_argument("--json", type=Path, default=HERE / "out" / "run.json")
    args = ap.parse_args(argv)
    results: dict[str, Any] = {}
    ok = True
    if args.only in (None, "import"):
        imp = results["import"] = bench_import(args.n, args.repeat, args.seed)
        r = imp["ratio"]
        print(f"import, median msgs/s: baseline {imp['msgs_per_s']['baseline']:.0f}, "
              f"maild import {imp['msgs_per_s']['maild']:.0f} ({r['maild']:.2f}x), "
              f"--no-notify {imp['msgs_per_s']['maild-no-notify']:.0f} "
              f"({r['maild-no-notify']:.2f}x), compat32 floor "
              f"{imp['msgs_per_s']['floor']:.0f} ({r['floor']:.2f}x)")  # fmt: skip
        print("  maild import / baseline, run by run: "
              + ", ".join(f"{x:.2f}" for x in imp["ratio_per_run"]))  # fmt: skip
        met = r["maild"] >= TARGET_IMPORT_RATIO
        ok &= met
        print(f"  target maild import >= {TARGET_IMPORT_RATIO}x baseline: "
              f"{'met' if met else 'NOT met'}")  # fmt: skip
    if args.only in (None, "serve"):
        srv = results["serve"] = bench_serve(args.smtp_messages, args.sessions, args.serve_rounds)
        b, m = srv["baseline"], srv["maild"]
        print(f"serve over SMTP, {args.sessions} sessions, {args.smtp_messages} messages, "
              f"median of {args.serve_rounds} rounds:")  # fmt: skip
        print(f"  no-op aiosmtpd   {b['msgs_per_s']:7.0f} msgs/s  p50 {b['p50_ms']:6.1f} ms  "
              f"p99 {b['p99_ms']:6.1f} ms")  # fmt: skip
        print(f"  maild serve      {m['msgs_per_s']:7.0f} msgs/s  p50 {m['p50_ms']:6.1f} ms  "
              f"p99 {m['p99_ms']:6.1f} ms  end to end {m['end_to_end_msgs_per_s']:.0f} msgs/s")  # fmt: skip
        print(f"  p99 round by round (ms): no-op {_by_round(srv, 'baseline')}; "
              f"maild {_by_round(srv, 'maild')}")  # fmt: skip
        print(f"  maild / no-op: p50 {m['p50_ms'] / b['p50_ms']:.1f}x, "
              f"p99 {m['p99_ms'] / b['p99_ms']:.1f}x")  # fmt: skip
        met = m["p99_ms"] <= TARGET_P99_MS
        ok &= met
        print(f"  target p99 <= {TARGET_P99_MS:.0f} ms with processing alongside: "
              f"{'met' if met else 'NOT met'}")  # fmt: skip
        if not met and b["p99_ms"] > TARGET_P99_MS * JUDGE_SHARE:
            print(f"  (this machine cannot judge that target: the no-op server alone has a p99 "
                  f"of {b['p99_ms']:.0f} ms, over {JUDGE_SHARE:.0%} of it)")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
