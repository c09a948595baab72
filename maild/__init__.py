"""maild: a help-desk mail gateway.

Mail comes in over SMTP/LMTP, IMAP or a pipe, is committed raw before it is
acknowledged, and then runs through a pure pipeline (parse, screen,
correlate, identify, triage, decide) whose Decision is written in one
transaction together with the outgoing mail it causes.
"""

__version__ = "0.1.0"
