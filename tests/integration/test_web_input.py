"""Bad input to the workspace gets a clear 4xx and changes nothing; revocations hold."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.support.web import WebDesk, csrf_of, message, signed_in


@pytest.fixture
def wd(tmp_path, sqlite_url) -> Iterator[WebDesk]:
    d = WebDesk(tmp_path, sqlite_url, limits={"max_attachment_bytes": 2048,
                                              "max_message_bytes": 64 * 1024})  # fmt: skip
    yield d
    d.close()


def _events(console, number: int) -> str:
    return console.get(f"/tickets/{number}").text.split('id="events"')[1]


def test_bad_forms_and_uploads_change_nothing(wd):
    wd.send(message("Printer jam", "Tray 4."))
    wd.wait_ticket(1)
    console = signed_in(wd, "anna@example.com")
    page = console.get("/tickets/1").text
    csrf = csrf_of(page)
    # mail over plain SMTP with no signature: its sender is not verified (issue 14)
    assert page.count("SENDER NOT VERIFIED") == 1
    before = _events(console, 1)

    big = console.post("/tickets/1/reply", data={"csrf": csrf, "text": "see file"},
                       files={"files": ("dump.bin", b"x" * 4096, "application/octet-stream")})  # fmt: skip
    assert big.status_code == 413 and "2048" in big.text
    huge = console.post("/tickets/1/note", data={"csrf": csrf, "text": "x" * 200_000})
    assert huge.status_code == 413
    bad = console.post("/tickets/1/priority", data={"csrf": csrf, "priority": "P9"})
    assert bad.status_code == 422 and "priority" in bad.text
    empty = console.post("/tickets/1/reply", data={"csrf": csrf, "text": "   "})
    assert empty.status_code == 422
    broken = console.post("/tickets/1/note", content=b"--xyz\r\nnot multipart at all",
                          headers={"content-type": "multipart/form-data; boundary=xyz"})  # fmt: skip
    assert broken.status_code in (400, 403, 422)
    assert console.post("/tickets/999/take", data={"csrf": csrf}).status_code == 404
    assert console.get("/tickets/999").status_code == 404
    assert console.get("/tickets/abc").status_code == 422
    stale = console.post(
        "/tickets/1/take", data={"csrf": csrf, "version": "2020-01-01T00:00:00+00:00"}
    )
    assert stale.status_code == 409
    assert _events(console, 1) == before  # nothing of the above was done

    ok = console.post("/tickets/1/reply", data={"csrf": csrf, "text": "see file"},
                      files={"files": ("log.txt", b"small log", "text/plain")})  # fmt: skip
    assert ok.status_code == 303
    assert "log.txt" in console.get("/tickets/1").text


def test_revoked_session_and_revoked_requester_links(wd, tmp_path):
    wd.send(message("Laptop", "It will not boot."))
    ack = wd.wait_mail(lambda m: "bob@example.org" in str(m["To"]))
    link = re.search(r"http://[^/\s]+(/r/1/\S+)", ack.get_body(("plain",)).get_content()).group(1)
    console = signed_in(wd, "anna@example.com")
    assert console.get(link).status_code == 200
    config = tmp_path / "maild.toml"
    config.write_text(f'[database]\nurl = "{wd.settings.database.url}"\n[helpdesk]\n'
                      f'addresses = ["help@example.com"]\ndomain = "helpdesk.example.com"\n'
                      f'secret_file = "{wd.settings.helpdesk.secret_file}"\n'
                      f'[outgoing]\nmaildir = "{wd.settings.outgoing.maildir}"\n')  # fmt: skip

    def maild(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "maild", "--config", str(config), *args],
                              capture_output=True, text=True, timeout=60, check=True).stdout  # fmt: skip

    listed = maild("web", "sessions")
    assert "anna@example.com" in listed
    session_id = listed.split()[0]
    assert "1 session(s) revoked" in maild("web", "sessions", "--revoke", session_id)
    r = console.get("/?view=open")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert "ticket #1: requester links" in maild("web", "revoke-links", "1")
    assert console.get(link).status_code == 404


def test_console_speaks_the_agents_language(wd):
    fred = signed_in(wd, "fred@example.com")
    page = fred.get("/").text
    assert '<html lang="fi">' in page and "Kaikki avoimet" in page
    anna = signed_in(wd, "anna@example.com")
    assert "All open" in anna.get("/").text
    # the desk's refusals (Phrases) are said in the agent's language too
    wd.send(message("Printer jam", "Tray 4."))
    wd.wait_ticket(1)
    csrf = csrf_of(fred.get("/tickets/1").text)
    refused = fred.post("/tickets/1/merge", data={"csrf": csrf, "into": "1"})
    assert refused.status_code == 409 and "ei voi yhdistää itseensä" in refused.text
    refused = anna.post("/tickets/1/merge", data={"csrf": csrf_of(anna.get("/tickets/1").text),
                                                  "into": "1"})  # fmt: skip
    assert "cannot be merged into itself" in refused.text


def test_requester_rating_needs_the_page_token_and_a_score_from_1_to_5(wd):
    """A rating closes a resolved ticket: a forged or bad one must change nothing."""
    wd.send(message("Scanner offline", "The scanner on floor 2 is offline."))
    ack = wd.wait_mail(lambda m: "bob@example.org" in str(m["To"]))
    path = re.search(r"http://[^/\s]+(/r/1/\S+)", ack.get_body(("plain",)).get_content()).group(1)
    console = signed_in(wd, "anna@example.com")
    console.post("/tickets/1/resolve", data={"csrf": csrf_of(console.get("/tickets/1").text)})
    bob = httpx.Client(base_url=wd.url, timeout=30, headers={"origin": wd.url})
    csrf = csrf_of(bob.get(path).text)
    before = _events(console, 1)

    assert bob.post(f"{path}/rate", data={"score": "1"}).status_code == 403  # no token
    other = bob.post(f"{path}/rate", data={"csrf": csrf_of(console.get("/tickets/1").text),
                                          "score": "1"})  # fmt: skip
    assert other.status_code == 403  # the console's token is not this page's
    foreign = httpx.post(f"{wd.url}{path}/rate", data={"csrf": csrf, "score": "1"},
                         headers={"origin": "https://evil.example"}, timeout=30)  # fmt: skip
    assert foreign.status_code == 403
    for score in ("0", "6", "", "abc", "4.5", "-1"):
        bad = bob.post(f"{path}/rate", data={"csrf": csrf, "score": score})
        assert bad.status_code == 422 and "from 1 to 5" in bad.text, score
    long = bob.post(f"{path}/rate", data={"csrf": csrf, "score": "3", "comment": "x" * 2001})
    assert long.status_code == 422
    assert bob.post(f"{path.rsplit('.', 1)[0]}.x/rate", data={"csrf": csrf, "score": "3"}
                    ).status_code == 404  # fmt: skip
    page = console.get("/tickets/1").text
    assert _events(console, 1) == before and 'id="rating"' not in page
    assert 'id="status">resolved<' in page
