"""What the operator configures for the console (`magistral serve` flags or environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta


@dataclass
class ConsoleSettings:
    # smtp://[user:password@]host[:port] (plain, or STARTTLS when the server offers it),
    # smtps://… (TLS from the start); None: mails are written to the server log instead
    smtp_url: str | None = field(default_factory=lambda: os.environ.get("MAGISTRAL_SMTP_URL"))
    mail_from: str = field(default_factory=lambda: os.environ.get("MAGISTRAL_MAIL_FROM",
                                                                   "magistral <no-reply@localhost>"))
    # the address people reach the console at, for links in mails (default: the serving address)
    public_url: str | None = field(default_factory=lambda: os.environ.get("MAGISTRAL_PUBLIC_URL"))
    session_lifetime: timedelta = timedelta(days=7)
    verify_lifetime: timedelta = timedelta(days=2)
    reset_lifetime: timedelta = timedelta(hours=1)
    invite_lifetime: timedelta = timedelta(days=7)
    # sign-in throttling: failures within the window, per address and per client address
    throttle_window: timedelta = timedelta(minutes=15)
    max_failures_per_email: int = 5
    max_failures_per_ip: int = 30
