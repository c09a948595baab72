"""DATA as the network delivers it: in pieces, pipelined, slowly, dot-stuffed
(`maild.intake.smtpdata`, read in chunks by `maild.intake.smtp`). A real
daemon, a real socket."""

from __future__ import annotations

import socket
import time

from tests.integration.test_smtp_hardening import inbound_rows

MESSAGE = (b"From: Bob <bob@example.org>\r\nTo: help@example.com\r\nSubject: %s\r\n"
           b"Message-ID: <%s@example.org>\r\n\r\nThe printer jams.\r\n")  # fmt: skip


def message(tag: bytes, body: bytes = b"") -> bytes:
    return MESSAGE % (tag, tag) + body


def replies(sock: socket.socket, count: int) -> list[bytes]:
    """The next `count` replies (multi-line ones as one), however they arrive."""
    data = b""
    out: list[bytes] = []
    while len(out) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {out!r}"
        data += chunk
        while b"\r\n" in data and len(out) < count:
            line, data = data.split(b"\r\n", 1)
            if line[3:4] != b"-":
                out.append(line)
    return out


def session(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    assert replies(sock, 1)[0].startswith(b"220")
    sock.sendall(b"EHLO client.example.org\r\n")
    assert replies(sock, 1)[0].startswith(b"250")
    return sock


ENVELOPE = b"MAIL FROM:<bob@example.org>\r\nRCPT TO:<help@example.com>\r\nDATA\r\n"


def test_pipelined_commands_after_the_end_of_data_are_answered_in_order(sqlite_url, daemon_factory):
    """What follows ".CRLF" in the same packet is the next commands, not lost, not content."""
    running = daemon_factory(sqlite_url)
    sock = session(running.port)
    with sock:
        sock.sendall(ENVELOPE)
        assert [r[:3] for r in replies(sock, 3)] == [b"250", b"250", b"354"]
        # The end of the first message and the whole next transaction in one write.
        sock.sendall(message(b"first", b"..dot-stuffed line\r\n") + b".\r\n" + ENVELOPE)
        first = replies(sock, 4)
        assert [r[:3] for r in first] == [b"250", b"250", b"250", b"354"], first
        sock.sendall(message(b"second") + b".\r\nQUIT\r\n")
        assert [r[:3] for r in replies(sock, 2)] == [b"250", b"221"]
    rows = inbound_rows(sqlite_url)
    assert len(rows) == 2
    assert rows[0].endswith(message(b"first", b".dot-stuffed line\r\n"))  # one dot taken off
    assert rows[1].endswith(message(b"second"))


def test_a_message_cut_anywhere_by_the_network_arrives_whole(sqlite_url, daemon_factory):
    """Dots at line starts and the end marker split across packets, byte by byte."""
    running = daemon_factory(sqlite_url)
    body = b"..\r\n...three\r\nlast line\r\n"
    wire = message(b"pieces", body) + b".\r\n"
    sock = session(running.port)
    with sock:
        sock.sendall(ENVELOPE)
        assert replies(sock, 3)[2].startswith(b"354")
        cut = len(wire) - len(b"\r\n...three\r\nlast line\r\n.\r\n")
        sock.sendall(wire[:cut])
        for byte in wire[cut:]:  # each its own packet (TCP_NODELAY), read on its own
            sock.sendall(bytes([byte]))
            time.sleep(0.005)
        assert replies(sock, 1)[0].startswith(b"250")
        sock.sendall(b"QUIT\r\n")
        assert replies(sock, 1)[0].startswith(b"221")
    (row,) = inbound_rows(sqlite_url)
    assert row.endswith(message(b"pieces", b".\r\n..three\r\nlast line\r\n"))


def test_a_line_of_1000_characters_is_refused_and_the_session_goes_on(sqlite_url,
                                                                       daemon_factory):  # fmt: skip
    running = daemon_factory(sqlite_url)
    sock = session(running.port)
    with sock:
        sock.sendall(ENVELOPE)
        assert replies(sock, 3)[2].startswith(b"354")
        sock.sendall(message(b"long", b"x" * 999 + b"\r\n" + b"y" * 1000 + b"\r\n") + b".\r\n")
        assert replies(sock, 1)[0].startswith(b"500 5.5.2 Line too long")
        sock.sendall(ENVELOPE)
        assert replies(sock, 3)[2].startswith(b"354")
        sock.sendall(message(b"fine", b"x" * 999 + b"\r\n") + b".\r\n")  # 1,001 with its CRLF
        assert replies(sock, 1)[0].startswith(b"250")
    (row,) = inbound_rows(sqlite_url)
    assert b"Subject: fine" in row


def test_a_slow_sender_is_not_cut_off_while_its_message_keeps_coming(sqlite_url, daemon_factory):
    """The idle timeout counts from the last bytes received, not from the DATA command."""
    running = daemon_factory(sqlite_url, smtp={"timeout_seconds": 1.0})
    sock = session(running.port)
    with sock:
        sock.sendall(ENVELOPE)
        assert replies(sock, 3)[2].startswith(b"354")
        sock.sendall(message(b"slow"))
        for i in range(8):  # 3.2 s in all, never 1 s without a byte
            time.sleep(0.4)
            sock.sendall(b"line %d of a slow link\r\n" % i)
        sock.sendall(b".\r\n")
        assert replies(sock, 1)[0].startswith(b"250")
    (row,) = inbound_rows(sqlite_url)
    assert row.endswith(b"line 7 of a slow link\r\n")
