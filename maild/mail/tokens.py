"""Signed tokens for our plus-addresses (reply addresses, VERP bounce addresses).

HMAC-SHA256 over the parts, truncated to 128 bits and written as 26
lower-case base32 characters (safe in a mail local part, case-insensitive
like many MTAs treat local parts). Verification is constant-time.

The secret lives in ``helpdesk.secret_file``; `load_or_create_secret` makes a
random one (mode 0600, in a directory it creates 0700) the first time, so a
fresh install works, and refuses one that other users may read or change:
whoever reads it can sign reply addresses and run agents' commands.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from maild.errors import ConfigError

TOKEN_BITS = 128
_TOKEN_CHARS = 26  # ceil(128 / 5)


class Signer:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the signing secret must be at least 16 bytes")
        self._secret = secret

    def sign(self, *parts: str) -> str:
        mac = hmac.new(self._secret, "\x1f".join(parts).encode("utf-8"), hashlib.sha256)
        return (
            base64.b32encode(mac.digest()[: TOKEN_BITS // 8]).decode("ascii").lower()[:_TOKEN_CHARS]
        )

    def verify(self, token: str, *parts: str) -> bool:
        return hmac.compare_digest(self.sign(*parts), token.strip().lower())


def check_secret_mode(path: Path) -> None:
    """Refuse a secret file that others may read, or anyone but its owner change."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError("helpdesk.secret_file", f"cannot read {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IRWXO | stat.S_IWGRP):
        raise ConfigError(
            "helpdesk.secret_file",
            f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"make it private: chmod 600 {path}",
        )


def load_or_create_secret(path: Path) -> bytes:
    """Read the secret; create a random one (0600) if the file does not exist."""
    check_secret_mode(path)
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        if not path.parent.is_dir():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data = secrets.token_hex(32).encode("ascii")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise ConfigError("helpdesk.secret_file", f"cannot read {path}: {exc.strerror}") from None
    if len(data) < 32:
        raise ConfigError("helpdesk.secret_file", f"{path} holds fewer than 32 characters")
    return data
