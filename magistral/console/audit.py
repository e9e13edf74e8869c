"""The audit log: who did what to which account, when. Operator actions from the console, the
CLI and the billing hook all write here."""

from __future__ import annotations

import getpass
import json
from typing import Any

from sqlalchemy import select

from magistral.console.people import aware
from magistral.console.tables import AuditEntry
from magistral.platform.store import Account, Store


def record(store: Store, actor: str, action: str, account_id: int | None, **detail: Any) -> None:
    with store.session() as s, s.begin():
        s.add(AuditEntry(actor=actor, action=action, account_id=account_id,
                         detail=json.dumps(detail, sort_keys=True, default=str)))


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def entries(store: Store, account_id: int | None = None, limit: int = 200) -> list[dict[str, Any]]:
    query = (select(AuditEntry, Account.name).outerjoin(Account, Account.id == AuditEntry.account_id)
             .order_by(AuditEntry.id.desc()).limit(limit))
    if account_id is not None:
        query = query.where(AuditEntry.account_id == account_id)
    with store.session() as s:
        return [{"at": aware(e.at).isoformat(), "actor": e.actor, "action": e.action,
                 "account": name, "detail": json.loads(e.detail or "{}")} for e, name in s.execute(query)]
