"""End-to-end throughput of maild on SQLite, against a baseline in the same run.

    python bench/run.py [--n 2000] [--seed 1] [--repeat 3]

Generates the corpus of ``bench/corpus.py`` (≈60% new tickets from ≈300
senders, 40% replies threaded only by In-Reply-To/References, ≈15% with
10-200 KB attachments, UTF-8 and ISO-8859-1 in QP and base64, some HTML-only)
into a Maildir, then measures, each in a fresh child process:

* **maild** - intake (the daemon's group-commit writer, every message
  committed before it would be acknowledged), worker (parse, screen,
  correlate, triage, decide, apply with the rendered acknowledgement) and
  sender (acknowledgements written durably to a Maildir), on SQLite in WAL
  mode with ``synchronous=FULL``. Wall time from the first byte in to the last
  acknowledgement on disk.
* **baseline** - the least a durable help desk must do with the stdlib: parse
  each message with ``email`` (``policy.default``, the documented modern API),
  take its text body, and INSERT it into SQLite (WAL, ``synchronous=FULL``),
  one commit per message.
* **baseline-compat32** - the same with the legacy ``compat32`` parser and
  ``get_payload(decode=True)``: the cheapest stdlib parse there is, shown so the
  reader sees the whole range.

Reported: msgs/s of each, the ratio maild/baseline, peak RSS of each child,
and threading correctness (tickets created vs expected, replies misthreaded).
Figures vary with the machine and its load; only the ratios measured in the
same run mean anything.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import hashlib
import json
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from corpus import generate, write_maildir  # noqa: E402

TARGET_MSGS_PER_S = 300
TARGET_RATIO = 0.75


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def iter_maildir(path: Path) -> Iterator[bytes]:
    for f in sorted((path / "new").iterdir()):
        yield f.read_bytes()


# --- children -------------------------------------------------------------------


def child_baseline(corpus: Path, work: Path, compat32: bool) -> dict[str, Any]:
    db = sqlite3.connect(work / "baseline.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE message (id INTEGER PRIMARY KEY, message_id TEXT, sender TEXT,"
        " subject TEXT, body TEXT, raw BLOB)"
    )
    messages = list(iter_maildir(corpus))
    started = time.perf_counter()
    for raw in messages:
        if compat32:
            msg = email.message_from_bytes(raw)
            body = ""
            for part in msg.walk():
                if part.get_content_maintype() == "text" and not part.get_filename():
                    payload = part.get_payload(decode=True) or b""
                    body = payload.decode(part.get_content_charset() or "utf-8", "replace")
                    break
            sender, subject, mid = str(msg["From"]), str(msg["Subject"]), msg["Message-ID"]
        else:
            msg = email.message_from_bytes(raw, policy=email.policy.default)
            part = msg.get_body(preferencelist=("plain", "html"))
            body = part.get_content() if part is not None else ""
            sender, subject, mid = str(msg["From"]), str(msg["Subject"]), msg["Message-ID"]
        db.execute("BEGIN")
        db.execute(
            "INSERT INTO message (message_id, sender, subject, body, raw) VALUES (?,?,?,?,?)",
            (str(mid), sender, subject, body, raw),
        )
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    return {"messages": len(messages), "seconds": elapsed, "peak_rss_mb": peak_rss_mb()}


def child_maild(corpus: Path, work: Path) -> dict[str, Any]:
    """The daemon as it runs in production, minus the SMTP socket.

    Intake writer, worker and sender run concurrently in their own threads,
    woken by each other exactly as in ``maild serve``; messages are submitted
    to the group-commit writer as concurrent SMTP sessions would (a window of
    submissions in flight, each acknowledged only after its commit). The clock
    stops when the last acknowledgement is on disk.
    """
    import asyncio
    import threading

    from sqlalchemy import func, select

    from maild.intake.commit import Delivery
    from maild.service.daemon import Daemon
    from maild.store.models import Outbox
    from maild.store.states import OutboxStatus, Source
    from tests.support.desk import make_settings

    url = f"sqlite:///{work / 'maild.db'}"
    settings = make_settings(
        work,
        url,
        smtp={"enabled": False},
        worker={"poll_seconds": 0.05, "parse_processes": -1},
        # One corpus sender opens up to 11 tickets within the run: not a loop.
        limits={"autoreply_per_address_per_hour": 1000},
    )
    daemon = Daemon(settings)
    thread = threading.Thread(target=lambda: asyncio.run(daemon.run(install_signals=False)))
    thread.start()
    daemon.ready.wait(30)
    files = sorted((corpus / "new").iterdir())
    expected_acks = None

    def acks_on_disk() -> int:
        with daemon.sessions() as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(Outbox)
                    .where(Outbox.status == OutboxStatus.SENT)
                )
                or 0
            )

    def pending() -> int:
        with daemon.sessions() as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(Outbox)
                    .where(Outbox.status == OutboxStatus.PENDING)
                )
                or 0
            )

    # In memory before the clock starts, as for the baseline.
    raws = [f.read_bytes() for f in files]
    started = time.perf_counter()
    window = 64
    futures = []
    for raw in raws:
        delivery = Delivery(raw=raw, source=Source.SMTP, recipient="help@example.com")
        futures.append(daemon.committer.submit(delivery))
        if len(futures) >= window:
            futures.pop(0).result()
    for fut in futures:
        fut.result()
    intake_done = time.perf_counter() - started
    # Done when every message is processed and no acknowledgement is pending.
    from maild.store.models import Inbound
    from maild.store.states import InboundStatus

    while True:
        with daemon.sessions() as session:
            open_rows = session.scalar(
                select(func.count())
                .select_from(Inbound)
                .where(Inbound.status.in_([InboundStatus.PENDING, InboundStatus.PROCESSING]))
            )
        if not open_rows and not pending():
            break
        time.sleep(0.05)  # the watcher's own queries compete with the daemon
    elapsed = time.perf_counter() - started
    expected_acks = acks_on_disk()
    daemon.request_stop()
    thread.join(30)

    engine = daemon.engine
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT sha256, ticket_id, status FROM inbound").fetchall()
        tickets = conn.exec_driver_sql("SELECT count(*) FROM ticket").scalar_one()
    engine.dispose()
    by_sha = {sha: (ticket, status) for sha, ticket, status in rows}
    outgoing = len(list((work / "outgoing" / "new").iterdir()))
    return {
        "messages": len(files),
        "seconds": elapsed,
        "stages": {"intake": intake_done},
        "acks_sent": expected_acks,
        "acks_in_maildir": outgoing,
        "tickets": tickets,
        "landing": {f.name: by_sha.get(hashlib.sha256(f.read_bytes()).hexdigest()) for f in files},
        "commit_batches": daemon.committer.batches,
        "peak_rss_mb": peak_rss_mb(),
    }


# --- parent ---------------------------------------------------------------------


def run_child(kind: str, corpus: Path, work: Path) -> dict[str, Any]:
    work.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--corpus", str(corpus), "--work", str(work)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def threading_check(
    messages: list[Any], files: list[Path], landing: dict[str, Any]
) -> dict[str, int]:
    thread_ticket: dict[int, int] = {}
    misthreaded = 0
    lost = 0
    for msg, f in zip(messages, files, strict=True):
        got = landing.get(f.name)
        if got is None or got[0] is None:
            lost += 1
            continue
        ticket = got[0]
        if not msg.is_reply:
            thread_ticket[msg.thread] = ticket
        elif thread_ticket.get(msg.thread) != ticket:
            misthreaded += 1
    distinct = len(set(thread_ticket.values()))
    return {
        "threads_expected": len({m.thread for m in messages}),
        "threads_distinct_tickets": distinct,
        "replies": sum(m.is_reply for m in messages),
        "replies_misthreaded": misthreaded,
        "messages_without_ticket": lost,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each; the median is reported")
    ap.add_argument("--child", choices=["maild", "baseline", "baseline-compat32"])
    ap.add_argument("--corpus", type=Path)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--json", type=Path, default=HERE / "out" / "run.json")
    args = ap.parse_args(argv)

    if args.child:
        if args.child == "maild":
            result = child_maild(args.corpus, args.work)
        else:
            result = child_baseline(
                args.corpus, args.work, compat32=args.child == "baseline-compat32"
            )
        json.dump(result, sys.stdout)
        return 0

    with tempfile.TemporaryDirectory(prefix="maild-bench-") as tmp:
        root = Path(tmp)
        messages = generate(args.n, seed=args.seed)
        corpus = root / "corpus"
        write_maildir(messages, corpus)
        files = sorted((corpus / "new").iterdir())
        size_mb = sum(len(m.raw) for m in messages) / 1e6
        runs: dict[str, list[dict[str, Any]]] = {
            "maild": [],
            "baseline": [],
            "baseline-compat32": [],
        }
        for i in range(args.repeat):
            # Interleave the kinds so a burst of load elsewhere hits all of them.
            for kind in runs:
                runs[kind].append(run_child(kind, corpus, root / f"{kind}-{i}"))

    def rate(r: dict[str, Any]) -> float:
        return r["messages"] / r["seconds"]

    med = {k: statistics.median(rate(r) for r in v) for k, v in runs.items()}
    rss = {k: max(r["peak_rss_mb"] for r in v) for k, v in runs.items()}
    last = runs["maild"][-1]
    check = threading_check(messages, files, last["landing"])
    ratio = med["maild"] / med["baseline"]
    ratio32 = med["maild"] / med["baseline-compat32"]
    stages = {k: statistics.median(r["stages"][k] for r in runs["maild"]) for k in last["stages"]}

    print(
        f"corpus: {args.n} messages, {size_mb:.1f} MB, seed {args.seed}; {args.repeat} run(s) each, median"
    )
    print(
        f"  maild (intake+pipeline+outbox) {med['maild']:8.0f} msgs/s   peak RSS {rss['maild']:6.1f} MB"
    )
    print(
        f"  baseline (policy.default)      {med['baseline']:8.0f} msgs/s   peak RSS {rss['baseline']:6.1f} MB"
    )
    print(f"  baseline (compat32)            {med['baseline-compat32']:8.0f} msgs/s   "
          f"peak RSS {rss['baseline-compat32']:6.1f} MB")  # fmt: skip
    print(f"  ratio maild / baseline         {ratio:8.2f}x   (target >= {TARGET_RATIO})")
    print(f"  ratio maild / compat32 floor   {ratio32:8.2f}x")
    print("  maild: intake finished at (s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
          + f"; {last['commit_batches']} intake commits")  # fmt: skip
    print(f"  threading: {last['tickets']} tickets for {check['threads_expected']} threads; "
          f"{check['replies_misthreaded']} of {check['replies']} replies misthreaded; "
          f"{check['messages_without_ticket']} messages without a ticket; {last['acks_sent']} acks sent")  # fmt: skip
    ok = (
        med["maild"] >= TARGET_MSGS_PER_S
        and ratio >= TARGET_RATIO
        and check["replies_misthreaded"] == 0
        and last["tickets"] == check["threads_expected"]
        and rss["maild"] <= 150
    )
    print("  targets: " + ("met" if ok else "NOT met")
          + f" (>= {TARGET_MSGS_PER_S} msgs/s, >= {TARGET_RATIO}x baseline, 0 misthreaded, RSS <= 150 MB)")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "n": args.n, "seed": args.seed, "repeat": args.repeat, "msgs_per_s": med,
        "ratio": ratio, "ratio_compat32": ratio32, "peak_rss_mb": rss, "stages_s": stages,
        "threading": check, "tickets": last["tickets"], "acks_sent": last["acks_sent"],
    }  # fmt: skip
    args.json.write_text(json.dumps(summary, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
