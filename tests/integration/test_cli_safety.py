"""Commands that cannot quietly hurt: what an admin in the wrong folder, or as
root, or with a typo, gets from maild (issue 17)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from maild.cli import main as cli
from maild.config import settings as settings_module
from tests.conftest import service_missing
from tests.support.desk import make_message

ROOT = Path(__file__).resolve().parents[2]
GROUP = {"nobody": "nogroup"}
READ_ONLY = [
    ["tickets", "list"],
    ["tickets", "list", "--json"],
    ["ticket", "show", "1"],
    ["outbox", "list"],
    ["quarantine", "list"],
    ["quarantine", "show", "1"],
    ["report"],
    ["report", "--json"],
]


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, stdin: bytes | None = None,
        user: str | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAILD_")}
    argv = [sys.executable, "-m", "maild", *args]
    if user is not None:
        argv = ["setpriv", f"--reuid={user}", f"--regid={GROUP[user]}", "--clear-groups", *argv]
    return subprocess.run(argv, cwd=cwd, env={**base, **(env or {})}, input=stdin,
                          capture_output=True, timeout=120)  # fmt: skip


def tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_no_config_means_the_default_file_and_it_must_exist(tmp_path):
    default = settings_module.DEFAULT_CONFIG
    proc = run("tickets", "list", cwd=tmp_path)
    if default.exists():  # a machine with maild installed: the default file is used
        assert "no configuration file" not in proc.stderr.decode()
        return
    assert proc.returncode == 78, proc.stderr
    (line,) = proc.stderr.decode().strip().splitlines()
    assert f"no configuration file at {default}" in line and "--config" in line
    assert tree(tmp_path) == [], "nothing may be created"


def test_default_config_with_relative_paths_refuses_to_write(tmp_path, monkeypatch, capsys):
    """/etc/maild/maild.toml with the example's relative paths, run from a home folder."""
    cfg = tmp_path / "etc" / "maild.toml"
    cfg.parent.mkdir()
    cfg.write_text('[database]\nurl = "sqlite:///var/maild.db"\n')
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setattr(settings_module, "DEFAULT_CONFIG", cfg)
    monkeypatch.delenv("MAILD_CONFIG", raising=False)
    monkeypatch.chdir(home)
    for argv in (["db", "upgrade"], ["serve"], ["drain"], ["import", str(cfg)]):
        assert cli.main(argv) == 78, argv
        err = capsys.readouterr().err
        assert "database.url: is the relative path var/maild.db" in err and "--config" in err
        assert str(home / "var" / "maild.db") in err
    assert tree(home) == []


@pytest.mark.parametrize("key_set", [False, True])
def test_named_config_may_use_relative_paths_it_sets(tmp_path, key_set):
    """--config naming a file that sets the relative path itself: the user chose it."""
    cfg = tmp_path / "maild.toml"
    cfg.write_text(
        ('[database]\nurl = "sqlite:///var/maild.db"\n' if key_set else "")
        + '[helpdesk]\nsecret_file = "var/secret.key"\n[outgoing]\nmaildir = "var/outgoing"\n'
    )
    proc = run("--config", str(cfg), "db", "upgrade", cwd=tmp_path)
    if key_set:
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "var" / "maild.db").is_file()
    else:  # the relative database path is a built-in default, not the file's
        assert proc.returncode == 78
        assert b"database.url: is the relative path" in proc.stderr
        assert not (tmp_path / "var").exists()


def _config(tmp_path: Path, db: Path) -> Path:
    cfg = tmp_path / "maild.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{db}"\n'
                   f'[helpdesk]\nsecret_file = "{tmp_path / "state" / "secret.key"}"\n'
                   f'[outgoing]\nmaildir = "{tmp_path / "state" / "outgoing"}"\n')  # fmt: skip
    return cfg


@pytest.mark.parametrize("argv", READ_ONLY, ids=" ".join)
def test_read_only_commands_create_nothing(tmp_path, argv):
    db = tmp_path / "state" / "maild.db"
    cfg = _config(tmp_path, db)
    proc = run("--config", str(cfg), *argv, cwd=tmp_path)
    assert proc.returncode == 78, proc.stderr
    (line,) = proc.stderr.decode().strip().splitlines()
    assert f"database.url: no database at {db}" in line and "maild db upgrade" in line
    assert tree(tmp_path) == ["maild.toml"], "no database, no folder, no secret"


def test_writing_commands_other_than_serve_and_upgrade_need_the_database(tmp_path):
    db = tmp_path / "state" / "maild.db"
    cfg = _config(tmp_path, db)
    for argv in (["ingest"], ["drain"], ["sweep"], ["agents", "list"],
                 ["ticket", "resolve", "1"]):  # fmt: skip
        proc = run("--config", str(cfg), *argv, cwd=tmp_path, stdin=make_message())
        assert proc.returncode == 78, (argv, proc.stderr)
        assert b"no database at" in proc.stderr
    assert tree(tmp_path) == ["maild.toml"]
    assert run("--config", str(cfg), "db", "upgrade", cwd=tmp_path).returncode == 0
    proc = run("--config", str(cfg), "tickets", "list", "--json", cwd=tmp_path)
    assert proc.returncode == 0 and json.loads(proc.stdout) == []


def test_a_database_with_tickets_never_gets_a_new_secret(tmp_path):
    db = tmp_path / "state" / "maild.db"
    cfg = _config(tmp_path, db)
    assert run("--config", str(cfg), "db", "upgrade", cwd=tmp_path).returncode == 0
    assert run("--config", str(cfg), "ingest", cwd=tmp_path, stdin=make_message()).returncode == 0
    assert run("--config", str(cfg), "drain", cwd=tmp_path).returncode == 0
    secret = tmp_path / "state" / "secret.key"
    assert secret.is_file()
    secret.rename(tmp_path / "elsewhere.key")  # lost, or a wrong path in the config
    for argv in (["drain"], ["serve"], ["ticket", "reply", "1", "Hello"]):
        proc = run("--config", str(cfg), *argv, cwd=tmp_path)
        assert proc.returncode == 78, (argv, proc.stderr)
        assert b"helpdesk.secret_file: no secret at" in proc.stderr
        assert not secret.exists()


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user can reach (pytest's tmp_path is under a 0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix="maild-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _owned_by_nobody(tmp_path: Path) -> tuple[Path, Path]:
    if os.geteuid() != 0:
        service_missing("root (to run maild as root against another user's files)")
    if shutil.which("setpriv") is None:
        service_missing("setpriv (package util-linux)")
    state = tmp_path / "state"
    state.mkdir()
    cfg = _config(tmp_path, state / "maild.db")
    shutil.chown(state, "nobody", "nogroup")
    cfg.chmod(0o644)
    assert run("--config", str(cfg), "db", "upgrade", cwd=tmp_path, user="nobody").returncode == 0
    return cfg, state


def test_root_refuses_state_owned_by_the_service_user(open_dir):
    tmp_path = open_dir
    cfg, state = _owned_by_nobody(tmp_path)
    before = tree(state)
    for argv in (["tickets", "list"], ["db", "upgrade"], ["drain"], ["serve"]):
        proc = run("--config", str(cfg), *argv, cwd=tmp_path)
        assert proc.returncode == 77, (argv, proc.stderr)
        (line,) = proc.stderr.decode().strip().splitlines()
        assert "running as root" in line and "belongs to nobody" in line
        assert "runuser -u nobody" in line
    assert tree(state) == before, "no root-owned -wal, -shm or new files"
    assert all(p.stat().st_uid != 0 for p in state.rglob("*"))
    # As the owner it works.
    proc = run("--config", str(cfg), "tickets", "list", "--json", cwd=tmp_path, user="nobody")
    assert proc.returncode == 0, proc.stderr


# --- usage errors and help ------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["nonsense"],
        [],
        ["tickets"],
        ["tickets", "list", "--bogus"],
        ["ticket", "show", "not-a-number"],
        ["tickets", "list", "--limit", "0"],
        ["--log-level", "LOUD", "check-config"],
        ["ticket", "status", "1", "sleeping"],
    ],
    ids=" ".join,
)
def test_usage_errors_exit_64(tmp_path, argv):
    proc = run(*argv, cwd=tmp_path)
    assert proc.returncode == 64, proc.stderr
    assert proc.stderr.startswith(b"usage: maild") and b"Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--status", "open,sleeping"], "argument --status: no status 'sleeping'"),
        (["--priority", "P9"], "argument --priority: 'P9' is not P1..P4"),
        (["--tier", "4"], "argument --tier: '4' is not 1, 2 or 3"),
    ],
)
def test_bad_filter_values_exit_64_before_touching_anything(tmp_path, option, message):
    proc = run("tickets", "list", *option, cwd=tmp_path)  # no configuration needed to say so
    assert proc.returncode == 64, proc.stderr
    assert message in proc.stderr.decode()


def _parsers(parser: argparse.ArgumentParser, path: str = "maild"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                assert helps.get(name), f"{path} {name}: no help in the command list"
                yield from _parsers(sub, f"{path} {name}")


def test_every_command_and_option_has_help():
    seen = 0
    for path, parser in _parsers(cli.build_parser()):
        assert parser.description, f"{path}: no description"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, f"{path}: {action.option_strings or action.dest} has no help"
        seen += 1
    assert seen > 30


def test_every_command_that_prints_has_json():
    # a daemon; a hash for a file; the attachment's own bytes
    quiet = {"maild serve", "maild hash-password", "maild ticket attachment"}
    for path, parser in _parsers(cli.build_parser()):
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            continue
        if path in quiet:
            continue
        options = {o for a in parser._actions for o in a.option_strings}
        assert "--json" in options, f"{path} has no --json"


def test_help_exits_0(tmp_path):
    proc = run("tickets", "list", "--help", cwd=tmp_path)
    assert proc.returncode == 0
    out = proc.stdout.decode()
    for word in ("--status", "--priority", "--tier", "--assignee", "--breached", "--limit",
                 "--after", "--json"):  # fmt: skip
        assert word in out
