"""The command line as an MTA, a migrating admin and an operator use it."""

from __future__ import annotations

import json
import os
import resource
import socket
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from maild.mail.dates import format_when

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
from corpus import generate, write_maildir, write_mbox  # noqa: E402

from tests.support.desk import make_message  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "mail"


@pytest.fixture
def config(tmp_path, db_url) -> Path:
    cfg = tmp_path / "maild.toml"
    cfg.write_text(
        f'[database]\nurl = "{db_url}"\n'
        '[helpdesk]\naddresses = ["help@example.com", "it@example.com"]\n'
        f'secret_file = "{tmp_path / "secret.key"}"\n'
        f'[outgoing]\nmaildir = "{tmp_path / "outgoing"}"\n'
        "[worker]\nparse_processes = 0\n"
    )
    return cfg


def maild(config: Path, *args: str, stdin: bytes | None = None, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", "maild", "--config", str(config), *args],
        input=stdin, capture_output=True, timeout=120, env={**os.environ, **(env or {})},
    )  # fmt: skip


def tickets(config: Path) -> list[dict]:
    proc = maild(config, "tickets", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_ingest_commits_then_exits_0_and_dedupes(config):
    raw = make_message()
    first = maild(config, "ingest", stdin=raw)
    assert first.returncode == 0, first.stderr
    assert b"stored as inbound 1" in first.stderr
    again = maild(config, "ingest", stdin=raw)
    assert again.returncode == 0 and b"duplicate of inbound 1" in again.stderr


def test_ingest_not_a_message_exits_65_and_keeps_the_bytes(config):
    garbage = (FIXTURES / "garbage.bin.eml").read_bytes()
    proc = maild(config, "ingest", stdin=garbage)
    assert proc.returncode == 65
    assert b"not an email message" in proc.stderr
    q = json.loads(maild(config, "quarantine", "list", "--json").stdout)
    assert len(q) == 1 and q[0]["source"] == "ingest" and q[0]["size"] == len(garbage)


def test_ingest_empty_input_exits_65(config):
    assert maild(config, "ingest", stdin=b"").returncode == 65


def test_ingest_oversize_exits_65(config, tmp_path):
    cfg = config.read_text() + "[limits]\nmax_message_bytes = 2048\n"
    config.write_text(cfg)
    proc = maild(config, "ingest", stdin=make_message(body="x\n" * 3000))
    assert proc.returncode == 65 and b"larger than" in proc.stderr


def test_ingest_temporary_failure_exits_75(tmp_path):
    """The database server does not answer: the MTA keeps the message and retries."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    cfg = tmp_path / "broken.toml"
    cfg.write_text(f'[database]\nurl = "postgresql+psycopg://maild:maild@127.0.0.1:{port}/maild"\n'
                   f'[helpdesk]\nsecret_file = "{tmp_path / "secret.key"}"\n'
                   f'[outgoing]\nmaildir = "{tmp_path / "outgoing"}"\n')  # fmt: skip
    proc = maild(cfg, "ingest", stdin=make_message())
    assert proc.returncode == 75, proc.stderr
    assert b"try again later" in proc.stderr and b"Traceback" not in proc.stderr


def test_ingest_on_a_full_disk_exits_75_and_keeps_the_database_intact(sqlite_url, tmp_path):
    """README: disk full gives `maild ingest` exit 75 (the MTA keeps the mail and
    retries). The disk is "full" past a file-size limit on the ingest process."""
    db_file = Path(sqlite_url.removeprefix("sqlite:///"))
    cfg = tmp_path / "maild.toml"
    cfg.write_text(f'[database]\nurl = "{sqlite_url}"\n'
                   f'[helpdesk]\nsecret_file = "{tmp_path / "secret.key"}"\n'
                   f'[outgoing]\nmaildir = "{tmp_path / "outgoing"}"\n')  # fmt: skip
    assert maild(cfg, "ingest", stdin=make_message(message_id="<room@example.org>")).returncode == 0
    limit = db_file.stat().st_size + 200_000
    big = make_message(message_id="<full@example.org>", body="a long log of the failure\n" * 40_000)

    def full_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "maild", "--config", str(cfg), "ingest"],
                          input=big, capture_output=True, timeout=120, preexec_fn=full_disk)  # fmt: skip
    assert proc.returncode == 75, proc.stderr
    assert b"try again later" in proc.stderr and b"Traceback" not in proc.stderr
    conn = sqlite3.connect(db_file)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("select message_id from inbound").fetchall() == [
            ("<room@example.org>",)
        ]
    finally:
        conn.close()
    # Room again: the MTA's retry is stored.
    again = maild(cfg, "ingest", stdin=big)
    assert again.returncode == 0 and b"stored as inbound 2" in again.stderr


def test_ingest_to_names_the_address(config):
    assert maild(config, "ingest", "--to", "it@example.com", stdin=make_message()).returncode == 0
    assert maild(config, "import", str(FIXTURES / "no-such-file")).returncode == 66
    out = maild(config, "drain")
    assert out.returncode == 0, out.stderr
    assert b"1 message(s) processed" in out.stdout
    (t,) = tickets(config)
    assert t["address"] == "it@example.com"


@pytest.mark.parametrize("form", ["mbox", "maildir"])
def test_import_threads_an_archive_and_is_idempotent(config, tmp_path, form):
    corpus = generate(120, seed=3)
    path = tmp_path / f"archive.{form}"
    if form == "mbox":
        write_mbox(corpus, path)
    else:
        write_maildir(corpus, path)
    proc = maild(config, "import", "--no-notify", str(path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    threads = len({m.thread for m in corpus})
    replies = sum(m.is_reply for m in corpus)
    assert f"tickets created:   {threads}" in out
    assert f"replies threaded:  {replies}" in out
    assert "quarantined:       0" in out
    assert len(tickets(config)) == threads
    assert not (tmp_path / "outgoing" / "new").exists() or not list(
        (tmp_path / "outgoing" / "new").iterdir()
    )
    again = maild(config, "import", "--no-notify", str(path))
    assert f"already stored:    {len(corpus)}" in again.stdout.decode()
    assert len(tickets(config)) == threads


def test_import_with_acknowledgements(config, tmp_path):
    corpus = generate(20, seed=4)
    write_mbox(corpus, tmp_path / "a.mbox")
    proc = maild(config, "import", str(tmp_path / "a.mbox"))
    assert proc.returncode == 0, proc.stderr
    threads = len({m.thread for m in corpus})
    assert f"acknowledgements:  {threads} sent" in proc.stdout.decode()
    assert len(list((tmp_path / "outgoing" / "new").iterdir())) == threads


def test_views_json_shapes(config):
    maild(config, "ingest", stdin=(FIXTURES / "rfc2231_filename.eml").read_bytes())
    assert maild(config, "drain").returncode == 0  # processes it and sends the ack
    (t,) = tickets(config)
    assert set(t) >= {"number", "subject", "status", "type", "category", "priority", "requester",
                      "created_at", "first_response_due", "parent"}  # fmt: skip
    shown = json.loads(maild(config, "ticket", "show", str(t["number"]), "--json").stdout)
    assert shown["number"] == t["number"]
    assert [a["direction"] for a in shown["articles"]] == ["in", "out"]
    assert shown["articles"][0]["attachments"] and shown["events"]
    box = json.loads(maild(config, "outbox", "list", "--json").stdout)
    assert box[0]["status"] == "sent" and box[0]["ticket"] == t["number"]
    text = maild(config, "ticket", "show", str(t["number"])).stdout.decode()
    assert f"Ticket #{t['number']}" in text and "[attachment " in text
    # Times in the text form are the desk's, written as the mail writes them.
    helsinki = maild(config, "ticket", "show", str(t["number"]),
                     env={"MAILD_HELPDESK__TIMEZONE": "Europe/Helsinki"}).stdout.decode()  # fmt: skip
    due = datetime.fromisoformat(t["first_response_due"])
    assert f"first response due {format_when(due, 'Europe/Helsinki')}" in helsinki
    assert " EET" in helsinki or " EEST" in helsinki
    missing = maild(config, "ticket", "show", "999")
    assert missing.returncode == 66 and b"no ticket #999" in missing.stderr
    assert maild(config, "tickets", "list", "--status", "closed", "--json").stdout.strip() == b"[]"
