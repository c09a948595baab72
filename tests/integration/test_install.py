"""The documented install (docs/admin.md: ``sh systemd/install.sh``), run into a
temporary root, and ``maild serve`` started from it as the unprivileged maild
user (PID 1 here is not systemd: ``setpriv`` does what ``User=maild`` does).

The bug this guards: an install that leaves the configuration root:root 0640,
which the service user cannot read, so the service exits 78 and stays down.
"""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from maild.config.settings import load_settings
from tests.conftest import service_missing
from tests.support.desk import make_message
from tests.support.serveproc import free_port

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = Path("/usr/bin/python3")  # Debian's, as docs/admin.md uses it


def _open_tempdir(prefix: str) -> Path:
    """A folder every user can reach (pytest's tmp_path is under a 0700 folder)."""
    top = Path(tempfile.mkdtemp(prefix=prefix))
    top.chmod(0o755)
    return top


@pytest.fixture(scope="module")
def maild_program() -> Iterator[Path]:
    """Step 1 of the install: a virtualenv of the system Python with maild in it."""
    if os.geteuid() != 0:
        service_missing("root (the install runs as root)")
    for tool in ("systemd-sysusers", "setpriv", str(SYSTEM_PYTHON)):
        if shutil.which(tool) is None:
            service_missing(f"{tool} (packages systemd, util-linux, python3-venv)")
    top = _open_tempdir("maild-venv-")
    venv = top / "opt" / "maild"
    made = subprocess.run([str(SYSTEM_PYTHON), "-m", "venv", str(venv)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert made.returncode == 0, made.stderr
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", str(ROOT)],
                         capture_output=True, text=True, timeout=900)  # fmt: skip
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    yield venv / "bin" / "maild"
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def dest(maild_program: Path) -> Iterator[Path]:
    """A root to install into, seeded with this machine's users and groups (so
    the maild user gets an id that is free here too)."""
    top = _open_tempdir("maild-install-")
    (top / "etc").mkdir()
    for name in ("passwd", "group"):
        shutil.copy(f"/etc/{name}", top / "etc" / name)
    yield top
    shutil.rmtree(top, ignore_errors=True)


def install(dest: Path, program: Path) -> subprocess.CompletedProcess[str]:
    """Step 2: ``sh systemd/install.sh`` (as root), into `dest`."""
    return subprocess.run(["sh", str(ROOT / "systemd" / "install.sh")],
                          env={**os.environ, "DESTDIR": str(dest), "MAILD": str(program)},
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def ids(dest: Path) -> tuple[int, int]:
    uid = next(int(line.split(":")[2]) for line in (dest / "etc/passwd").read_text().splitlines()
               if line.startswith("maild:"))  # fmt: skip
    gid = next(int(line.split(":")[2]) for line in (dest / "etc/group").read_text().splitlines()
               if line.startswith("maild:"))  # fmt: skip
    return uid, gid


def owner_mode(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def as_maild(dest: Path, *argv: str) -> list[str]:
    uid, gid = ids(dest)
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]


def test_install_then_serve_as_the_maild_user(dest, maild_program):
    program = maild_program
    proc = install(dest, program)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    uid, gid = ids(dest)
    assert uid not in (0, os.geteuid()) and uid < 1000, "a system user"
    etc, state = dest / "etc" / "maild", dest / "var" / "lib" / "maild"
    assert owner_mode(etc) == (0, gid, 0o750)
    assert owner_mode(etc / "maild.toml") == (0, gid, 0o640)
    assert owner_mode(state) == (uid, gid, 0o750)
    unit = dest / "etc" / "systemd" / "system" / "maild.service"
    assert owner_mode(unit)[2] == 0o644
    text = unit.read_text()
    assert "User=maild" in text and "DynamicUser" not in text
    assert f"ExecStart={program} --config /etc/maild/maild.toml serve" in text
    assert (dest / "etc" / "sysusers.d" / "maild.conf").is_file()

    # The installed configuration names its state by absolute paths.
    settings = load_settings(etc / "maild.toml", environ={})
    assert settings.database.url == "sqlite:////var/lib/maild/maild.db"
    assert str(settings.helpdesk.secret_file) == "/var/lib/maild/secret.key"
    assert str(settings.outgoing.maildir) == "/var/lib/maild/outgoing"

    # Run again (an upgrade): the edited configuration is kept.
    (etc / "maild.toml").write_text((etc / "maild.toml").read_text() + "\n# edited\n")
    again = install(dest, program)
    assert again.returncode == 0 and "keeping the existing" in again.stdout
    assert (etc / "maild.toml").read_text().endswith("# edited\n")
    assert owner_mode(etc / "maild.toml") == (0, gid, 0o640)

    # maild serve as the maild user, with those files; the state paths point
    # into the temporary root as DESTDIR would have them.
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILD_", "JOURNAL_"))}
    env.update({
        "MAILD_DATABASE__URL": f"sqlite:///{state / 'maild.db'}",
        "MAILD_HELPDESK__SECRET_FILE": str(state / "secret.key"),
        "MAILD_OUTGOING__MAILDIR": str(state / "outgoing"),
        "MAILD_SMTP__LISTEN": f"127.0.0.1:{port}",
        "MAILD_HTTP__ENABLED": "false",
        "MAILD_WORKER__POLL_SECONDS": "0.2",
    })  # fmt: skip
    config = ["--config", str(etc / "maild.toml")]
    check = subprocess.run(as_maild(dest, str(program), *config, "check-config"), env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stderr
    log = dest / "serve.log"
    with open(log, "wb") as out:
        serve = subprocess.Popen(as_maild(dest, str(program), *config, "serve"), env=env,
                                 cwd=state, stdout=out, stderr=out)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert serve.poll() is None, log.read_text()
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                    client.sendmail("bob@example.org", ["help@example.com"], make_message())
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        outgoing = state / "outgoing" / "new"
        while not (outgoing.is_dir() and any(outgoing.iterdir())):
            assert serve.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "no acknowledgement within 60 s"
            time.sleep(0.05)
        # Everything maild wrote belongs to the maild user; the secret is private.
        for path in state.rglob("*"):
            assert path.stat().st_uid == uid, path
        assert owner_mode(state / "secret.key") == (uid, gid, 0o600)
        # Root running the CLI against it is refused; the maild user may.
        as_root = subprocess.run([str(program), *config, "tickets", "list"], env=env,
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
        assert as_root.returncode == 77, as_root.stderr
        listed = subprocess.run(as_maild(dest, str(program), *config, "tickets", "list"), env=env,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert listed.returncode == 0 and "bob@example.org" in listed.stdout, listed.stderr
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0, log.read_text()
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


def test_a_secret_the_maild_user_cannot_read_is_named_before_start(dest, maild_program):
    """The original failure, caught by check-config run as the service user."""
    program = maild_program
    assert install(dest, program).returncode == 0
    etc = dest / "etc" / "maild"
    password = etc / "relay-password"
    password.write_text("s3cret\n")
    password.chmod(0o600)  # root:root 0600, as `install -m 600` would leave it
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILD_")}
    env.update({"MAILD_OUTGOING__TRANSPORT": "smtp", "MAILD_OUTGOING__SMTP_USERNAME": "maild",
                "MAILD_OUTGOING__SMTP_PASSWORD_FILE": str(password)})  # fmt: skip
    config = ["--config", str(etc / "maild.toml")]
    proc = subprocess.run(as_maild(dest, str(program), *config, "check-config"), env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 78
    (line,) = proc.stderr.strip().splitlines()
    assert "outgoing.smtp_password_file: cannot read" in line and "root:maild 0640" in line
    os.chown(password, 0, ids(dest)[1])
    password.chmod(0o640)  # as docs/admin.md says
    proc = subprocess.run(as_maild(dest, str(program), *config, "check-config"), env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_installed_units_pass_systemd_analyze_verify(dest, maild_program):
    assert install(dest, maild_program).returncode == 0
    units = dest / "etc" / "systemd" / "system"
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(units / "maild.service"),
                           str(units / "maild.socket")], capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    # verify looks the user up on this machine, where install.sh ran into DESTDIR.
    problems = [line for line in proc.stderr.splitlines() if "maild" in line
                and "user" not in line.lower()]  # fmt: skip
    assert not problems, proc.stderr
