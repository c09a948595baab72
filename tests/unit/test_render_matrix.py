"""Every template x every language x the cases that break layouts (maild.mail.render).

What a reader would notice: a sentence running into the next (".It"), a
line too long for a phone or a terminal, a date in ISO form or in UTC, a
sentence left in English in Finnish or Swedish mail, a greeting with an
address in it, HTML that does not parse, a security ticket's subject leaking
to someone outside the security group.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from types import SimpleNamespace as NS
from typing import Any

import pytest

from maild.config.settings import SlaSettings
from maild.desk import report, weekly
from maild.mail.phrases import Phrase
from maild.mail.render import TEMPLATES, Renderer, builtin_templates_dir
from maild.pipeline import closure
from maild.pipeline.commands import SYNTAX

LANGUAGES = sorted(
    p.name for p in builtin_templates_dir().iterdir() if (p / "ack.txt.j2").is_file()
)
VARIANTS = ("ordinary", "security", "long_name", "no_name", "notes", "p1")
AGENT_TEMPLATES = {t for t in TEMPLATES if t.startswith(("agent_", "sla_", "regulator_"))}
T0 = datetime(2026, 12, 4, 7, 45, tzinfo=UTC)  # 9.45 in Helsinki
RENDERER = Renderer(timezone="Europe/Helsinki")

# What a requester or agent wrote, in the language of the mail (it is quoted back).
WRITTEN = {
    "en": ("Printer on the third floor shows error E42", "The printer shows error E42.\n\nBob",
           "I replaced the fuser; it prints again."),
    "fi": ("Kolmannen kerroksen tulostin näyttää virhettä E42", "Tulostin näyttää virhettä E42.\n\nMaija",
           "Vaihdoin kiinnitysyksikön, ja tulostin toimii taas."),
    "sv": ("Skrivaren på tredje våningen visar fel E42", "Skrivaren visar fel E42.\n\nMaja",
           "Jag bytte fixeringsenheten, och skrivaren fungerar igen."),
}  # fmt: skip
LONG_NAME = "Maria-Kristiina Vähämäki-Lindqvist af Forselles-Wrede von Bonsdorff"
# English function words and labels that no Finnish or Swedish mail should contain.
ENGLISH = frozenset(
    [
        "the",
        "and",
        "is",
        "are",
        "your",
        "you",
        "we",
        "our",
        "this",
        "that",
        "with",
        "for",
        "was",
        "has",
        "have",
        "will",
        "please",
        "not",
        "of",
        "by",
        "from",
        "reply",
        "ticket",
        "message",
        "requester",
        "priority",
        "due",
        "status",
    ]
)
# ... except where the word is the language's own ("status" is Swedish too).
OWN_WORDS = {"sv": {"status"}}
# What a monitor said (maild.pipeline.alertmail.alert_context): its own words, untranslated.
ALERT = NS(source="Nagios", host="web01", service="HTTP", state="CRITICAL", label="web01/HTTP",
           summary="HTTP CRITICAL - 503 Service Unavailable - 0.012 second response time")  # fmt: skip
# The events and cases of a template beyond the default context, each rendered in
# every language and variant: (its name in the test id, what it adds to the context).
CASES: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "agent_update": [
        ("pending_user", {}),
        *(
            (e, {"event": e})
            for e in (
                "reopened",
                "reply",
                "assigned",
                "priority",
                "security",
                "regulator_notified",
                "stranger",
                "unassigned",
            )
        ),
        (
            "mail_dead",
            {
                "event": "mail_dead",
                "to": "maria.vahamaki-lindqvist@example.org",
                "kind": "resolved",
                "outbox": 77,
                "error": "550 5.1.1 <maria.vahamaki-lindqvist@example.org>: mailbox unknown",
            },
        ),
        ("confirmed", {"event": "confirmed", "closed": True, "note": ""}),
        ("confirmed_open", {"event": "confirmed", "closed": False}),
        ("rated", {"event": "rated", "score": 5, "closed": True}),
        ("rated_open", {"event": "rated", "score": 2, "closed": False, "note": ""}),
    ],
    "agent_alert": [
        (
            e,
            {
                "event": e,
                "alert": ALERT,
                "occurrences": None if e == "new" else 3,
                "flaps": 1,
                "category": "monitoring",
            },
        )
        for e in ("new", "worse", "recovered", "flapping")
    ],
    "agent_major": [
        (
            "opened",
            {
                "event": "opened",
                "actor": "maild",
                "note": "",
                "why": "7 new incidents of category hardware within 30 minutes",
            },
        ),
        ("declared", {"event": "declared", "children": []}),
    ],
    "major_known": [("known", {"major": 4300})],
    "resolved": [("resolved", {}), ("auto", {"auto": True}), ("major", {"major": 4300})],
}
RENDERED = [(t, case) for t in TEMPLATES for case, _ in CASES.get(t, [("", {})])]
ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
RUN_ON = re.compile(r"[a-zåäö0-9)\"][.!?:][A-ZÅÄÖ][a-zåäö]")


def context(template: str, language: str, variant: str, case: str = "") -> dict[str, Any]:
    subject, summary, note = WRITTEN.get(language, WRITTEN["en"])
    security = variant == "security"
    name = {"long_name": LONG_NAME, "no_name": ""}.get(variant, "Bob Customer")
    ticket = NS(
        number=4242, subject=subject, priority=1 if variant in ("security", "p1") else 3,
        type="incident", category="security" if security else "hardware", status="pending_user",
        tier=3 if security else 1, impact=3, urgency=2, security=security, created_at=T0,
        first_response_due=T0 + timedelta(hours=2), first_response_at=None,
        resolution_due=T0 + timedelta(hours=24), resolved_at=None,
        regulator_due=T0 + timedelta(hours=72) if security else None,
    )  # fmt: skip
    ctx: dict[str, Any] = {
        "helpdesk": NS(
            name="IT-tuki" if language == "fi" else "IT Desk", address="help@example.com"
        ),
        "ticket": ticket,
        "requester": NS(name=name, email="maria.vahamaki-lindqvist@example.org"),
        "reopen_days": 14.0,
        "personal": True,
        "summary": summary,
        "first_response_due": ticket.first_response_due,
        "resolution_due": ticket.resolution_due,
        "parent_id": 4100,
        "questions": ["?"] if False else [],
        "security": security,
        "hierarchical": variant == "p1",
        "notes": [
            Phrase(
                "limits.attachment_too_large",
                filename="scan.pdf",
                size=31_000_000,
                limit=20 * 1024 * 1024,
            ),
            Phrase("limits.attachments_dropped", count=2, limit=100),
            Phrase("limits.original_attached"),
        ]
        if variant == "notes"
        else [],  # fmt: skip
        "role": "hierarchical" if variant == "p1" else "tier",
        # maild's own alert to agents is restricted too (en/alert.txt.j2)
        "restricted": security and (template in AGENT_TEMPLATES or template == "alert"),
        "event": "pending_user",
        "by_reply": True,
        "note": note,
        "actor": "anna@example.com",
        "author": name or "maria.vahamaki-lindqvist@example.org",
        "old": "P3",
        "from_tier": 1,
        "breach": "first_response",
        "reason": "",
        "target": "resolution",
        "due": T0 + timedelta(hours=18),
        "targets": ["first_response", "resolution"],
        "elapsed_hours": 24,
        "overdue": False,
        "left_hours": 48,
        "steps": [
            {"label": "#status resolved", "changes": [("status", "open", "resolved")]},
            {"label": "reply", "changes": []},
        ],  # fmt: skip
        "replied": True,
        "errors": [
            Phrase("commands.refused", line="#priority P9", reason=Phrase("commands.priority")),
            Phrase(
                "commands.step",
                step=Phrase("commands.your_reply"),
                reason=Phrase("actions.finished", number=4242, status="closed"),
            ),
        ],  # fmt: skip
        "syntax": list(SYNTAX),
        "sender": "mallory@evil.example",
        "subject": subject,
        "received_at": T0,
        "reasons": [
            Phrase("auth.not_agent", sender="mallory@evil.example"),
            Phrase("auth.expired", expires=datetime(2026, 11, 1).date()),
            Phrase(
                "auth.both",
                first=Phrase("auth.missing"),
                second=Phrase("auth.outside", authserv="mx.example.com"),
            ),
        ],  # fmt: skip
        "headline": Phrase("alert.undeliverable", email="maria@example.org"),
        "details": [
            Phrase("alert.status", status="5.1.1"),
            Phrase("alert.diagnostic", diagnostic=Phrase("alert.none_given")),
        ],
        "advice": [] if template != "alert" else Phrase("alert.undeliverable_advice"),
        "closes_at": T0 + timedelta(days=3),
        "waiting_since": T0 - timedelta(days=2),
        "resolves_at": T0 + timedelta(days=5),
        "text": note,
        "agent": NS(name="Anna Agent"),
        "start": T0 + timedelta(days=1),
        "end": T0 + timedelta(days=1, minutes=30),
        "link": "https://meet.example.com/abc",
        # added by other features: past fixes (search), list mail (issue 15), quotes (issue 20)
        "suggestions": [
            NS(number=3999, subject=subject, resolution=note + "\n" + " ".join([note] * 3))
        ],
        "unacknowledged": "it-all@example.com" if variant == "ordinary" else "",
        "quote_kept": variant == "ordinary",
        # trust (issue 14): copies not taken in, an unverified sender, a watcher
        # dropped, a digest of held notices
        "copied": 2 if variant == "ordinary" else 0,
        "unverified": "it neither came to its reply address nor answers our mail"
        if variant == "notes"
        else "",
        "removed_by": "maria.vahamaki-lindqvist@example.org",
        "held_since": T0 - timedelta(hours=1),
        # the web workspace (issue 13): the requester's page, a sign-in link's lifetime
        "requester_link": "https://help.example.com/r/4242/tpinod.akzynu3ocpeqrjt4rtvzrw5ev4"
        if variant in ("ordinary", "long_name")
        else None,
        "minutes": 15,
        "items": [
            {"number": 4242, "subject": subject, "kind": "ack"},
            {"number": 4243, "subject": subject, "kind": "status"},
            {"number": 4244, "subject": subject, "kind": "major_known"},
        ],
        # proactive (issue 16): a major incident's reports (their subjects are the
        # requesters' words, restricted like the ticket's)
        "children": [NS(number=4240, subject=subject), NS(number=4241, subject=subject)],
    }
    if template == "weekly_report":
        ctx.update(weekly_context(ctx["helpdesk"], variant))
    extra = dict(dict(CASES.get(template, [])).get(case, {}))
    if "category" in extra and not security:
        ticket.category = extra["category"]
    extra.pop("category", None)
    ctx.update(extra)
    return ctx


def _group(key: str, tickets: int, fr: float | None, res: float | None, breaches: int) -> dict:
    """One row of `maild.desk.report.build`'s by_priority or by_category."""
    p = int(key[1:]) - 1 if key in ("P1", "P2", "P3", "P4") else None
    sla = SlaSettings()

    def measure(median: float | None, target: tuple[float, ...]) -> dict[str, Any]:
        measured = tickets if median is not None else 0
        within = max(0, measured - breaches)
        return {"measured": measured, "median_h": median,
                "p90_h": None if median is None else round(median * 1.8, 2),
                "target_h": None if p is None else target[p], "within_target": within,
                "within_target_pct": round(100 * within / measured, 2) if measured else None,
                }  # fmt: skip

    return {"key": key, "tickets": tickets,
            "first_response": measure(fr, sla.first_response_hours),
            "resolution": measure(res, sla.resolution_hours),
            "breaches": {"first_response": breaches, "resolution": 0}}  # fmt: skip


def weekly_context(helpdesk: NS, variant: str) -> dict[str, Any]:
    """The weekly report's context (maild.desk.weekly.template_context) for the week
    before Monday 30 November 2026: a busy week at business hours; an empty one
    (no_name); around the clock (security); slow tickets, long names (long_name)."""
    end = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)  # Monday 07:00 in Helsinki
    slow = variant == "long_name"
    if variant == "no_name":
        priorities: list[dict[str, Any]] = []
        categories: list[dict[str, Any]] = []
    else:
        priorities = [_group("P1", 1, 0.4, 3.25, 0), _group("P2", 4, 1.5, 9.0, 2),
                      _group("P3", 23, 1234.5 if slow else 1.1, 20.0, 1),
                      _group("P4", 2, None, None, 0)]  # fmt: skip
        categories = [_group("access", 9, 0.9, 5.5, 1), _group("hardware", 12, 1.6, 19.0, 2),
                      _group("monitoring" if slow else "email", 9, 1.2, None, 0)]  # fmt: skip
    tickets = sum(g["tickets"] for g in priorities)
    by_status = dict.fromkeys(map(str, report.STATUS_ORDER), 0)
    by_age = dict.fromkeys((label for label, _ in report.AGE_BUCKETS), 0)
    if tickets:
        by_status.update(new=2, open=5, in_progress=3, pending_user=4)
        by_age.update(zip(by_age, (3, 6, 4, 1), strict=True))
    data = {
        "generated_at": end.isoformat(), "since": (end - timedelta(days=7)).isoformat(),
        "timezone": "Europe/Helsinki",
        "calendar": "24/7" if variant == "security" else "08:00-16:00 Europe/Helsinki",
        "tickets": tickets, "by_priority": priorities, "by_category": categories,
        "breaches": {"first_response": sum(g["breaches"]["first_response"] for g in priorities),
                     "resolution": 0},
        "backlog": {"total": sum(by_status.values()), "by_status": by_status, "by_age": by_age},
    }  # fmt: skip
    sla = SlaSettings(business_hours="" if variant == "security" else "08:00-16:00",
                      holidays=("2026-12-06",) if variant == "p1" else ())  # fmt: skip
    service = weekly.service_hours(sla, "Europe/Helsinki", end)
    return weekly.template_context(helpdesk, end - timedelta(days=7), end, data, service)


class _Html(HTMLParser):
    VOID = {"br", "meta", "hr", "img", "input", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.text: list[str] = []
        self.lang = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "html":
            self.lang = dict(attrs).get("lang") or ""
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def words(text: str) -> set[str]:
    """The words of `text`, leaving out commands an agent types (#status, maild ticket ...)
    and names of files and addresses (original-message.eml)."""
    text = re.sub(r"#\w+|\bmaild\s+ticket\b|[\w.-]+[.@][\w.-]+", " ", text)
    return set(re.findall(r"[a-zåäö]+", text.lower()))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize(("template", "case"), RENDERED,
                         ids=[f"{t}-{c}" if c else t for t, c in RENDERED])  # fmt: skip
def test_every_template_reads_right(template, case, language, variant):
    ctx = context(template, language, variant, case)
    out = RENDERER.render(template, language, ctx)
    parts = [("subject", out.subject), ("text", out.text)]
    if out.html is not None:
        parser = _Html()
        parser.feed(out.html)
        parser.close()
        assert not parser.problems and not parser.stack, (parser.problems, parser.stack)
        assert parser.lang == language, "the HTML part names its language"
        parts.append(("html", " ".join("".join(parser.text).split())))
    for name, text in parts:
        assert not RUN_ON.search(text), f"{name}: a sentence runs into the next: {text!r}"
        if language != "en":
            assert not ISO_DATE.search(text), f"{name}: an ISO date in {language} mail"
            assert "UTC" not in text, f"{name}: UTC in {language} mail"
            english = words(text) & (ENGLISH - OWN_WORDS.get(language, set()))
            assert not english, f"{name}: English words {sorted(english)} in {language} mail"
    too_long = [line for line in out.text.split("\n") if len(line) > 78 and " " in line.strip()]
    assert not too_long, too_long
    if template not in AGENT_TEMPLATES and template not in ("alert", "reply", "weekly_report"):
        greeting = out.text.split("\n", 1)[0]
        assert "@" not in greeting, "the greeting names a person, never an address"
        assert greeting.endswith(","), greeting
        after = out.text.split("\n\n", 2)[1]
        assert after[:1].isupper(), f"the text after the greeting starts with a capital: {after!r}"
    if ctx["restricted"]:
        leaked = [w for w in (ctx["ticket"].subject, ctx["requester"].email) if w in out.text]
        assert not leaked and ctx["ticket"].subject not in out.subject


WAITING = {"en": ("waiting for the requester", "your reply"),
           "fi": ("odottaa pyytäjän vastausta", "vastaustasi"),
           "sv": ("väntar på anmälarens svar", "ditt svar")}  # fmt: skip


@pytest.mark.parametrize("language", LANGUAGES)
def test_agent_mail_says_the_requester_is_awaited_not_the_agent(language):
    agent_says, requester_says = WAITING[language]
    out = RENDERER.render("agent_new", language, context("agent_new", language, "ordinary"))
    assert agent_says in " ".join(out.text.split()) and requester_says not in out.text
    status = RENDERER.render("status", language, context("status", language, "ordinary"))
    assert requester_says in status.subject.lower()


@pytest.mark.parametrize("language", LANGUAGES)
def test_html_parts_escape_what_people_wrote_once(language):
    for template in ("ack", "agent_new", "agent_rejected"):
        ctx = context(template, language, "ordinary")
        ctx["ticket"].subject = ctx["subject"] = "A <b>bold</b> & co"
        ctx["requester"].name = "Bob <script>"
        html = RENDERER.render(template, language, ctx).html
        assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in html, template
        assert "<script>" not in html and "&amp;lt;" not in html, template


# What the resolved notice tells the requester to write back, per language: the
# short replies that close the ticket, and the example of a rating.
CLOSURE = {"en": (("thanks", "solved"), "5 - quick help"),
           "fi": (("kiitos", "ratkesi"), "5 - nopea apu"),
           "sv": (("tack", "löst"), "5 - snabb hjälp")}  # fmt: skip


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_resolved_notice_asks_for_replies_maild_understands(language):
    thanks, example = CLOSURE[language]
    for case in ("resolved", "major"):
        out = RENDERER.render("resolved", language, context("resolved", language, "ordinary", case))
        text = " ".join(out.text.split())
        for word in thanks:
            assert f'"{word}"' in text and f'"{word}"' in out.html, (case, word)
            assert closure.read(word).kind == closure.Reading.THANKS, word
        assert example in text and f"<em>{example}</em>" in out.html
        reading = closure.read(example)
        assert (reading.kind, reading.score) == (closure.Reading.RATING, 5), example
        if case == "major":
            assert "#4300" in text
