"""Times as each language writes them, in the desk's zone (maild.mail.dates)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from maild.config.settings import settings_from_mapping, system_timezone
from maild.mail.dates import format_when
from maild.mail.render import Renderer

WINTER = datetime(2026, 12, 4, 7, 45, tzinfo=UTC)  # 09:45 in Helsinki (EET, UTC+2)
SUMMER = datetime(2026, 7, 7, 6, 5, tzinfo=UTC)  # 09:05 in Helsinki (EEST, UTC+3)


@pytest.mark.parametrize(
    ("language", "when", "part", "expected"),
    [
        ("fi", WINTER, "datetime", "pe 4.12.2026 klo 9.45"),
        ("fi", SUMMER, "datetime", "ti 7.7.2026 klo 9.05"),
        ("fi", SUMMER, "date", "7.7.2026"),
        ("fi", WINTER, "time", "klo 9.45"),
        ("sv", WINTER, "datetime", "fre 4.12.2026 kl. 9.45"),
        ("sv", SUMMER, "date", "7.7.2026"),
        ("en", WINTER, "datetime", "Fri 4 Dec 2026, 09:45 EET"),
        ("en", SUMMER, "datetime", "Tue 7 Jul 2026, 09:05 EEST"),
        ("en", SUMMER, "date", "7 July 2026"),
        ("en", WINTER, "time", "09:45 EET"),
    ],
)
def test_each_language_writes_local_time_its_own_way(language, when, part, expected):
    assert format_when(when, "Europe/Helsinki", language, part) == expected


def test_the_zone_is_named_only_where_the_reader_may_not_share_it():
    # A Finnish reader of a desk in Stockholm or on UTC is told which zone.
    assert format_when(WINTER, "Europe/Stockholm", "fi") == "pe 4.12.2026 klo 8.45 CET"
    assert format_when(WINTER, "UTC", "fi") == "pe 4.12.2026 klo 7.45 UTC"
    # Swedish-speaking readers live on both sides of the Gulf of Bothnia.
    assert format_when(WINTER, "Europe/Stockholm", "sv") == "fre 4.12.2026 kl. 8.45"
    assert format_when(WINTER, "Europe/Helsinki", "fi", zone=True).endswith(" EET")
    assert format_when(WINTER, "UTC", "en", "date") == "4 December 2026"


def test_any_language_cldr_knows_gets_its_own_form_and_unknown_codes_english():
    assert format_when(WINTER, "Europe/Berlin", "de") == "04.12.2026, 08:45 CET"
    assert format_when(WINTER, "Europe/Helsinki", "qq") == "Fri 4 Dec 2026, 09:45 EET"
    assert format_when(None, "UTC", "fi") == "-"
    naive = datetime(2026, 12, 4, 7, 45)  # a naive value is UTC
    assert format_when(naive, "Europe/Helsinki", "fi") == "pe 4.12.2026 klo 9.45"


def test_templates_write_dates_in_their_own_language():
    renderer = Renderer(timezone="Europe/Helsinki")
    context = {
        "helpdesk": {"name": "Help Desk", "address": "help@example.com"},
        "ticket": {
            "number": 7,
            "subject": "Printer",
            "priority": 3,
            "type": "incident",
            "category": "hardware",
        },  # fmt: skip
        "requester": {"name": "Bob", "email": "bob@example.org"},
        "summary": "It is broken.",
        "first_response_due": WINTER,
        "resolution_due": None,
        "parent_id": None,
    }
    fi = renderer.render("ack", "fi", context).text
    assert "pe 4.12.2026 klo 9.45" in fi
    assert "UTC" not in fi and "2026-12-04" not in fi
    assert "Fri 4 Dec 2026, 09:45 EET" in renderer.render("ack", "en", context).text


def test_the_desk_zone_defaults_to_the_systems_own(tmp_path):
    zoneinfo = tmp_path / "usr" / "share" / "zoneinfo" / "Europe"
    zoneinfo.mkdir(parents=True)
    (zoneinfo / "Helsinki").write_bytes(b"TZif")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "localtime").symlink_to(zoneinfo / "Helsinki")
    assert system_timezone({}, tmp_path) == "Europe/Helsinki"
    assert system_timezone({"TZ": ":Europe/Stockholm"}, tmp_path) == "Europe/Stockholm"
    (tmp_path / "etc" / "localtime").unlink()
    (tmp_path / "etc" / "timezone").write_text("Europe/Tallinn\n")
    assert system_timezone({}, tmp_path) == "Europe/Tallinn"
    (tmp_path / "etc" / "timezone").unlink()
    assert system_timezone({"TZ": "Nowhere/Atlantis"}, tmp_path) == "UTC"
    # Unset in the file: the system's; set: as written.
    assert settings_from_mapping({}).helpdesk.timezone == system_timezone()
    pinned = settings_from_mapping({"helpdesk": {"timezone": "Europe/Helsinki"}})
    assert pinned.helpdesk.timezone == "Europe/Helsinki"
