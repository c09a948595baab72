"""SMTP AUTH for the listener: a file of users with salted PBKDF2 hashes.

``smtp.auth_users_file`` holds one ``user:hash`` per line (``#`` comments);
``maild hash-password`` prints a hash for a password read from stdin:
``pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>``. Only the stdlib.
AUTH is offered only over TLS (STARTTLS), so passwords never cross in clear.

Against guessing (issue 14, item 6): an unknown user costs the same hash as a
known one (a dummy hash with the file's largest iteration count), so the
answer's timing tells nothing; the listener runs the hash in a small thread
pool, off the event loop, so AUTH cannot stall other sessions; and
`FailureLimiter` counts failed logins per source (IPv4 address or IPv6 /64):
each failure is answered later than the one before, and past the limit AUTH
is refused for that source until its failures age out of the window.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
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
    dummy: str = field(default="", compare=False)  # hashed for unknown users

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
        # As costly as the dearest real hash: a wrong user name answers as late as a
        # wrong password.
        iterations = max((_iterations(h) for h in users.values()), default=ITERATIONS)
        dummy = f"pbkdf2-sha256${iterations}${secrets.token_hex(16)}${secrets.token_hex(32)}"
        return cls(users, dummy)

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """aiosmtpd's authenticator; blocking (the listener runs it in a thread)."""
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        stored = self.users.get(user)
        ok = check_password(auth_data.password.decode("utf-8", "replace"), stored or self.dummy)
        ok = ok and stored is not None
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)


def _iterations(stored: str) -> int:
    try:
        return int(stored.split("$")[1])
    except (IndexError, ValueError):
        return ITERATIONS


class FailureLimiter:
    """Failed logins per source in a sliding window; thread-safe, clock injectable.

    `delay(key)` is how long to hold the answer to a failure (doubling from
    `base_delay` up to eight times it); `blocked(key)` says the source has
    used up `limit` failures within `window` seconds.
    """

    def __init__(
        self, limit: int, window: float, base_delay: float, clock: Any = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.base_delay = base_delay
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str) -> deque[float]:
        now = self._clock()
        times = self._failures.get(key)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def blocked(self, key: str) -> bool:
        with self._lock:
            return len(self._recent(key)) >= self.limit

    def failed(self, key: str) -> float:
        """Record a failure; the delay before answering it, in seconds."""
        with self._lock:
            times = self._recent(key)
            times.append(self._clock())
            self._failures[key] = times
            if len(self._failures) > 100_000:  # bounded memory under a wide attack
                self._failures.pop(next(iter(self._failures)))
            return float(min(self.base_delay * 2 ** (len(times) - 1), self.base_delay * 8))
