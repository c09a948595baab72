"""SMTP AUTH for the listener: a file of users with salted PBKDF2 hashes.

``smtp.auth_users_file`` holds one ``user:hash`` per line (``#`` comments);
``maild hash-password`` prints a hash for a password read from stdin:
``pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>``. Only the stdlib.
AUTH is offered only over TLS (STARTTLS), so passwords never cross in clear.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import AuthResult, LoginPassword

from maild.errors import ConfigError

ITERATIONS = 200_000


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"pbkdf2-sha256${iterations}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != "pbkdf2-sha256":
            return False
        got = hashlib.pbkdf2_hmac(
            "sha256", password.encode("utf-8"), bytes.fromhex(salt), int(iterations)
        )
        return hmac.compare_digest(got.hex(), digest)
    except ValueError:
        return False


@dataclass(frozen=True)
class PasswordFile:
    users: dict[str, str]

    @classmethod
    def load(cls, path: Path) -> PasswordFile:
        users: dict[str, str] = {}
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ConfigError("smtp.auth_users_file", f"cannot read {path}: {exc}") from None
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, stored = line.partition(":")
            if not sep or not stored.startswith("pbkdf2-sha256$"):
                raise ConfigError("smtp.auth_users_file", f"{path}:{number}: expected user:hash")
            users[user] = stored
        return cls(users)

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        stored = self.users.get(user)
        ok = stored is not None and check_password(
            auth_data.password.decode("utf-8", "replace"), stored
        )
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)
