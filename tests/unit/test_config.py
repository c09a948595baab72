from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from maild.config.settings import defaults_as_dict, load_settings, settings_from_mapping
from maild.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "maild.example.toml"


def _commented_defaults(text: str) -> dict[str, dict[str, str]]:
    """Keys documented as comments ("# key = value") in the example file."""
    out: dict[str, dict[str, str]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
        elif line.startswith("# ") and " = " in line and section:
            key = line[2:].split(" = ", 1)[0].strip()
            if key.isidentifier():
                out.setdefault(section, {})[key] = line
    return out


def test_example_config_documents_every_key_with_its_default():
    text = EXAMPLE.read_text()
    example = tomllib.loads(text)
    commented = _commented_defaults(text)
    for section, values in defaults_as_dict().items():
        for key, default in values.items():
            if key in example.get(section, {}):
                shown = example[section][key]
                expected = (
                    [str(v) if isinstance(v, Path) else v for v in default]
                    if isinstance(default, tuple)
                    else default
                )
                expected = str(expected) if isinstance(default, Path) else expected
                assert shown == expected, (
                    f"{section}.{key}: example {shown!r} != default {default!r}"
                )
            else:
                # Unset (None) or an empty list of tables ([[imap.mailboxes]]).
                assert default in (None, ()), f"{section}.{key} is not documented in the example"
                if default is None:
                    assert key in commented.get(section, {}), (
                        f"{section}.{key} not shown commented out"
                    )
    for section, values in example.items():
        for key in values:
            assert key in defaults_as_dict()[section], f"example has unknown key {section}.{key}"


def test_example_config_loads():
    settings = load_settings(EXAMPLE, environ={})
    assert settings.smtp.listen == "127.0.0.1:2525"
    assert settings.outgoing.transport == "maildir"
    assert settings.outgoing.maildir == Path("var/outgoing")


def test_environment_overrides_file(tmp_path):
    settings = load_settings(
        EXAMPLE,
        environ={
            "MAILD_DATABASE__URL": "postgresql+psycopg://u:p@db/maild",
            "MAILD_HELPDESK__ADDRESSES": "help@example.com, it@example.com",
            "MAILD_SMTP__LMTP": "true",
            "MAILD_LIMITS__MAX_MESSAGE_BYTES": "2048",
        },
    )
    assert settings.database.url == "postgresql+psycopg://u:p@db/maild"
    assert settings.helpdesk.addresses == ("help@example.com", "it@example.com")
    assert settings.smtp.lmtp is True
    assert settings.limits.max_message_bytes == 2048


def test_config_path_from_environment(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('[helpdesk]\naddresses = ["desk@corp.example"]\n')
    settings = load_settings(None, environ={"MAILD_CONFIG": str(cfg)})
    assert settings.helpdesk.addresses == ("desk@corp.example",)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"smtp": {"listen": "localhost"}}, "smtp.listen"),
        ({"smtp": {"listen": "127.0.0.1:99999"}}, "smtp.listen"),
        ({"smtp": {"lmtp": "maybe"}}, "smtp.lmtp"),
        ({"smtp": {"colour": "blue"}}, "smtp.colour"),
        ({"smpt": {}}, "smpt"),
        ({"database": {"url": "mysql://x/y"}}, "database.url"),
        ({"database": {"url": "::not a url::"}}, "database.url"),
        ({"helpdesk": {"addresses": []}}, "helpdesk.addresses"),
        ({"helpdesk": {"addresses": ["not-an-address"]}}, "helpdesk.addresses"),
        ({"helpdesk": {"addresses": "help@example.com"}}, "helpdesk.addresses"),
        ({"helpdesk": {"addresses": ["help+x@example.com"]}}, "helpdesk.addresses"),
        ({"helpdesk": {"domain": "localhost"}}, "helpdesk.domain"),
        ({"helpdesk": {"name": "Desk\r\nBcc: x@y.z"}}, "helpdesk.name"),
        ({"helpdesk": {"timezone": "Mars/Olympus"}}, "helpdesk.timezone"),
        ({"helpdesk": {"names": {"Finnish": "IT-tuki"}}}, "helpdesk.names"),
        ({"helpdesk": {"names": {"fi": "IT\nBcc: x@y.z"}}}, "helpdesk.names.fi"),
        ({"helpdesk": {"names": ["IT-tuki"]}}, "helpdesk.names"),
        ({"sla": {"first_response_hours": [1, 2, 3]}}, "sla.first_response_hours"),
        ({"sla": {"resolution_hours": [4, 8, 0, 72]}}, "sla.resolution_hours"),
        ({"sla": {"business_hours": "9-17"}}, "sla.business_hours"),
        ({"sla": {"business_hours": "17:00-09:00"}}, "sla.business_hours"),
        ({"sla": {"holidays": ["24.12.2026"]}}, "sla.holidays"),
        ({"sla": {"regulator_reminder_hours": [24, 80]}}, "sla.regulator_reminder_hours"),
        ({"triage": {"priority_matrix": ["1 2 3", "2 2 3"]}}, "triage.priority_matrix"),
        ({"triage": {"priority_matrix": ["1 2 3", "2 2 3", "2 3 5"]}}, "triage.priority_matrix"),
        ({"triage": {"rules_file": "/nonexistent/rules.toml"}}, "triage.rules_file"),
        ({"triage": {"vip_senders": ["boss"]}}, "triage.vip_senders"),
        ({"tiers": {"tier2": ["not an address"]}}, "tiers.tier2"),
        ({"lifecycle": {"close_after_days": 0}}, "lifecycle.close_after_days"),
        ({"outgoing": {"transport": "carrier-pigeon"}}, "outgoing.transport"),
        (
            {
                "outgoing": {
                    "transport": "smtp",
                    "smtp_password_file": "/nonexistent",
                    "smtp_username": "u",
                }
            },
            "outgoing.smtp_password_file",
        ),  # fmt: skip
        ({"outgoing": {"smtp_port": 0}}, "outgoing.smtp_port"),
        ({"limits": {"max_message_bytes": "lots"}}, "limits.max_message_bytes"),
        ({"limits": {"max_message_bytes": 10}}, "limits.max_message_bytes"),
        ({"worker": {"max_attempts": True}}, "worker.max_attempts"),
        ({"templates": {"directory": "/nonexistent/dir"}}, "templates.directory"),
        ({"log": {"level": "LOUD"}}, "log.level"),
    ],
)
def test_bad_values_name_their_key(raw, key):
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(raw)
    assert info.value.key == key


def test_a_word_from_a_fixed_list_is_taken_in_any_case():
    """An admin writes level = "info" or MAILD_OUTGOING__TRANSPORT=SMTP: meant, and taken."""
    settings = load_settings(EXAMPLE, environ={"MAILD_LOG__LEVEL": "debug",
                                               "MAILD_OUTGOING__TRANSPORT": "Maildir"})  # fmt: skip
    assert (settings.log.level, settings.outgoing.transport) == ("DEBUG", "maildir")
    assert settings_from_mapping({"log": {"level": "Warning"}}).log.level == "WARNING"
    with pytest.raises(ConfigError) as info:  # a word not on the list is still refused
        settings_from_mapping({"log": {"level": "verbose"}})
    assert info.value.key == "log.level" and "'DEBUG', 'INFO'" in str(info.value)


def test_unknown_environment_key_is_named():
    with pytest.raises(ConfigError) as info:
        load_settings(EXAMPLE, environ={"MAILD_SMTP__LISTN": "x"})
    assert info.value.key == "smtp.listn"


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('[smtp]\nlisten = "nowhere"\n', "smtp.listen"),
        ("[smtp\nlisten=", "not valid TOML"),
        ('[outgoing]\ntransport = "fax"\n', "outgoing.transport"),
        # A monitor's From line alone proves nothing: maild will not take it on trust.
        (
            '[alerts]\nsenders = ["nagios@mon.example.com"]\n',
            "alerts.source_networks: alerts.senders needs a way to verify the monitor",
        ),
        (
            '[alerts]\nsenders = ["nagios@mon.example.com"]\nsource_networks = ["10.0.5.0/33"]\n',
            "alerts.source_networks",
        ),
    ],
)
def test_cli_bad_config_is_one_line_and_exit_78(tmp_path, content, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    for command in (["check-config"], ["serve"]):
        proc = subprocess.run(
            [sys.executable, "-m", "maild", "--config", str(cfg), *command],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert proc.returncode == 78, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert needle in lines[0]
        assert "Traceback" not in proc.stderr


def test_cli_missing_config_file_exit_78(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "maild", "--config", str(tmp_path / "nope.toml"), "check-config"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 78
    assert "file not found" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_check_config_accepts_the_example():
    proc = subprocess.run(
        [sys.executable, "-m", "maild", "--config", str(EXAMPLE), "check-config"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "configuration OK" in proc.stdout


def test_the_desk_name_per_language_from_file_and_environment(tmp_path):
    empty = tmp_path / "maild.toml"
    empty.write_text("")
    s = settings_from_mapping({"helpdesk": {"name": "IT Help", "names": {"fi": "IT-tuki"}}})
    assert (s.helpdesk.name_in("fi"), s.helpdesk.name_in("sv"), s.helpdesk.name_in(None)) == (
        "IT-tuki", "IT Help", "IT Help")  # fmt: skip
    env = load_settings(empty, environ={"MAILD_HELPDESK__NAMES": "fi=IT-tuki, sv=IT-stöd"})
    assert env.helpdesk.names == {"fi": "IT-tuki", "sv": "IT-stöd"}
    env = load_settings(empty, environ={"MAILD_HELPDESK__NAMES": '{ sv = "IT-stöd" }'})
    assert env.helpdesk.name_in("sv") == "IT-stöd"
