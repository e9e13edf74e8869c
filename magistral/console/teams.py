"""Who belongs to which account, in which role, and invitations to join one.

Roles: `owner` (everything, including members and roles), `admin` (keys, budgets,
invitations), `member` (reads usage, keys and invoices). An invitation is a one-time mail link
for one address; accepting it needs a signed-in person with that (verified) address."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select

from magistral.console.people import Person, aware
from magistral.console.tables import ROLES, Invitation, Membership, User
from magistral.console.tokens import digest, new_token
from magistral.platform.store import Account, Store, utcnow

MANAGERS = ("owner", "admin")


@dataclass
class AccountView:
    id: int
    name: str
    tier: str
    status: str
    role: str
    budget_micros: int | None


def accounts_of(store: Store, user_id: int) -> list[AccountView]:
    with store.session() as s:
        rows = s.execute(select(Account, Membership.role)
                         .join(Membership, Membership.account_id == Account.id)
                         .where(Membership.user_id == user_id).order_by(Account.id)).all()
        return [AccountView(a.id, a.name, a.tier, a.billing_status, role, a.budget_micros)
                for a, role in rows]


def role_in(store: Store, user_id: int, account_id: int) -> str | None:
    with store.session() as s:
        return s.scalar(select(Membership.role).where(Membership.user_id == user_id,
                                                      Membership.account_id == account_id))


def members(store: Store, account_id: int) -> list[dict]:
    with store.session() as s:
        rows = s.execute(select(User.id, User.email, Membership.role, Membership.created_at)
                         .join(Membership, Membership.user_id == User.id)
                         .where(Membership.account_id == account_id).order_by(Membership.id)).all()
        pending = s.execute(select(Invitation).where(Invitation.account_id == account_id,
                                                     Invitation.accepted_at.is_(None),
                                                     Invitation.expires_at > utcnow())).scalars().all()
    return [{"user_id": i, "email": e, "role": r, "since": _iso(t)} for i, e, r, t in rows] + \
        [{"invitation_id": inv.id, "email": inv.email, "role": inv.role, "invited": _iso(inv.created_at)}
         for inv in pending]


def invite(store: Store, account_id: int, email: str, role: str, by: Person, lifetime: timedelta) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    token = new_token()
    with store.session() as s, s.begin():
        s.add(Invitation(account_id=account_id, email=email, role=role, token_hash=digest(token),
                         invited_by=by.id, expires_at=utcnow() + lifetime))
    return token


def accept(store: Store, token: str, who: Person) -> int | None:
    """The account joined, or None (unknown, used, expired, or meant for another address)."""
    with store.session() as s, s.begin():
        row = s.scalar(select(Invitation).where(Invitation.token_hash == digest(token)))
        if (row is None or row.accepted_at is not None or aware(row.expires_at) <= utcnow()
                or row.email != who.email or not who.verified):
            return None
        row.accepted_at = utcnow()
        existing = s.scalar(select(Membership).where(Membership.account_id == row.account_id,
                                                     Membership.user_id == who.id))
        if existing is None:
            s.add(Membership(account_id=row.account_id, user_id=who.id, role=row.role))
        return row.account_id


def set_role(store: Store, account_id: int, user_id: int, role: str | None) -> bool:
    """Change a member's role, or remove them (role None); an account keeps at least one owner."""
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    with store.session() as s, s.begin():
        row = s.scalar(select(Membership).where(Membership.account_id == account_id,
                                                Membership.user_id == user_id))
        if row is None:
            return False
        owners = s.scalar(select(func.count()).select_from(Membership)
                          .where(Membership.account_id == account_id, Membership.role == "owner")) or 0
        if row.role == "owner" and role != "owner" and owners <= 1:
            raise ValueError("an account needs an owner: make someone else owner first")
        if role is None:
            s.execute(delete(Membership).where(Membership.id == row.id))
        else:
            row.role = role
        return True


def owners_and_admins(store: Store, account_id: int) -> list[str]:
    with store.session() as s:
        return list(s.scalars(select(User.email).join(Membership, Membership.user_id == User.id)
                              .where(Membership.account_id == account_id, Membership.role.in_(MANAGERS))))


def _iso(moment: datetime | None) -> str | None:
    return aware(moment).isoformat() if moment else None
