"""``/api/v1`` over real HTTP: every endpoint, and the refusals (problem+json)."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.web import AGENTS, WebDesk, csrf_of, message, signed_in


@pytest.fixture
def wd(tmp_path, sqlite_url) -> Iterator[WebDesk]:
    d = WebDesk(tmp_path, sqlite_url)
    yield d
    d.close()


@pytest.fixture
def wd_any(tmp_path, db_url) -> Iterator[WebDesk]:
    """On SQLite and on PostgreSQL."""
    d = WebDesk(tmp_path, db_url)
    yield d
    d.close()


def token_for(wd: WebDesk, tmp_path, email: str) -> str:
    """`maild api-token create` as an admin runs it: the token is the last line of stdout."""
    config = tmp_path / "maild.toml"
    s = wd.settings
    agents = "".join(
        f'[[agents]]\nemail = "{a["email"]}"\nname = "{a["name"]}"\ntier = {a["tier"]}\n'
        f'groups = {json.dumps(a.get("groups", []))}\nlanguage = "{a.get("language", "")}"\n'
        for a in AGENTS
    )
    config.write_text(
        f'[database]\nurl = "{s.database.url}"\n[helpdesk]\naddresses = ["help@example.com"]\n'
        f'domain = "helpdesk.example.com"\nsecret_file = "{s.helpdesk.secret_file}"\n'
        f'[outgoing]\nmaildir = "{s.outgoing.maildir}"\n' + agents
    )
    out = subprocess.run([sys.executable, "-m", "maild", "--config", str(config), "api-token",
                          "create", "--agent", email, "--name", "monitoring"],
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def test_api_endpoints_and_refusals(wd_any, tmp_path):
    wd = wd_any
    wd.send(message("Printer jam", "The plotter shows a paper jam at tray 4."))
    wd.send(message("Phishing mail", "I clicked a phishing link.", msgid="<p1@x>"))
    wd.wait_ticket(2)
    api = httpx.Client(base_url=f"{wd.url}/api/v1", timeout=30)

    # no token, a wrong token: 401 problem+json, nothing listed
    r = api.get("/tickets")
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"] == "Bearer"
    assert api.get("/tickets", headers={"authorization": "Bearer nope"}).status_code == 401

    anna = {"authorization": f"Bearer {token_for(wd, tmp_path, 'anna@example.com')}"}
    r = api.get("/tickets", headers=anna)
    assert r.status_code == 200
    assert {t["number"] for t in r.json()["tickets"]} == {1, 2}
    r = api.get("/tickets", params={"q": "plotter"}, headers=anna)
    assert [(t["number"], t["subject"], t["status"], t["priority"])
            for t in r.json()["tickets"]] == [(1, "Printer jam", "open", "P3")]  # fmt: skip
    assert api.get("/tickets", params={"view": "nope"}, headers=anna).json()["field"] == "view"
    # keyset paging, next deadline first
    one = api.get("/tickets", params={"view": "breaching", "limit": 1}, headers=anna).json()
    assert one["count"] == 2 and len(one["tickets"]) == 1 and one["next"]
    two = api.get("/tickets", params={"view": "breaching", "limit": 1, "cursor": one["next"]},
                  headers=anna).json()  # fmt: skip
    assert len(two["tickets"]) == 1 and two["next"] is None
    assert one["tickets"][0]["number"] != two["tickets"][0]["number"]
    assert one["tickets"][0]["next_due"] <= two["tickets"][0]["next_due"]
    bad = api.get("/tickets", params={"cursor": "!!"}, headers=anna)
    assert bad.status_code == 422 and bad.json()["field"] == "cursor"
    # a word of a security incident finds nothing for an agent outside the security group
    assert api.get("/tickets", params={"q": "phishing"}, headers=anna).json()["tickets"] == []

    r = api.get("/tickets/1", headers=anna)
    assert r.status_code == 200 and "tray 4" in r.json()["articles"][0]["text"]
    assert api.get("/tickets/99", headers=anna).status_code == 404
    assert api.get("/tickets/2", headers=anna).status_code == 403  # security incident
    assert api.post("/tickets/2/take", headers=anna, json={}).status_code == 403

    # actions: take, priority, reply with a file, note; refusals change nothing
    version = api.get("/tickets/1", headers=anna).json()["version"]
    r = api.post("/tickets/1/take", headers=anna, json={"version": version})
    assert r.status_code == 200 and r.json()["events"] == ["assigned"]
    stale = api.post("/tickets/1/priority", headers=anna, json={"priority": 1, "version": version})
    assert stale.status_code == 409 and "assigned" in stale.json()["detail"]
    bad = api.post("/tickets/1/priority", headers=anna, json={"priority": 7})
    assert bad.status_code == 422 and bad.json()["field"] == "priority"
    assert api.post("/tickets/1/status", headers=anna, json={}).json()["field"] == "status"
    assert api.post("/tickets/1/fly", headers=anna, json={}).status_code == 404
    assert api.post("/tickets/99/take", headers=anna, json={}).status_code == 404
    r = api.post("/tickets/1/reply", headers=anna, json={
        "text": "Tray 4 is cleared.", "attachments": [{
            "filename": "photo.png", "content_type": "image/png",
            "data": base64.b64encode(b"\x89PNG fake").decode()}]})  # fmt: skip
    assert r.status_code == 200 and r.json()["mails"] == 1
    assert "first_response" in r.json()["events"]
    mail = wd.wait_mail(lambda m: "Tray 4 is cleared" in m.as_string())
    assert [a.get_filename() for a in mail.iter_attachments()] == ["photo.png"]
    assert api.post("/tickets/1/note", headers=anna, json={"text": "internal"}).status_code == 200
    assert api.post("/tickets/1/resolve", headers=anna, json={"note": "done"}).status_code == 200
    again = api.post("/tickets/1/resolve", headers=anna, json={"note": "done"})
    assert again.status_code == 409
    shown = api.get("/tickets/1", headers=anna).json()
    assert shown["status"] == "resolved" and shown["priority"] == "P3"
    assert [e["kind"] for e in shown["events"]].count("priority") == 0

    # a new ticket for a caller, handled as if mailed (acknowledgement and all)
    r = api.post("/tickets", headers=anna, json={
        "from": "carla@example.net", "name": "Carla", "subject": "VPN down",
        "text": "Since 9:00 nobody can connect."})  # fmt: skip
    assert r.status_code == 201, r.text
    number = r.json()["ticket"]
    assert api.get(f"/tickets/{number}", headers=anna).json()["requester"]["email"] == (
        "carla@example.net"
    )
    wd.wait_mail(lambda m: "carla@example.net" in str(m["To"]) and "VPN down" in str(m["Subject"]))
    bad = api.post("/tickets", headers=anna, json={"subject": "x", "text": "y"})
    assert bad.status_code == 422 and bad.json()["field"] == "from"

    schema = httpx.get(f"{wd.url}/api/v1/openapi.json").json()
    assert "/api/v1/tickets" in schema["paths"]


def test_revoked_token_is_refused(wd, tmp_path):
    token = token_for(wd, tmp_path, "anna@example.com")
    api = httpx.Client(base_url=f"{wd.url}/api/v1", timeout=30)
    assert api.get("/tickets", headers={"authorization": f"Bearer {token}"}).status_code == 200
    config = tmp_path / "maild.toml"
    listed = subprocess.run([sys.executable, "-m", "maild", "--config", str(config), "api-token",
                             "list"], capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    assert "anna@example.com" in listed.stdout and token not in listed.stdout
    subprocess.run([sys.executable, "-m", "maild", "--config", str(config), "api-token",
                    "revoke", "1"], check=True, timeout=60, capture_output=True)  # fmt: skip
    assert api.get("/tickets", headers={"authorization": f"Bearer {token}"}).status_code == 401


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_sign_in_link_works_once_and_only_in_the_browser_that_asked(wd):
    asking = httpx.Client(base_url=wd.url, timeout=30, headers={"origin": wd.url})
    csrf = _csrf(asking.get("/login").text)
    r = asking.post("/login", data={"email": "anna@example.com", "csrf": csrf, "next": "/"})
    assert r.status_code == 200 and 'id="sent"' in r.text
    unknown = asking.post("/login", data={"email": "nobody@example.com", "csrf": csrf,
                                          "next": "/"})  # fmt: skip
    assert unknown.status_code == 200 and 'id="sent"' in unknown.text  # the same answer
    path = urlsplit(wd.login_link("anna@example.com")).path

    other = httpx.Client(base_url=wd.url, timeout=30, headers={"origin": wd.url})
    page = other.get(path)  # a mail scanner, or someone else's browser, opening the link
    assert page.status_code == 200 and 'id="confirm"' in page.text
    r = other.post(path, data={"csrf": _csrf(page.text), "next": "/"})
    assert r.status_code == 400 and "maild_session" not in other.cookies

    page = asking.get(path)  # opening it did not use it up
    r = asking.post(path, data={"csrf": _csrf(page.text), "next": "/"})
    assert r.status_code == 303 and "maild_session" in asking.cookies
    assert asking.get("/").status_code == 200

    again = httpx.Client(base_url=wd.url, timeout=30, headers={"origin": wd.url},
                         cookies={"maild_browser": asking.cookies["maild_browser"]})  # fmt: skip
    assert again.get(path).status_code == 400  # used once already
    r = again.post(path, data={"csrf": csrf, "next": "/"})
    assert r.status_code == 400 and "maild_session" not in again.cookies


def test_sign_in_requests_are_rate_limited_per_address(wd):
    client = httpx.Client(base_url=wd.url, timeout=30, headers={"origin": wd.url})
    csrf = _csrf(client.get("/login").text)
    limit = wd.settings.web.login_per_address_per_hour
    codes = [client.post("/login", data={"email": "anna@example.com", "csrf": csrf}).status_code
             for _ in range(limit + 1)]  # fmt: skip
    assert codes == [200] * limit + [429]


def test_dashboard_shows_the_figures_and_charts(wd):
    wd.send(message("Printer jam", "Tray 4."))
    wd.wait_ticket(1)
    console = signed_in(wd, "anna@example.com")
    page = console.get("/tickets/1").text
    r = console.post("/tickets/1/resolve", data={"csrf": csrf_of(page), "note": "cleared"})
    assert r.status_code == 303
    dash = console.get("/dashboard?days=7")
    assert dash.status_code == 200
    assert re.search(r'id="tickets">1<', dash.text)
    assert 'id="mean">0.0 h<' in dash.text and 'id="within">100.0 %<' in dash.text
    assert dash.text.count("<svg") >= 6 and "Breaches by agent" in dash.text
    assert "<script" not in dash.text


def test_api_watchers_merge_unassign(wd, tmp_path):
    wd.send(message("VPN down", "Nobody can connect.", msgid="<v1@x>"))
    wd.send(message("VPN broken", "Cannot connect either.", msgid="<v2@x>",
                    sender="Carol <carol@example.org>"))  # fmt: skip
    wd.wait_ticket(2)
    api = httpx.Client(base_url=f"{wd.url}/api/v1", timeout=30,
                       headers={"authorization": f"Bearer {token_for(wd, tmp_path, 'anna@example.com')}"})  # fmt: skip
    assert api.post("/tickets/1/watch", json={"email": "boss@example.org"}).status_code == 200
    bad = api.post("/tickets/1/watch", json={"email": "help@example.com"})
    assert bad.status_code == 409  # our own address never watches
    assert [w["email"] for w in api.get("/tickets/1").json()["watchers"]] == ["boss@example.org"]
    # the requester's page acts as the requester: its link is never in a mail copied to others
    ack = wd.wait_mail(lambda m: "bob@example.org" in str(m["To"]) and "[#1]" in str(m["Subject"]))
    assert "/r/1/" in ack.as_string()
    assert api.post("/tickets/1/status", json={"status": "in_progress"}).status_code == 200
    copied = wd.wait_mail(lambda m: "boss@example.org" in str(m["Cc"]))
    assert "bob@example.org" in str(copied["To"]) and "/r/1/" not in copied.as_string()
    assert api.post("/tickets/1/unwatch", json={"email": "boss@example.org"}).status_code == 200
    assert api.get("/tickets/1").json()["watchers"] == []
    assert api.post("/tickets/1/assign", json={"agent": "Sam Security"}).status_code == 200
    assert api.get("/tickets/1").json()["assignee"]["email"] == "sam@example.com"
    assert api.post("/tickets/1/unassign", json={}).status_code == 200
    assert api.get("/tickets/1").json()["assignee"] is None
    assert api.post("/tickets/2/merge", json={"into": 2}).status_code == 409
    r = api.post("/tickets/2/merge", json={"into": 1})
    assert r.status_code == 200, r.text
    two, one = api.get("/tickets/2").json(), api.get("/tickets/1").json()
    assert two["status"] == "closed"
    assert {"number": 1, "kind": "merged into"} in two["links"]
    assert {"number": 2, "kind": "merged from"} in one["links"]
    assert "carol@example.org" in [w["email"] for w in one["watchers"]]
    wd.wait_mail(lambda m: "carol@example.org" in str(m["To"]) and "#1" in m.as_string()
                 and "continues" in m.as_string())  # fmt: skip


def _requester_page(wd: WebDesk, number: int = 1) -> tuple[httpx.Client, str, str]:
    """(a browser-like client, the requester's page path, its form token) from the ack."""
    ack = wd.wait_mail(lambda m: "bob@example.org" in str(m["To"]) and f"#{number}]" in
                       str(m["Subject"]))  # fmt: skip
    path = re.search(r"http://[^/\s]+(/r/\d+/\S+)", ack.get_body(("plain",)).get_content()).group(1)
    client = httpx.Client(base_url=wd.url, timeout=30, headers={"origin": wd.url})
    return client, path, csrf_of(client.get(path).text)


def test_requester_page_solved_still_a_problem_and_rating(wd):
    """The page's buttons are the desk's closure operations, the requester the actor."""
    wd.send(message("Printer jam", "Tray 4 again."))
    wd.wait_ticket(1)
    bob, path, csrf = _requester_page(wd)
    anna = signed_in(wd, "anna@example.com")

    def shown() -> str:
        return anna.get("/tickets/1").text

    # "It's solved" on a resolved ticket: confirmed and closed (TicketOps.confirm_solved)
    anna.post("/tickets/1/resolve", data={"csrf": csrf_of(shown()), "note": "Cleared."})
    r = bob.post(f"{path}/solved", data={"csrf": csrf})
    assert r.status_code == 303
    page = shown()
    assert 'id="status">closed<' in page and "confirmed" in page.split('id="events"')[1]
    # "Still a problem" reopens it (TicketOps.not_solved); on an open ticket it is refused
    assert bob.post(f"{path}/unsolved", data={"csrf": csrf}).status_code == 303
    assert 'id="status">open<' in shown()
    refused = bob.post(f"{path}/unsolved", data={"csrf": csrf})
    assert refused.status_code == 409 and "still open" in refused.text
    # a rating: only once it is solved; stored with its comment; a resolved ticket closes
    early = bob.post(f"{path}/rate", data={"csrf": csrf, "score": "5"})
    assert early.status_code == 409 and "rate it once it is solved" in early.text
    anna.post("/tickets/1/resolve", data={"csrf": csrf_of(shown()), "note": "Cleared again."})
    r = bob.post(f"{path}/rate", data={"csrf": csrf, "score": "2", "comment": "Took two tries."})
    assert (
        r.status_code == 303 and "Thank you for your rating" in bob.get(r.headers["location"]).text
    )
    page = shown()
    assert 'id="status">closed<' in page and 'id="rating">2/5: Took two tries.<' in page
    # changed later, on the closed ticket: the newest rating counts
    assert bob.post(f"{path}/rate", data={"csrf": csrf, "score": "4"}).status_code == 303
    assert 'id="rating">4/5<' in shown()
    assert "Your rating: 4 of 5" in bob.get(path).text


def test_the_requesters_link_is_in_their_mail_only(wd, tmp_path):
    """The link acts as the requester; the ticket's copy of the acknowledgement,
    which agents read on the console and through the API, does not carry it."""
    wd.send(message("Printer jam", "Tray 4 again."))
    wd.wait_ticket(1)
    ack = wd.wait_mail(lambda m: "bob@example.org" in str(m["To"]) and "[#1]" in str(m["Subject"]))
    link = re.search(r"http://\S+(/r/1/\S+)", ack.get_body(("plain",)).get_content()).group(1)
    anna = signed_in(wd, "anna@example.com")
    page = anna.get("/tickets/1").text
    api = httpx.Client(base_url=f"{wd.url}/api/v1", timeout=30,
                       headers={"authorization": f"Bearer {token_for(wd, tmp_path, 'anna@example.com')}"})  # fmt: skip
    shown = api.get("/tickets/1").json()
    texts = [a["text"] for a in shown["articles"]]
    assert any("personal link" in t for t in texts), texts  # the ack is on the ticket
    assert "/r/1/" not in page and all("/r/1/" not in t for t in texts)
    assert link.rsplit("/", 1)[-1] not in page  # nor its signature, in any form
    # and the requester's own link still opens their page
    bob = httpx.Client(base_url=wd.url, timeout=30)
    assert "Printer jam" in bob.get(link).text
