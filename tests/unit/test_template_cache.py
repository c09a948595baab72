"""Compiled templates are kept between runs ($CACHE_DIRECTORY), and the cache can
only make a start faster: an edited template is compiled again, and a cache
folder that cannot be used is no cache, never a failed start."""

from __future__ import annotations

import stat
from datetime import UTC, datetime

import pytest

from maild.mail.render import Renderer

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
CONTEXT = {
    "helpdesk": {"name": "H", "address": "h@x.y"},
    "ticket": {"number": 5, "subject": "s", "priority": 3, "type": "request",
               "category": "other"},
    "requester": {"name": "", "email": "a@b.c"},
    "summary": "", "first_response_due": NOW, "parent_id": None,
}  # fmt: skip


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setenv("CACHE_DIRECTORY", str(folder))
    return folder


def test_compiled_templates_are_kept_in_the_cache_directory(cache):
    Renderer()
    kept = cache / "templates"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700  # compiled code: ours alone
    files = list(kept.glob("maild-*.cache"))
    assert len(files) > 50  # every template of every language
    # A second start loads them: none is compiled and written again.
    before = {f.name: f.stat().st_mtime_ns for f in files}
    assert "ticket #5" in Renderer().render("ack", "en", CONTEXT).text
    assert {f.name: f.stat().st_mtime_ns for f in kept.glob("maild-*.cache")} == before


def test_an_edited_template_is_used_though_the_old_one_is_cached(cache, tmp_path):
    override = tmp_path / "templates"
    (override / "en").mkdir(parents=True)
    subject = override / "en" / "ack.subject.j2"
    subject.write_text("Got it: #{{ ticket.number }}")
    renderer = Renderer(override)
    assert renderer.render("ack", "en", CONTEXT).subject == "Got it: #5"
    subject.write_text("Received: #{{ ticket.number }}")
    renderer.reload()  # SIGHUP
    assert renderer.render("ack", "en", CONTEXT).subject == "Received: #5"
    assert Renderer(override).render("ack", "en", CONTEXT).subject == "Received: #5"  # a restart


def test_a_cache_folder_that_cannot_be_used_is_no_cache(cache):
    (cache / "templates").write_text("not a folder")
    out = Renderer().render("ack", "en", CONTEXT)
    assert "ticket #5" in out.text
