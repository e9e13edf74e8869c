"""Budget mails: at 80% of a monthly budget and when a request is refused at 100%, once per
budget, threshold and month (a unique row decides, so replicas send one mail between them)."""

from __future__ import annotations

import asyncio
import logging
import threading

from sqlalchemy.exc import IntegrityError

from magistral.console.mail import Mailer
from magistral.console.tables import BudgetMail
from magistral.console.teams import owners_and_admins
from magistral.platform.budgets import BudgetEvent, dollars
from magistral.platform.store import Store

log = logging.getLogger("magistral.console.alerts")


class BudgetMails:
    def __init__(self, store: Store, mailer: Mailer, console_url: str):
        self.store, self.mailer, self.console_url = store, mailer, console_url
        self._seen: set[tuple[int, int, str, int]] = set()  # spares the database on every request
        self._sending: set[asyncio.Task] = set()  # held until done: the loop keeps only weak references

    def __call__(self, event: BudgetEvent) -> None:
        """Called from request admission (on the event loop): claim, then mail in the background."""
        key = (event.account_id, event.key_id or 0, event.month, event.threshold)
        if key in self._seen:
            return
        self._seen.add(key)
        if not self._claim(key):
            return
        recipients = owners_and_admins(self.store, event.account_id)
        scope = f"key '{event.key_name}' of account '{event.account}'" if event.key_id \
            else f"account '{event.account}'"
        subject = (f"magistral: {scope} reached its monthly budget" if event.threshold >= 100
                   else f"magistral: {scope} has used {event.threshold}% of its monthly budget")
        body = (f"{scope} has spent {dollars(event.spend_micros)} of its {dollars(event.budget_micros)} "
                f"budget for {event.month}.\n\n"
                + ("Requests that would pass the budget are refused (HTTP 402, code budget_exceeded) "
                   "until it is raised or the month ends.\n\n" if event.threshold >= 100 else "")
                + f"Budgets and usage: {self.console_url}\n")
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # admitted outside the event loop (a script, a test): a thread sends
            loop = None
        for to in recipients:
            if loop is None:
                threading.Thread(target=self._send_now, args=(to, subject, body), daemon=True).start()
                continue
            task = loop.create_task(self.mailer.send(to, subject, body))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    def _send_now(self, to: str, subject: str, body: str) -> None:
        try:
            self.mailer.send_now(to, subject, body)
        except Exception as exc:
            log.error("budget mail to %s could not be sent: %s", to, exc)

    def _claim(self, key: tuple[int, int, str, int]) -> bool:
        account_id, key_id, month, threshold = key
        try:
            with self.store.session() as s, s.begin():
                s.add(BudgetMail(account_id=account_id, key_id=key_id, month=month, threshold=threshold))
            return True
        except IntegrityError:  # sent already (by this replica before a restart, or another)
            return False
