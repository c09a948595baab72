"""``maild tickets list`` filters and pages; ``maild ticket reply`` takes its text
from the argument, stdin or $EDITOR (issue 17)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from maild.cli import tickets as cli_tickets
from tests.support.desk import Desk, make_message, make_settings

AGENTS = [{"email": "anna@example.com", "name": "Anna Agent", "tier": 1}]


@pytest.fixture
def filled(tmp_path, db_url) -> tuple[Path, Desk]:
    """Seven tickets: #1..#7, with different priorities, tiers, assignees, statuses."""
    cfg = tmp_path / "maild.toml"
    cfg.write_text(
        f'[database]\nurl = "{db_url}"\n'
        f'[helpdesk]\nsecret_file = "{tmp_path / "secret.key"}"\n'
        f'[outgoing]\nmaildir = "{tmp_path / "outgoing"}"\n'
        "[worker]\nparse_processes = 0\n"
        '[[agents]]\nemail = "anna@example.com"\nname = "Anna Agent"\n'
    )
    desk = Desk(make_settings(tmp_path, db_url, agents=AGENTS))
    for i in range(1, 8):
        desk.process(make_message(subject=f"Problem {i}", sender=f"user{i}@example.org",
                                  message_id=f"<p{i}@example.org>"))  # fmt: skip
    with desk.ops() as ops:
        ops.set_priority(2, 1, actor="anna@example.com")
        ops.set_priority(3, 1, actor="anna@example.com")
        ops.escalate(4, actor="anna@example.com", tier=3, reason="hard")
        ops.assign(5, "anna@example.com", actor="anna@example.com")
        ops.resolve(6, actor="anna@example.com", note="done")
    desk.clock.advance(hours=30)  # every open ticket missed its target: escalated
    desk.sweep()
    yield cfg, desk
    desk.close()


def maild(cfg: Path, *args: str, stdin: bytes | None = None, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "maild", "--config", str(cfg), *args],
                          input=stdin, capture_output=True, timeout=120,
                          env={**os.environ, **(env or {})})  # fmt: skip


def numbers(cfg: Path, *args: str) -> list[int]:
    proc = maild(cfg, "tickets", "list", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    return [t["number"] for t in json.loads(proc.stdout)]


def test_filters_combine_and_accept_several_values(filled):
    cfg, _desk = filled
    assert numbers(cfg) == [7, 6, 5, 4, 3, 2, 1]
    assert numbers(cfg, "--priority", "P1") == [3, 2]
    assert numbers(cfg, "--priority", "1", "--status", "escalated") == [3, 2]  # breached
    assert numbers(cfg, "--priority", "1", "--status", "open") == []
    assert numbers(cfg, "--status", "resolved") == [6]
    assert numbers(cfg, "--status", "resolved,escalated") == [7, 6, 5, 4, 3, 2, 1]
    assert numbers(cfg, "--status", "resolved", "--status", "open") == [6]
    assert numbers(cfg, "--tier", "3") == [4]
    assert numbers(cfg, "--assignee", "anna@example.com") == [5]
    assert numbers(cfg, "--assignee", "Anna Agent") == [5]
    assert 5 not in numbers(cfg, "--assignee", "none")
    breached = numbers(cfg, "--breached")
    assert breached and 6 not in breached  # resolved at once: no breach
    unknown = maild(cfg, "tickets", "list", "--assignee", "zoe@example.com")
    assert unknown.returncode == 65 and b"no agent is called 'zoe@example.com'" in unknown.stderr


def test_paging_says_when_there_is_more_and_loses_nothing(filled):
    cfg, _desk = filled
    seen: list[int] = []
    after: list[str] = []
    for _page in range(10):
        proc = maild(cfg, "tickets", "list", "--json", "--limit", "3", *after)
        assert proc.returncode == 0, proc.stderr
        page = [t["number"] for t in json.loads(proc.stdout)]
        seen += page
        err = proc.stderr.decode()
        if "there are more tickets" not in err:
            break
        assert f"--after {page[-1]}" in err
        after = ["--after", str(page[-1])]
    assert seen == [7, 6, 5, 4, 3, 2, 1]
    text = maild(cfg, "tickets", "list", "--limit", "7")
    assert text.stderr == b"" and text.stdout.decode().count("\n") == 7
    filtered = maild(cfg, "tickets", "list", "--limit", "1", "--priority", "P1")
    assert filtered.stdout.decode().startswith("#3 ")
    assert b"--after 3" in filtered.stderr


def test_reply_from_stdin(filled):
    cfg, desk = filled
    proc = maild(cfg, "ticket", "reply", "1", "--json", stdin=b"Restart the printer, please.\n"
                 b"Then try again.\n")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mails_queued"] >= 1
    text = desk.ticket(1)["articles"][-1]["text"]
    assert "Restart the printer" in text and "Then try again." in text
    empty = maild(cfg, "ticket", "reply", "1", stdin=b"  \n")
    assert empty.returncode == 65 and b"empty" in empty.stderr


def test_reply_from_editor_leaves_out_comment_lines(monkeypatch):
    monkeypatch.setenv("VISUAL", "sed -i '1i Fixed: the toner was empty.'")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    text = cli_tickets.reply_text(None, 42)
    assert text == "Fixed: the toner was empty.\n"
    monkeypatch.setenv("VISUAL", "true")  # the user saved nothing
    assert cli_tickets.reply_text(None, 42).strip() == ""
    monkeypatch.setenv("VISUAL", "false")  # the editor failed
    assert cli_tickets.reply_text(None, 42) == ""
