"""SMTP intake under load: 20 concurrent sessions against ``maild serve``.

Measures, per run: messages per second accepted, and p50/p99 of the time from
the end of DATA to the reply (maild commits before it answers 250). The
daemon runs as in production, worker and sender included, so intake competes
with processing for the database; "end to end" is the rate until every
message is processed and its acknowledgement sent.

Runs, all in this one invocation so the ratios share the machine's state:

- baseline: the same client against aiosmtpd answering 250 without storing
  (the cost of the protocol, client and loopback alone);
- maild on SQLite (WAL, synchronous=FULL);
- maild on PostgreSQL, one instance, then two instances on one database
  (sessions split between them), when a PostgreSQL server is reachable
  (``MAILD_TEST_PG_URL``, as the tests use).

    python bench/smtp_load.py [--messages 3000] [--sessions 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import corpus  # noqa: E402
from smtpclient import run_load  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from maild.store.db import make_engine, upgrade  # noqa: E402
from tests.support.serveproc import ServeProcess, base_sections, free_port  # noqa: E402

PG_ADMIN = os.environ.get(
    "MAILD_TEST_PG_URL", "postgresql+psycopg://maild:maild@127.0.0.1:5432/postgres"
)

NOOP_SERVER = """
import asyncio, sys
from aiosmtpd.smtp import SMTP
class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Sink(), data_size_limit=30_000_000,
                                      loop=loop), "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


def messages(n: int, seed: int) -> list[bytes]:
    """Corpus messages with fresh Message-IDs, so no run dedupes another's."""
    out = []
    for m in corpus.generate(n, seed=seed):
        raw = m.raw
        if m.message_id:
            raw = raw.replace(m.message_id.encode(), f"<{uuid.uuid4().hex}@bench.example>".encode())
        out.append(raw)
    return out


def baseline(msgs: list[bytes], sessions: int) -> dict[str, Any]:
    import subprocess

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", NOOP_SERVER, str(port)])
    try:
        _wait_port(port)
        return run_load([("127.0.0.1", port)], sessions, msgs).summary()
    finally:
        proc.kill()
        proc.wait()


def _wait_port(port: int) -> None:
    import socket

    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def _settled(db_url: str, total: int, timeout: float = 600) -> float:
    """Wait until every inbound row is processed and every ack sent; when."""
    engine = make_engine(db_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                busy = conn.execute(text("select count(*) from inbound where status in "
                                         "('pending', 'processing')")).scalar_one()  # fmt: skip
                stored = conn.execute(text("select count(*) from inbound")).scalar_one()
                due = conn.execute(
                    text("select count(*) from outbox where status = 'pending'")
                ).scalar_one()
            if stored >= total and busy == 0 and due == 0:
                return time.perf_counter()
            time.sleep(0.1)
        raise RuntimeError("backlog not processed in time")
    finally:
        engine.dispose()


def run_maild(db_url: str, msgs: list[bytes], sessions: int, instances: int,
              workdir: Path, *, process: bool = True) -> dict[str, Any]:  # fmt: skip
    procs = []
    for n in range(instances):
        sections = base_sections(workdir, db_url,
                                 cluster={"heartbeat_seconds": 2, "dead_after_seconds": 10},
                                 worker={"enabled": process})  # fmt: skip
        procs.append(ServeProcess(sections, log_path=workdir / f"serve{n}.log",
                                  extra_env={"MAILD_LOG__LEVEL": "WARNING"}))  # fmt: skip
    try:
        for p in procs:
            p.start()
        warm = messages(sessions * 2, seed=99)
        run_load([("127.0.0.1", p.port) for p in procs], sessions, warm)
        if process:
            _settled(db_url, len(warm))
        result = run_load([("127.0.0.1", p.port) for p in procs], sessions, msgs)
        summary = result.summary()
        if process:
            done = _settled(db_url, len(warm) + len(msgs))
            summary["end_to_end_msgs_per_s"] = round(len(msgs) / (done - result.started), 1)
        for p in procs:
            if p.stop() != 0:
                raise RuntimeError(f"maild did not exit 0; see {p.log_path}")
        return summary
    finally:
        for p in procs:
            p.close()


def sqlite_db(workdir: Path) -> str:
    url = f"sqlite:///{workdir / 'maild.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


def pg_db() -> tuple[str, str] | None:
    try:
        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        name = f"maild_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception as exc:
        print(f"  (PostgreSQL not reachable: {type(exc).__name__}; skipped)")
        return None
    url = make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return url, name


def drop_pg(name: str) -> None:
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--json", type=Path, default=HERE / "out" / "smtp_load.json")
    args = ap.parse_args(argv)
    msgs = messages(args.messages, seed=1)
    size = sum(len(m) for m in msgs) / len(msgs)
    print(f"SMTP load: {len(msgs)} corpus messages (mean {size / 1024:.1f} KiB), "
          f"{args.sessions} concurrent sessions, load avg {os.getloadavg()[0]:.2f}")  # fmt: skip
    results: dict[str, Any] = {"messages": len(msgs), "sessions": args.sessions,
                               "loadavg_before": os.getloadavg()}  # fmt: skip
    results["baseline_noop_aiosmtpd"] = baseline(msgs, args.sessions)
    with tempfile.TemporaryDirectory(prefix="maild-bench-") as tmp:
        work = Path(tmp)
        (work / "sqlite").mkdir()
        results["maild_sqlite"] = run_maild(sqlite_db(work / "sqlite"), msgs, args.sessions, 1,
                                            work / "sqlite")  # fmt: skip
        (work / "sqlite-intake").mkdir()
        results["maild_sqlite_intake_only"] = run_maild(
            sqlite_db(work / "sqlite-intake"), messages(args.messages, seed=5), args.sessions, 1,
            work / "sqlite-intake", process=False)  # fmt: skip
        if not args.no_pg:
            for instances in (1, 2):
                made = pg_db()
                if made is None:
                    break
                url, name = made
                wd = work / f"pg{instances}"
                wd.mkdir()
                try:
                    results[f"maild_postgresql_{instances}"] = run_maild(
                        url, messages(args.messages, seed=1 + instances), args.sessions,
                        instances, wd)  # fmt: skip
                finally:
                    drop_pg(name)
    results["loadavg_after"] = os.getloadavg()
    print(f"\n{'run':<26} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'end-to-end/s':>13}")
    for key, r in results.items():
        if isinstance(r, dict) and "msgs_per_s" in r:
            print(f"{key:<26} {r['msgs_per_s']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} "
                  f"{r.get('end_to_end_msgs_per_s', '-'):>13}  codes {r['codes']}")  # fmt: skip
    one, two = results.get("maild_postgresql_1"), results.get("maild_postgresql_2")
    if one and two:
        results["pg_scaling_intake"] = round(two["msgs_per_s"] / one["msgs_per_s"], 2)
        results["pg_scaling_end_to_end"] = round(
            two["end_to_end_msgs_per_s"] / one["end_to_end_msgs_per_s"], 2
        )
        print(f"two PostgreSQL instances vs one: intake x{results['pg_scaling_intake']}, "
              f"end to end x{results['pg_scaling_end_to_end']}")  # fmt: skip
    for key in ("maild_sqlite", "maild_sqlite_intake_only"):
        sq = results[key]
        ok = sq["msgs_per_s"] >= 300 and sq["p99_ms"] <= 100
        print(f"{key}: target >= 300 msgs/s with p99 <= 100 ms {'met' if ok else 'NOT met'}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
