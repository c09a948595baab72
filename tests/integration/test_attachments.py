"""Attachments both ways, through the daemon's real SMTP listener: agents' notices
list the requester's files and carry them up to a limit, `maild ticket
attachment` gets one out, and an agent's reply (by mail or `maild ticket reply
--attach`) relays its files to the requester and stores them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import make_msgid
from pathlib import Path

from maild.mail.dates import format_size
from tests.integration.test_fates import cli_config, query
from tests.integration.test_smtp_intake import send, wait_until
from tests.support.desk import read_maildir

AGENTS = [{"email": "anna@example.com", "name": "Anna Agent", "tier": 1}]
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 80 + b"\n%%EOF\n"  # 20 KB
ZIP = b"PK\x03\x04" + hashlib.sha256(b"logs").digest() * 1900  # 60 KB
LOGO = b"\x89PNG\r\n\x1a\n" + b"\x00" * 600


def mails_to(tmp_path: Path, address: str) -> list[EmailMessage]:
    return [m for m in read_maildir(tmp_path / "outgoing")
            if any(a.addr_spec == address for a in m["To"].addresses)]  # fmt: skip


def files_of(mail: EmailMessage) -> dict[str, bytes]:
    return {p.get_filename(): p.get_content() for p in mail.iter_attachments()}


def request_with_files() -> bytes:
    """Bob's request as Thunderbird writes it: text, then two attachments."""
    msg = EmailMessage()
    msg["From"] = "Bob Customer <bob@example.org>"
    msg["To"] = "help@example.com"
    msg["Subject"] = "Label printer prints garbage"
    msg["Message-ID"] = "<req-files@example.org>"
    msg.set_content("Hello,\n\nthe label printer prints garbage; the log and a sample are "
                    "attached.\n\nBob\n")  # fmt: skip
    msg.add_attachment(PDF, "application", "pdf", filename="sample label.pdf")
    msg.add_attachment(ZIP, "application", "zip", filename="printer-logs.zip")
    return msg.as_bytes(policy=SMTP)


def agent_reply(notice: EmailMessage, text: str, files: dict[str, bytes]) -> tuple[bytes, str]:
    """Anna answers her notice from Outlook: HTML with her inline logo, and files."""
    msg = EmailMessage()
    msg["From"] = "Anna Agent <anna@example.com>"
    rcpt = notice["Reply-To"].addresses[0].addr_spec
    msg["To"] = rcpt
    msg["Subject"] = f"RE: {notice['Subject']}"
    msg["Message-ID"] = make_msgid(domain="example.com")
    msg["In-Reply-To"] = notice["Message-ID"]
    msg["References"] = notice["Message-ID"]
    msg.set_content(f"{text}\n\nAnna\n")
    msg.add_alternative(f'<p>{text}</p><p>Anna<br><img src="cid:logo@anna"></p>', subtype="html")
    msg.get_payload()[1].add_related(LOGO, "image", "png", cid="<logo@anna>",
                                     disposition="inline", filename="image001.png")  # fmt: skip
    for name, data in files.items():
        msg.add_attachment(data, "application", "octet-stream", filename=name)
    return msg.as_bytes(policy=SMTP), rcpt


def cli(tmp_path: Path, db_url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    cfg = cli_config(tmp_path, db_url)
    cfg.write_text(
        cfg.read_text() + '[[agents]]\nemail = "anna@example.com"\nname = "Anna Agent"\n'
    )
    return subprocess.run([sys.executable, "-m", "maild", "--config", str(cfg), *args],
                          capture_output=True, timeout=120, env=os.environ.copy())  # fmt: skip


def test_attachments_both_ways(db_url, daemon_factory, tmp_path):
    running = daemon_factory(db_url, agents=AGENTS,
                             attachments={"notify_max_bytes": 40_000, "reply_max_bytes": 100_000})  # fmt: skip
    send(running.port, request_with_files())
    (notice,) = wait_until(lambda: mails_to(tmp_path, "anna@example.com"), timeout=15)
    # Anna's notice carries what fits and names the rest with the command that gets it.
    assert files_of(notice) == {"sample label.pdf": PDF}
    text = notice.get_body(("plain",)).get_content()
    assert f"sample label.pdf ({format_size(len(PDF))})" in text  # "20 kB"
    assert f"printer-logs.zip ({format_size(len(ZIP))}), not attached" in text
    assert 'maild ticket attachment 1 "printer-logs.zip"' in text

    got = tmp_path / "got.zip"
    out = cli(tmp_path, db_url, "ticket", "attachment", "1", "printer-logs.zip", "-o", str(got))
    assert out.returncode == 0, out.stderr
    assert got.read_bytes() == ZIP
    missing = cli(tmp_path, db_url, "ticket", "attachment", "1", "nope.txt")
    assert missing.returncode == 66 and b"no attachment 'nope.txt'" in missing.stderr

    # Anna answers with a file; her signature's inline logo stays behind.
    raw, rcpt = agent_reply(notice, "Install this driver fix, please.", {"fix.reg": b"REGEDIT4\n"})
    send(running.port, raw, rcpt=rcpt, sender="anna@example.com")
    wait_until(lambda: len(mails_to(tmp_path, "bob@example.org")) == 2, timeout=15)
    reply = mails_to(tmp_path, "bob@example.org")[-1]
    assert files_of(reply) == {"fix.reg": b"REGEDIT4\n"}
    assert "Install this driver fix" in reply.get_body(("plain",)).get_content()
    stored = query(db_url, "select a.direction, a.visibility, t.filename from attachment t "
                           "join article a on a.id = t.article_id where t.filename = 'fix.reg' "
                           "order by a.id")  # fmt: skip
    assert ("out", "public", "fix.reg") in [tuple(r) for r in stored]

    # Too much to send: refused, nothing goes out, Anna hears why.
    raw, rcpt = agent_reply(notice, "Here is the whole image.", {"disk.img": b"\0" * 150_000})
    send(running.port, raw, rcpt=rcpt, sender="anna@example.com")
    wait_until(lambda: len(mails_to(tmp_path, "anna@example.com")) == 2, timeout=15)
    refused = mails_to(tmp_path, "anna@example.com")[-1].get_body(("plain",)).get_content()
    assert "attachments.reply_max_bytes" in refused and "disk.img" in refused
    assert len(mails_to(tmp_path, "bob@example.org")) == 2

    # The CLI's reply carries files too.
    manual = tmp_path / "Käyttöohje.pdf"
    manual.write_bytes(PDF)
    done = cli(tmp_path, db_url, "ticket", "reply", "1", "The manual is attached.",
               "--attach", str(manual), "--as", "anna@example.com")  # fmt: skip
    assert done.returncode == 0, done.stderr
    wait_until(lambda: len(mails_to(tmp_path, "bob@example.org")) == 3, timeout=15)
    assert files_of(mails_to(tmp_path, "bob@example.org")[-1]) == {"Käyttöohje.pdf": PDF}


def test_security_notices_carry_no_files_to_agents_outside_the_security_group(
    sqlite_url, daemon_factory, tmp_path
):
    running = daemon_factory(sqlite_url, agents=[
        {"email": "anna@example.com", "name": "Anna Agent", "tier": 3},
        {"email": "sara@example.com", "name": "Sara Turva", "tier": 3, "groups": ["security"]}])  # fmt: skip
    msg = EmailMessage()
    msg["From"] = "Bob Customer <bob@example.org>"
    msg["To"] = "help@example.com"
    msg["Subject"] = "Phishing mail: I clicked the link and entered my password"
    msg["Message-ID"] = "<phish@example.org>"
    msg.set_content("I clicked a phishing link and typed my password. Screenshot attached.")
    msg.add_attachment(PDF, "application", "pdf", filename="screenshot.pdf")
    send(running.port, msg.as_bytes(policy=SMTP))
    (notice,) = wait_until(lambda: mails_to(tmp_path, "anna@example.com"), timeout=15)
    assert files_of(notice) == {}
    assert "screenshot.pdf" not in notice.get_body(("plain",)).get_content()
    (secure,) = wait_until(lambda: mails_to(tmp_path, "sara@example.com"), timeout=15)
    assert files_of(secure) == {"screenshot.pdf": PDF}
