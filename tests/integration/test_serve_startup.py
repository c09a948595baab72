"""maild serve on a port someone else holds: one line naming the key, exit 78,
nothing left running (no traceback in the journal, no half-started daemon)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _config(tmp_path: Path, smtp_port: int, http_port: int) -> Path:
    cfg = tmp_path / "maild.toml"
    cfg.write_text(
        f'[smtp]\nlisten = "127.0.0.1:{smtp_port}"\n'
        f'[http]\nlisten = "127.0.0.1:{http_port}"\n'
        f'[database]\nurl = "sqlite:///{tmp_path / "maild.db"}"\n'
        f'[helpdesk]\nsecret_file = "{tmp_path / "secret"}"\n'
        f'[outgoing]\nmaildir = "{tmp_path / "outgoing"}"\n'
    )
    return cfg


@pytest.mark.parametrize("busy", ["smtp.listen", "http.listen"])
def test_a_busy_port_is_one_line_naming_the_key(tmp_path, busy):
    with socket.socket() as held, socket.socket() as free:
        held.bind(("127.0.0.1", 0))
        held.listen()
        free.bind(("127.0.0.1", 0))
        busy_port, other = held.getsockname()[1], free.getsockname()[1]
        free.close()
        smtp, http = (busy_port, other) if busy == "smtp.listen" else (other, busy_port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILD_")}
        done = subprocess.run([sys.executable, "-m", "maild", "--config",
                               str(_config(tmp_path, smtp, http)), "serve"],
                              env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 78, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"maild: configuration error: {busy}: cannot listen on 127.0.0.1:")
    assert "in use" in last
