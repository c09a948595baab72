"""A small asyncio SMTP client for the load benchmarks.

It measures what a sending MTA waits for: the time from the end of DATA (the
final ``.``) to the server's reply. Many sessions run in one event loop.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # end of DATA -> reply, seconds
    codes: dict[int, int] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.sent / (self.ended - self.started) if self.ended > self.started else 0.0

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    def summary(self) -> dict[str, float | int | dict[int, int]]:
        return {
            "messages": self.sent,
            "msgs_per_s": round(self.rate, 1),
            "p50_ms": round(self.pct(50) * 1000, 2),
            "p99_ms": round(self.pct(99) * 1000, 2),
            "mean_ms": round(statistics.fmean(self.latencies) * 1000, 2) if self.latencies else 0,
            "codes": dict(self.codes),
        }


async def _reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return int(line[:3])


def _data(raw: bytes) -> bytes:
    lines = raw.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    stuffed = [b"." + ln if ln.startswith(b".") else ln for ln in lines]
    return b"\r\n".join(stuffed) + b"\r\n.\r\n"


async def session(host: str, port: int, messages: list[bytes], result: Result) -> None:
    """One SMTP session sending `messages`, each already dot-stuffed (`_data`)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await _reply(reader)
        writer.write(b"EHLO bench.example.org\r\n")
        await _reply(reader)
        for raw in messages:
            writer.write(b"MAIL FROM:<bench@example.org>\r\nRCPT TO:<help@example.com>\r\n")
            await _reply(reader)
            await _reply(reader)
            writer.write(b"DATA\r\n")
            if await _reply(reader) != 354:
                raise RuntimeError("DATA refused")
            writer.write(raw)
            await writer.drain()
            t0 = time.perf_counter()
            code = await _reply(reader)
            result.latencies.append(time.perf_counter() - t0)
            result.codes[code] = result.codes.get(code, 0) + 1
        writer.write(b"QUIT\r\n")
        await _reply(reader)
    finally:
        writer.close()


async def load(targets: list[tuple[str, int]], sessions: int, messages: list[bytes]) -> Result:
    """Send `messages` over `sessions` concurrent sessions spread over `targets`.

    Each message is dot-stuffed before the clock starts: the client shares the
    machine (and one event loop) with every session, and time it spends
    preparing one message would count as the server's latency for another.
    """
    result = Result()
    stuffed = [_data(raw) for raw in messages]
    per = [stuffed[i::sessions] for i in range(sessions)]
    result.started = time.perf_counter()
    await asyncio.gather(
        *(session(*targets[i % len(targets)], per[i], result) for i in range(sessions))
    )
    result.ended = time.perf_counter()
    return result


def run_load(targets: list[tuple[str, int]], sessions: int, messages: list[bytes]) -> Result:
    return asyncio.run(load(targets, sessions, messages))
