"""Signed tokens for our plus-addresses (reply addresses, VERP bounce addresses).

HMAC-SHA256 over the parts, truncated to 128 bits and written as 26
lower-case base32 characters (safe in a mail local part, case-insensitive
like many MTAs treat local parts). Verification is constant-time.

The secret lives in ``helpdesk.secret_file``; `load_or_create_secret` makes a
random one (mode 0600) the first time, so a fresh install works.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
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


def load_or_create_secret(path: Path) -> bytes:
    """Read the secret; create a random one (0600) if the file does not exist."""
    try:
        data = path.read_bytes().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
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
