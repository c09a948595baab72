"""The few exceptions maild raises on purpose.

`TransientError` means "try again later" (SMTP 451, exit 75, outbox retry);
`PermanentError` means "this will never work" (quarantine, dead letter);
`ConfigError` names the configuration key that is wrong.
"""

from __future__ import annotations


class MaildError(Exception):
    """Base class of maild's own errors."""


class TransientError(MaildError):
    """A failure that may succeed if retried later."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(MaildError):
    """A failure that will not go away by retrying."""


class ConfigError(MaildError):
    """A configuration value is missing or invalid; `key` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message
