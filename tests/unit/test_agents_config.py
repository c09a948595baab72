"""The agent directory and the agent_mail settings: each bad value names its key."""

from __future__ import annotations

import pytest

from maild.config.settings import settings_from_mapping
from maild.errors import ConfigError


def test_agents_are_read_and_normalised():
    s = settings_from_mapping({"agents": [
        {"email": "Anna@Example.COM", "name": "Anna", "groups": ["security"], "language": "fi"},
        {"email": "bert@example.com", "tier": 3},
    ]})  # fmt: skip
    assert [(a.email, a.tier, a.groups, a.language) for a in s.agents] == [
        ("anna@example.com", 1, ("security",), "fi"), ("bert@example.com", 3, (), "")]  # fmt: skip
    assert settings_from_mapping({}).agents == ()


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"agents": {"email": "a@example.com"}}, "agents"),
        ({"agents": [{"name": "No Address"}]}, "agents[0].email"),
        ({"agents": [{"email": "a@example.com"}, {"email": "not an address"}]}, "agents[1].email"),
        ({"agents": [{"email": "a+x@example.com"}]}, "agents[0].email"),
        ({"agents": [{"email": "a@example.com"}, {"email": "A@example.com"}]}, "agents[1].email"),
        ({"agents": [{"email": "a@example.com", "tier": 4}]}, "agents[0].tier"),
        ({"agents": [{"email": "a@example.com", "groups": ["Bad Group"]}]}, "agents[0].groups"),
        ({"agents": [{"email": "a@example.com", "language": "German"}]}, "agents[0].language"),
        ({"agents": [{"email": "a@example.com", "name": "two\nlines"}]}, "agents[0].name"),
        ({"agents": [{"email": "a@example.com", "colour": "red"}]}, "agents[0].colour"),
        ({"agents": [{"email": "help@example.com"}]}, "agents[0].email"),  # our own address
        ({"tiers": {"tier2": ["help+t2@example.com"]}}, "tiers.tier2"),  # mail would loop
        ({"agent_mail": {"require_authentication_results": True}},
         "agent_mail.trusted_authserv_ids"),
        ({"agent_mail": {"trusted_authserv_ids": ["mx example"]}},
         "agent_mail.trusted_authserv_ids"),
        ({"agent_mail": {"authentication_methods": ["spf"]}}, "agent_mail.authentication_methods"),
        ({"agent_mail": {"reply_token_days": -1}}, "agent_mail.reply_token_days"),
        ({"agent_mail": {"trusted_hops": 0}}, "agent_mail.trusted_hops"),
        ({"agent_mail": {"meeting_minutes": 1}}, "agent_mail.meeting_minutes"),
    ],
)  # fmt: skip
def test_bad_agent_settings_name_their_key(raw, key):
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(raw)
    assert info.value.key == key


def test_agents_cannot_come_from_the_environment():
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({}, {"agents": {"email": "a@example.com"}})
    assert info.value.key == "agents"


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"agents": [{"email": "a@example.com", "language": "de"}]}, "agents[0].language"),
        ({"helpdesk": {"default_language": "de"}}, "helpdesk.default_language"),
        ({"tiers": {"language": "de"}}, "tiers.language"),
    ],
)
def test_a_language_maild_has_no_templates_for_stops_it_at_start(raw, key):
    """A language is a folder of templates: config names a language, the templates decide."""
    from maild.mail.render import Renderer

    settings = settings_from_mapping(raw)  # a well-formed language code
    with pytest.raises(ConfigError) as info:
        Renderer.from_settings(settings)
    assert info.value.key == key and "'de'" in str(info.value)
