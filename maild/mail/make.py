"""One automatic mail made: rendered from its templates and composed to bytes.

`maild.desk.apply.Applier.queue_notice` decides everything about a notice
(recipients, addresses, Message-ID, the templates' context) and hands the
rest, the CPU-heavy part, to `make_mail`: in its own thread, or, for
`maild import`, in a process of its own (`maild.service.renderpool`) while
it goes on with the next message. The same function either way, so both
give the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Any, Protocol

from maild.mail.compose import Outgoing, compose
from maild.mail.render import Renderer

# What a ticket's copy of a mail says where the requester's personal link was:
# the link acts as the requester (their page's replies and buttons), so it is
# in their mail only, never in what agents, the API and watchers' pages read.
LINK_NOT_STORED = "[the requester's personal link: in their mail only]"


@dataclass(frozen=True)
class MailJob:
    """Everything a mail needs besides its rendering."""

    template: str
    language: str
    context: Mapping[str, Any]
    mail: Outgoing  # subject, text and html come from the rendering
    link: str | None = None  # the requester's personal link, kept out of the stored text


@dataclass(frozen=True)
class MadeMail:
    subject: str
    text: str  # as the ticket keeps it (without the personal link)
    raw: bytes  # the wire bytes, as the outbox keeps and sends them


def make_mail(renderer: Renderer, job: MailJob) -> MadeMail:
    """Render `job` with `renderer` and compose it (a `ConfigError` for a
    missing template, a `PermanentError` for what cannot be sent)."""
    rendered = renderer.render(job.template, job.language, job.context)
    raw = compose(replace(job.mail, subject=rendered.subject, text=rendered.text,
                          html=rendered.html))  # fmt: skip
    text = rendered.text.replace(job.link, LINK_NOT_STORED) if job.link else rendered.text
    return MadeMail(subject=rendered.subject, text=text, raw=raw)


class MailMaker(Protocol):
    """Makes mail elsewhere while its caller goes on (`maild.service.renderpool`)."""

    def submit(self, job: MailJob) -> Future[MadeMail] | None:
        """The mail, later; None when it cannot (the caller makes it itself)."""

    def finish(self) -> None:
        """Before the caller waits: what is submitted but not on its way yet
        is made now, here (waiting for a round trip would cost more)."""
