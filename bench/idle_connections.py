"""2,000 idle SMTP connections while legitimate mail still gets through.

A slow-loris style crowd (connect, EHLO, then nothing) sits on ``maild
serve`` (SQLite) while 5 sessions send 300 real messages. Reported: the
latency (end of DATA to 250) of the real mail with and without the crowd
(baseline measured in the same run), and how many idle connections were
still being served (NOOP answered) at the end.

    python bench/idle_connections.py [--idle 2000] [--messages 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from smtp_load import messages, sqlite_db  # noqa: E402
from smtpclient import _reply, load  # noqa: E402

from tests.support.serveproc import ServeProcess, base_sections  # noqa: E402


async def crowd_and_mail(port: int, idle: int, msgs: list[bytes]) -> dict[str, object]:
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    t0 = time.perf_counter()
    failed = 0
    for _ in range(idle):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await _reply(reader)
            writer.write(b"EHLO idle.example.org\r\n")
            await _reply(reader)
            conns.append((reader, writer))
        except OSError:
            failed += 1
    opened = time.perf_counter() - t0
    result = await load([("127.0.0.1", port)], 5, msgs)
    alive = 0

    async def noop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            writer.write(b"NOOP\r\n")
            return await asyncio.wait_for(_reply(reader), 30) == 250
        except (OSError, TimeoutError, ConnectionError):
            return False

    alive = sum(await asyncio.gather(*(noop(r, w) for r, w in conns)))
    for _r, w in conns:
        w.close()
    return {"idle_opened": len(conns), "idle_failed": failed, "open_seconds": round(opened, 2),
            "idle_alive_at_end": alive, "mail": result.summary()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--json", type=Path, default=HERE / "out" / "idle_connections.json")
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.idle + 100:
        print(f"open-files hard limit {hard} is too low for {args.idle} connections")
        return 1
    with tempfile.TemporaryDirectory(prefix="maild-idle-") as tmp:
        work = Path(tmp)
        serve = ServeProcess(base_sections(work, sqlite_db(work)),
                             log_path=work / "serve.log",
                             extra_env={"MAILD_LOG__LEVEL": "WARNING"})  # fmt: skip
        try:
            serve.start()
            port = serve.port
            asyncio.run(load([("127.0.0.1", port)], 5, messages(20, seed=7)))  # warm-up
            base = asyncio.run(load([("127.0.0.1", port)], 5, messages(args.messages, seed=8)))
            crowd = asyncio.run(crowd_and_mail(port, args.idle, messages(args.messages, seed=9)))
            still_up = serve.running
            status = serve.stop()
        finally:
            serve.close()
    out = {"idle": args.idle, "loadavg": os.getloadavg(), "baseline": base.summary(),
           "with_idle": crowd, "daemon_alive": still_up, "exit_status": status}  # fmt: skip
    b, m = base.summary(), crowd["mail"]
    print(f"{args.idle} idle connections: {crowd['idle_opened']} opened "
          f"({crowd['idle_failed']} failed) in {crowd['open_seconds']}s, "
          f"{crowd['idle_alive_at_end']} still served at the end")  # fmt: skip
    print(f"real mail without the crowd: p50 {b['p50_ms']} ms, p99 {b['p99_ms']} ms, "
          f"{b['msgs_per_s']} msgs/s, codes {b['codes']}")  # fmt: skip
    print(f"real mail with the crowd:    p50 {m['p50_ms']} ms, p99 {m['p99_ms']} ms, "  # type: ignore[index]
          f"{m['msgs_per_s']} msgs/s, codes {m['codes']}")  # type: ignore[index]  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    return 0 if still_up and status == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
