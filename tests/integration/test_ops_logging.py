"""The daemon's log as journald and a log shipper see it (issue 17)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.support.serveproc import ServeProcess, base_sections, free_port


def _wait_for(path, needle: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not logged within {timeout}s:\n{text[-2000:]}")


def test_under_journald_every_line_carries_its_priority(sqlite_url, tmp_path):
    log = tmp_path / "serve.log"
    log.touch()
    st = os.stat(log)
    serve = ServeProcess(base_sections(tmp_path, sqlite_url, free_port()), log_path=log,
                         extra_env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})  # fmt: skip
    try:
        serve.start()
        text = _wait_for(log, "maild ready")
        assert serve.stop() == 0
        text = log.read_text()
    finally:
        serve.close()
    lines = [line for line in text.splitlines() if line]
    assert lines and all(line[:3] in ("<6>", "<4>", "<3>", "<7>") for line in lines), text
    assert any(line.startswith("<6>INFO maild.service.daemon: maild ready") for line in lines)


def test_json_log_format(sqlite_url, tmp_path):
    log = tmp_path / "serve.log"
    sections = base_sections(tmp_path, sqlite_url, free_port(), log={"format": "json"})
    serve = ServeProcess(sections, log_path=log)
    try:
        serve.start()
        _wait_for(log, "maild ready")
        assert serve.stop() == 0
        text = log.read_text()
    finally:
        serve.close()
    records = [json.loads(line) for line in text.splitlines() if line]
    ready = [r for r in records if r["message"].startswith("maild ready")]
    assert ready and ready[0]["level"] == "INFO" and ready[0]["logger"] == "maild.service.daemon"
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)


def test_log_level_option_overrides_the_configuration(tmp_path):
    cfg = tmp_path / "maild.toml"
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "m.db"}"\n[log]\nlevel = "ERROR"\n'
                   f'[helpdesk]\nsecret_file = "{tmp_path / "secret.key"}"\n'
                   f'[outgoing]\nmaildir = "{tmp_path / "outgoing"}"\n')  # fmt: skip

    def upgrade(*extra: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "maild", "--config", str(cfg), *extra,
                               "db", "upgrade"], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return proc.stderr

    assert "alembic" not in upgrade()
    assert "INFO alembic.runtime.migration" in upgrade("--log-level", "debug")
