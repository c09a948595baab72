"""DATA read in chunks (`maild.intake.smtpdata`) against a plain reading of RFC 5321.

The reference below reads line by line, as aiosmtpd did and as the RFC is
written: lines end at CRLF only; a line that is just "." ends the message; a
leading dot is dropped; over the size limit (bytes as sent, dots included) is
``552``, else a line over the line limit with its CRLF is ``500``. The scanner
must say the same however the bytes are cut into chunks by the network.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from maild.intake.smtpdata import DataScanner, DataState


def reference(
    stream: bytes, size_limit: int | None, line_limit: int
) -> tuple[DataState, bytes, bytes]:
    """(state, content, what follows the end) of `stream`, the bytes after ``DATA\\r\\n``."""
    lines: list[bytes] = []
    pos = 0
    while True:
        cut = stream.find(b"\r\n", pos)
        assert cut != -1, "the stream has an end"
        line = stream[pos : cut + 2]
        pos = cut + 2
        if line == b".\r\n":
            break
        lines.append(line)
    rest = stream[pos:]
    if size_limit is not None and sum(map(len, lines)) > size_limit:
        return DataState.TOO_MUCH, b"", rest
    if any(len(line) > line_limit for line in lines):
        return DataState.TOO_LONG, b"", rest
    return DataState.NOMINAL, b"".join(ln[1:] if ln.startswith(b".") else ln for ln in lines), rest


def scan(stream: bytes, cuts: list[int], size_limit: int | None, line_limit: int):
    scanner = DataScanner(size_limit, line_limit)
    edges = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    for start, stop in zip(edges, edges[1:], strict=False):
        rest = scanner.feed(stream[start:stop])
        if rest is not None:
            return scanner.state, scanner.content, rest + stream[stop:]
    raise AssertionError("the end was not found")


# Pieces that make the hard cases likely: dots at line starts, CR and LF
# alone, the end marker split anywhere, bare-LF "ends" that are content.
PIECES = [b"a", b"xyz", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b"\n.\n", b"\r\n..\r\n",
          b"\r.\r", b"\r\n.\r"]  # fmt: skip


@st.composite
def streams(draw: st.DrawFn) -> bytes:
    body = b"".join(draw(st.lists(st.sampled_from(PIECES), max_size=40)))
    after = b"".join(draw(st.lists(st.sampled_from([b"QUIT\r\n", b"MAIL FROM:<a@b>\r\n", b".\r\n",
                                                     b"x"]), max_size=3)))  # fmt: skip
    # Whatever the body, the message ends at the first line that is a lone dot.
    return body + b"\r\n.\r\n" + after


@settings(max_examples=600, deadline=None)
@given(
    stream=streams(),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    size_limit=st.one_of(st.none(), st.integers(min_value=1, max_value=120)),
    line_limit=st.integers(min_value=3, max_value=30),
)
@example(stream=b".\r\nQUIT\r\n", cuts=[], size_limit=None, line_limit=1001)  # empty message
@example(stream=b"a\r\n.\r\n", cuts=[2, 3, 4], size_limit=None, line_limit=1001)
@example(stream=b"..x\r\n\r\n.\r\n", cuts=[1], size_limit=None, line_limit=1001)
@example(stream=b"abcd\r\n.\r\n", cuts=[4], size_limit=None, line_limit=5)  # CR in, LF to come
def test_chunked_reading_says_what_reading_line_by_line_says(stream, cuts, size_limit, line_limit):
    assert scan(stream, cuts, size_limit, line_limit) == reference(stream, size_limit, line_limit)


def test_a_megabyte_of_base64_in_network_sized_chunks():
    body = b"".join(b"QUJD" * 19 + b"\r\n" for _ in range(14000)) + b".dot\r\n..\r\n"
    stream = body + b".\r\nQUIT\r\n"
    state, content, rest = scan(stream, list(range(0, len(stream), 65536)), 30_000_000, 1001)
    assert state is DataState.NOMINAL and rest == b"QUIT\r\n"
    assert content == body.replace(b"\r\n.", b"\r\n")  # the last two lines lose a dot each
    assert content.endswith(b"\r\ndot\r\n.\r\n")


def test_over_the_limit_memory_stays_bounded():
    scanner = DataScanner(1000, 1001)
    assert scanner.feed(b"x" * 998 + b"\r\n") is None  # 1,000 bytes: still within
    for _ in range(100):
        assert scanner.feed(b"x" * 998 + b"\r\n") is None
        assert len(scanner._buf) < 8  # dropped as it comes
    assert scanner.feed(b".\r\nQUIT\r\n") == b"QUIT\r\n"
    assert scanner.state is DataState.TOO_MUCH and scanner.content == b""
    assert scanner.size == 101 * 1000
