"""The DATA phase of SMTP/LMTP, read in chunks (RFC 5321 4.1.1.4, 4.5.2).

aiosmtpd reads DATA one line at a time: a coroutine step, a buffer search and
two list appends per line, with the socket paused and resumed every 2 KB
(its stream limit is one line). A base64 attachment of 200 KB is 2,700 lines,
so that loop, not the commit, was most of the intake's interpreter time.
`DataScanner` takes whatever the socket has, as one chunk, and does the same
work with byte-string searches:

- the message ends at the first ``CRLF . CRLF``, where the first CRLF ends a
  line (the CRLF of the ``DATA`` command counts: an empty message is just
  ``.CRLF``). A bare LF is content, never a line end, so ``LF . LF`` cannot
  smuggle a second message past us;
- a line that starts with a dot loses that dot (dot-stuffing undone);
- more than `size_limit` bytes of content (counted as sent, dots included):
  the content is dropped as it comes and the reader is told ``552``; a line
  longer than `line_limit` bytes with its CRLF: dropped likewise, ``500``.
  Either way the scan goes on to the end of the message, so the session can
  carry on (RFC 5321 4.2.5), and memory stays bounded;
- what came after the end (a pipelined ``QUIT`` or the next ``MAIL``) is given
  back, for the session to read as commands.

Pure logic, no I/O: the session (`maild.intake.smtp`) feeds it.
"""

from __future__ import annotations

from enum import Enum

END = b"\r\n.\r\n"
CRLF = b"\r\n"


class DataState(Enum):
    NOMINAL = "nominal"
    TOO_MUCH = "too_much"  # over the size limit: 552
    TOO_LONG = "too_long"  # a line over the line limit: 500


class DataScanner:
    """Finds the end of one message's DATA and undoes its dot-stuffing."""

    def __init__(self, size_limit: int | None, line_limit: int) -> None:
        self.size_limit = size_limit or None
        self.line_limit = line_limit
        self.state = DataState.NOMINAL
        self.size = 0  # bytes of content so far, as sent (dots included)
        # The CRLF that ended the DATA command begins the buffer, so the end
        # marker and dot-stuffing look the same on the first line as on any.
        self._buf = bytearray(CRLF)
        self._counted = len(CRLF)  # the buffer up to here is in `size`
        self._line_start = len(CRLF)  # where the line not yet ended begins
        self._content: bytes | None = None

    @property
    def done(self) -> bool:
        return self._content is not None

    @property
    def content(self) -> bytes:
        """The message, dot-stuffing undone (empty unless `state` is NOMINAL)."""
        if self._content is None:
            raise RuntimeError("DATA has not ended yet")
        return self._content

    def feed(self, chunk: bytes) -> bytes | None:
        """Take the next bytes; once the end is in them, return what follows it."""
        if self._content is not None:
            raise RuntimeError("DATA has already ended")
        buf = self._buf
        search_from = max(0, len(buf) - (len(END) - 1))
        buf += chunk
        end = buf.find(END, search_from)
        stop = len(buf) if end == -1 else end + len(CRLF)  # the last line keeps its CRLF
        # (`stop` may come before `_counted`: a dot and CR counted as content
        # turned out to begin the end marker. Until the end is seen, the last
        # two bytes counted may be those.)
        self.size += stop - self._counted
        self._counted = stop
        sure = self.size if end != -1 else self.size - 2
        if self.size_limit is not None and sure > self.size_limit:
            self.state = DataState.TOO_MUCH  # over the size limit: nothing else matters
        elif self.state is DataState.NOMINAL:
            self._check_lines(stop)
        if end == -1:
            if self.state is not DataState.NOMINAL:
                # Drop the content, all but what the end marker could begin with.
                drop = max(0, len(buf) - (len(END) - 1))
                del buf[:drop]
                self._counted -= drop
                self._line_start = len(buf)
            return None
        rest = bytes(buf[end + len(END) :])
        if self.state is DataState.NOMINAL:
            del buf[stop:]
            # Each CRLF-dot begins a stuffed line; non-overlapping, one dot each.
            self._content = bytes(buf).replace(b"\r\n.", CRLF)[len(CRLF) :]
        else:
            self._content = b""
        self._buf = bytearray()
        return rest

    def _check_lines(self, stop: int) -> None:
        """The lines ended since the last look, and the one still open, against the limit."""
        buf = self._buf
        last = buf.rfind(CRLF, self._line_start, stop)
        if last != -1:
            lines = buf[self._line_start : last].split(CRLF)
            if max(map(len, lines)) + len(CRLF) > self.line_limit:
                self.state = DataState.TOO_LONG
                return
            self._line_start = last + len(CRLF)
        # The line not ended yet, if it is too long already: its CR may have come.
        partial = stop - self._line_start
        if partial and partial + (1 if buf[stop - 1] == ord("\r") else 2) > self.line_limit:
            self.state = DataState.TOO_LONG
