"""Outgoing mail through the operator's SMTP server (`--smtp-url`), sent off the event loop.

Without an SMTP server the message is written to the server log (a development setup), so
links can still be followed; nothing else of a person's is logged (never a password)."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

log = logging.getLogger("magistral.console.mail")


class Mailer:
    def __init__(self, smtp_url: str | None, sender: str, timeout: float = 10.0):
        self.smtp_url, self.sender, self.timeout = smtp_url, sender, timeout
        if smtp_url is not None and urlsplit(smtp_url).scheme not in ("smtp", "smtps"):
            raise ValueError("--smtp-url must start with smtp:// or smtps:// "
                             f"(got {urlsplit(smtp_url).scheme!r})")

    def message(self, to: str, subject: str, body: str) -> EmailMessage:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = self.sender, to, subject
        message.set_content(body)
        return message

    def send_now(self, to: str, subject: str, body: str) -> None:
        message = self.message(to, subject, body)
        if self.smtp_url is None:
            log.warning("no --smtp-url: mail to %s not sent; it reads:\n%s", to, message)
            return
        url = urlsplit(self.smtp_url)
        host, secure = url.hostname or "127.0.0.1", url.scheme == "smtps"
        port = url.port or (465 if secure else 25)
        smtp_class = smtplib.SMTP_SSL if secure else smtplib.SMTP
        with smtp_class(host, port, timeout=self.timeout) as smtp:
            if not secure:
                smtp.ehlo()
                if smtp.has_extn("starttls"):  # encrypt whenever the server can
                    smtp.starttls(context=ssl.create_default_context())
            if url.username:
                smtp.login(unquote(url.username), unquote(url.password or ""))
            smtp.send_message(message)

    async def send(self, to: str, subject: str, body: str) -> None:
        """Send without holding the event loop; a failure is logged, not raised (the person can
        ask for the mail again)."""
        try:
            await asyncio.to_thread(self.send_now, to, subject, body)
        except (OSError, smtplib.SMTPException) as exc:
            log.error("mail to %s could not be sent: %s", to, exc)
