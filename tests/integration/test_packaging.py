"""The wheel is what an admin installs: production code, templates and rules inside.

Built from this checkout, listed, installed with ``pip install --target`` into a
temporary folder, and run from a working directory that holds no checkout: a
first message goes through to an acknowledgement. A template missing from the
installed package stops maild at start with exit 78 naming it, instead of
quarantining every message.
"""

from __future__ import annotations

import email
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet",
         "--disable-pip-version-check", "-w", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (found,) = out.glob("maild-*.whl")
    return found


@pytest.fixture(scope="module")
def target(wheel, tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("target")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet",
         "--disable-pip-version-check", "--target", str(where), str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return where


def test_the_wheel_holds_production_code_templates_and_rules(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "maild/templates/en/ack.txt.j2" in names
    assert "maild/templates/fi/ack.txt.j2" in names
    assert "maild/pipeline/rules/triage.toml" in names
    assert {f"maild/mail/lang/{code}.toml" for code in ("en", "fi", "ru")} <= names
    assert "maild/config/maild.example.toml" in names
    assert "maild/store/migrations/env.py" in names
    assert any(n.startswith("maild/store/migrations/versions/") for n in names)
    assert not [n for n in names if n.startswith("tests/") or "/tests/" in n]
    assert not [n for n in names if Path(n).stem in ("testing", "testing_dovecot", "serveproc")]
    assert not [n for n in names if n.startswith(("bench/", "docs/", "templates/"))]


def _run(target: Path, cwd: Path, *args: str, stdin: bytes | None = None):
    # The installed copy first on the path: it must not fall back to the checkout.
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run([sys.executable, "-m", "maild", *args], cwd=cwd, env=env,
                          input=stdin, capture_output=True, timeout=120)  # fmt: skip


def _site(tmp_path: Path) -> tuple[Path, Path]:
    work = tmp_path / "site"
    work.mkdir()
    config = work / "maild.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{work / "maild.db"}"\n'
        f'[helpdesk]\naddresses = ["help@example.com"]\nsecret_file = "{work / "secret.key"}"\n'
        f'[outgoing]\nmaildir = "{work / "outgoing"}"\n'
        "[worker]\nparse_processes = 0\n"
    )
    return work, config


def test_installed_with_pip_target_it_answers_a_first_message(target, tmp_path):
    work, config = _site(tmp_path)
    where = subprocess.run(
        [sys.executable, "-c", "import maild; print(maild.__file__)"],
        cwd=work, env={**os.environ, "PYTHONPATH": str(target)}, capture_output=True, text=True,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(target)), where.stdout + where.stderr

    assert _run(target, work, "--config", str(config), "db", "upgrade").returncode == 0
    msg = (
        b"From: Bob Customer <bob@example.org>\r\nTo: help@example.com\r\n"
        b"Subject: Printer on 3rd floor not working\r\nMessage-ID: <first@example.org>\r\n"
        b"Date: Fri, 04 Dec 2026 09:00:00 +0000\r\n\r\nIt shows error E42.\r\n"
    )
    ingest = _run(target, work, "--config", str(config), "ingest", stdin=msg)
    assert ingest.returncode == 0, ingest.stderr
    drain = _run(target, work, "--config", str(config), "drain")
    assert drain.returncode == 0, drain.stderr

    sent = sorted((work / "outgoing" / "new").iterdir())
    assert len(sent) == 1
    ack = email.message_from_bytes(sent[0].read_bytes())
    # (no display name: nothing verifies the sender, issue 14)
    assert ack["To"] == "bob@example.org"
    assert "Printer on 3rd floor not working" in ack["Subject"]
    assert ack["In-Reply-To"] == "<first@example.org>"
    assert ack["Auto-Submitted"] == "auto-replied"


def test_a_missing_template_stops_maild_at_start_naming_it(target, tmp_path):
    work, config = _site(tmp_path)
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-a", str(target), str(broken)], check=True)
    (broken / "maild" / "templates" / "en" / "ack.txt.j2").unlink()
    proc = _run(broken, work, "--config", str(config), "check-config")
    assert proc.returncode == 78
    assert b"en/ack.txt.j2" in proc.stderr and b"missing" in proc.stderr
    assert b"Traceback" not in proc.stderr
    serve = _run(broken, work, "--config", str(config), "serve")
    assert serve.returncode == 78
    assert b"en/ack.txt.j2" in serve.stderr
