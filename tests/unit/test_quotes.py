"""Quote and signature stripping (maild.quotes) over the shapes real clients write."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import pytest

from maild.mail.parse import parse
from maild.mail.quotes import strip_reply

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "mail"
MANIFEST = tomllib.loads((FIXTURES / "MANIFEST.toml").read_text())
REPLIES = sorted(n for n, f in MANIFEST.items() if f["kind"] == "reply" and f["new_text"])


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("name", REPLIES)
def test_real_client_replies_keep_the_new_text_only(name):
    """Outlook (OWA and desktop), Gmail, Apple Mail, Thunderbird, iPhone; English and Finnish."""
    fixture = MANIFEST[name]
    stripped = strip_reply(parse((FIXTURES / fixture["file"]).read_bytes()).text)
    assert flat(fixture["new_text"]) in flat(stripped)
    for quoted in fixture["quoted_contains"]:
        assert quoted not in stripped
    assert "Sent from my iPhone" not in stripped and "Ystävällisin terveisin" not in stripped


# Agents' replies to a notification, as each client lays them out. Every case:
# (the reply, what must stay, what must go).
NOTIFICATION = (
    "A new ticket needs handling.\n\n  Ticket:    #7 VPN drops\n  Priority:  P3\n"
    "  Requester: Carol <carol@example.net>\n\nYou receive this as the group working this ticket."
)
QUOTED = "\n".join(f"> {line}" if line else ">" for line in NOTIFICATION.split("\n"))
CASES = {
    "gmail_en": (
        "#status pending_user\n\nHi Carol, which VPN client version do you run?\n\n"
        "On Mon, 30 Nov 2026 at 09:00, Help Desk <help+7.1.abcdefghijklmnopqrstuvwxyz@example.com> "
        f"wrote:\n\n{QUOTED}\n",
        ["#status pending_user", "which VPN client version"],
        ["Requester:", "wrote:", "help+7"],
    ),
    "gmail_fi": (
        "Hei Carol, mikä VPN-asiakasohjelman versio sinulla on?\n\nTerveisin\nAnna\n\n"
        "ma 30.11.2026 klo 9.00 Help Desk <help@example.com> kirjoitti:\n\n" + QUOTED + "\n",
        ["mikä VPN-asiakasohjelman versio"],
        ["Requester:", "kirjoitti", "Terveisin", "Anna"],
    ),
    "outlook_desktop_en": (
        "Please restart the VPN client and try again.\n\nKind regards\nAnna Agent\nIT Service Desk\n\n"
        "-----Original Message-----\nFrom: Help Desk <help@example.com> \n"
        "Sent: Monday, November 30, 2026 9:00 AM\nTo: Anna Agent <anna@example.com>\n"
        f"Subject: [#7] P3 new ticket: VPN drops\n\n{NOTIFICATION}\n",
        ["Please restart the VPN client"],
        ["Original Message", "Requester:", "Kind regards", "IT Service Desk"],
    ),
    "outlook_web_en": (
        "Fixed on the server side.\n\n________________________________\n"
        "From: Help Desk <help@example.com>\nSent: Monday, November 30, 2026 09:00\n"
        f"To: Anna Agent <anna@example.com>\nSubject: [#7] VPN drops\n\n{NOTIFICATION}\n",
        ["Fixed on the server side."],
        ["From: Help Desk", "Requester:"],
    ),
    "outlook_fi": (
        "Korjasin palvelimen asetukset, kokeile uudelleen.\n\nYstävällisin terveisin\nAnna\n\n"
        "Lähettäjä: Help Desk <help@example.com>\nLähetetty: maanantai 30. marraskuuta 2026 9.00\n"
        f"Vastaanottaja: Anna <anna@example.com>\nAihe: [#7] VPN katkeilee\n\n{NOTIFICATION}\n",
        ["Korjasin palvelimen asetukset"],
        ["Lähettäjä", "Requester:", "Ystävällisin"],
    ),
    "apple_mail_en": (
        "Thanks, I've reset the token.\n\n> On 30 Nov 2026, at 9.00, Help Desk <help@example.com> "
        f"wrote:\n>\n{QUOTED}\n",
        ["I've reset the token."],
        ["wrote:", "Requester:"],
    ),
    "apple_mail_fi": (
        "Nollasin tunnisteen.\n\n30.11.2026 kello 9.00, Help Desk <help@example.com> kirjoitti:\n\n"
        + QUOTED
        + "\n",
        ["Nollasin tunnisteen."],
        ["kirjoitti", "Requester:"],
    ),
    "thunderbird_en": (
        "The certificate had expired; renewed it.\n\n-- \nAnna Agent\nService Desk, ext. 4242\n\n"
        f"On 30.11.2026 9.00, Help Desk wrote:\n{QUOTED}\n",
        ["renewed it."],
        ["ext. 4242", "Requester:"],
    ),
    "thunderbird_fi": (
        "Varmenne oli vanhentunut, uusin sen.\n\nHelp Desk kirjoitti 30.11.2026 klo 9.00:\n"
        + QUOTED
        + "\n",
        ["uusin sen."],
        ["kirjoitti", "Requester:"],
    ),
    "iphone_en": (
        "#resolve\nRestarted the concentrator.\n\nSent from my iPhone\n\n"
        f"> On 30 Nov 2026, at 9.00, Help Desk <help@example.com> wrote:\n{QUOTED}\n",
        ["Restarted the concentrator."],
        ["Sent from my iPhone", "Requester:"],
    ),
    "android_fi": (
        f"Käynnistin keskittimen uudelleen.\n\nLähetetty Android-laitteesta\n\n{QUOTED}\n",
        ["Käynnistin keskittimen uudelleen."],
        ["Lähetetty Android", "Requester:"],
    ),
    "outlook_mobile_en": (
        "On it.\n\nGet Outlook for Android\n________________________________\n"
        f"From: Help Desk <help@example.com>\nSent: Monday, November 30, 2026 9:00:00 AM\n"
        f"To: anna@example.com\nSubject: [#7] VPN drops\n\n{NOTIFICATION}\n",
        ["On it."],
        ["Get Outlook", "Requester:"],
    ),
    # Interleaved answers keep the quoted line each one answers.
    "interleaved": (
        "> Ticket:    #7 VPN drops\nThat one is fixed.\n> Priority:  P3\nAnd P3 is right.\n",
        ["> Ticket:    #7 VPN drops\nThat one is fixed.", "> Priority:  P3\nAnd P3 is right."],
        ["Requester:"],
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_agent_replies_in_client_shapes(name):
    text, keep, drop = CASES[name]
    stripped = strip_reply(text)
    for snippet in keep:
        assert snippet in stripped, f"{name}: lost {snippet!r} in {stripped!r}"
    for snippet in drop:
        assert snippet not in stripped, f"{name}: kept {snippet!r} in {stripped!r}"


def test_lists_indentation_and_closings_inside_the_text_are_kept():
    text = (
        "Please try these:\n\n  1. Restart the client\n  - clear the cache\n"
        "- then sign in again\n\nThanks, that should do it. If not, reply and we call you.\n"
        "Regards,\nAnna"
    )
    stripped = strip_reply(text)
    assert "  1. Restart the client\n  - clear the cache\n- then sign in again" in stripped
    assert "Thanks, that should do it. If not, reply and we call you." in stripped
    assert not stripped.endswith("Anna")


def test_hostile_long_lines_do_not_hang_the_stripper():
    # The quote-header patterns backtrack badly on long lines: each line is only
    # searched in its head. Without that, each of these took minutes.
    for text in ("On " + "x " * 30000, "On " + "x" * 60000, ("On " + "x " * 100 + "\n") * 300):
        started = time.monotonic()
        strip_reply(text)
        assert time.monotonic() - started < 60  # milliseconds now; minutes each before


# --- where the agent's text stands: top, bottom, interleaved, or not told apart ------------

from maild.mail.quotes import split_reply  # noqa: E402

BOTTOM = (
    "On Fri, Dec 04, 2026 at 09:00:00AM +0200, Help Desk wrote:\n" + QUOTED + "\n\n"
    "#priority P2\n\nHi Carol, restarted the gateway.\n\n-- \nAnna\n"
)


def test_a_bottom_posted_answer_is_the_text_below_the_quote():
    reply = split_reply(BOTTOM)
    assert reply.layout == "bottom" and reply.certain
    assert reply.text == "#priority P2\n\nHi Carol, restarted the gateway."


def test_top_posted_text_with_its_quote_is_top():
    reply = split_reply(
        "Done.\n\nOn Fri, 4 Dec 2026, Help Desk <help@example.com> wrote:\n" + QUOTED
    )
    assert (reply.layout, reply.text) == ("top", "Done.")


def test_interleaved_answers_keep_their_question_and_drop_the_rest():
    text = (
        "On 4.12.2026 9.00, Help Desk wrote:\n> A new ticket needs handling.\n>\n"
        "> Requester: Carol\n\nCarol is in Espoo.\n\n> Priority:  P3\n\nP2 is right.\n\n"
        "> You receive this as the group working this ticket.\n"
    )
    reply = split_reply(text)
    assert reply.layout == "interleaved"
    assert reply.text == "> Requester: Carol\nCarol is in Espoo.\n\n> Priority:  P3\nP2 is right."
    assert [p.question for p in reply.parts] == [("Requester: Carol",), ("Priority:  P3",)]


def test_top_text_and_answers_below_is_interleaved():
    text = "See my answers below.\n\n> Which room?\nRoom 301.\n"
    reply = split_reply(text)
    assert reply.layout == "interleaved"
    assert reply.text == "See my answers below.\n\n> Which room?\nRoom 301."


def test_a_sentence_with_wrote_is_not_an_attribution():
    text = "As I wrote: restart the client first.\nThen sign in again.\n"
    assert split_reply(text).text == text.strip()
    assert split_reply(text).layout == "plain"


def test_an_attribution_wrapped_over_three_lines():
    text = (
        "Fixed.\n\nOn Fri, Dec 4, 2026 at 9:00 AM Help Desk\n<help+42.1.20270304.abc@\n"
        "example.com> wrote:\n\n" + QUOTED
    )
    assert split_reply(text).text == "Fixed."


def test_text_only_below_unmarked_history_is_kept_whole_and_flagged():
    text = (
        "________________________________\nFrom: Help Desk <help@example.com>\n"
        "Sent: Friday, December 4, 2026 09:00\nTo: Anna <anna@example.com>\n"
        "Subject: [#7] VPN\n\n" + NOTIFICATION + "\n\n> quoted line\n\nMy answer at the bottom.\n"
    )
    reply = split_reply(text)
    assert not reply.certain and reply.layout == "uncertain"
    assert "My answer at the bottom." in reply.text and "> quoted line" not in reply.text


def test_only_quoted_mail_is_empty():
    reply = split_reply("On Fri, 4 Dec 2026 at 9:00, Help Desk wrote:\n" + QUOTED + "\n")
    assert (reply.layout, reply.text, reply.certain) == ("empty", "", True)


def test_a_short_answer_below_the_quote_is_not_mistaken_for_a_signature():
    reply = split_reply("On Fri, 4 Dec 2026 at 9:00, Help Desk wrote:\n" + QUOTED + "\n\nDone\n")
    assert reply.text == "Done"


def test_html_only_replies_keep_their_quote_marks():
    from maild.mail.htmltext import html_to_text

    text = html_to_text(
        "<div>Below.</div><blockquote type=cite>Which room?<br>Floor 3?</blockquote><div>301</div>"
    )
    assert split_reply(text).text == "Below.\n\n> Which room?\n> Floor 3?\n301"
