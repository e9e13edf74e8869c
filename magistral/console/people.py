"""People: sign-up (a user, and a `pending` account they own), address verification and
password reset by one-time mail tokens. Sync functions over the store (run off the loop)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from magistral.console.passwords import check_policy, hash_password
from magistral.console.tables import MailToken, Membership, SessionRow, User
from magistral.console.tokens import digest, new_token
from magistral.platform.accounts import get_account
from magistral.platform.store import Account, Store, utcnow

MAILS_PER_HOUR = 5  # links of one kind per person: the forms cannot be used to flood someone's inbox
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")
ACCOUNT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,38}[a-z0-9]$")


@dataclass
class Person:
    id: int
    email: str
    verified: bool
    is_operator: bool


class SignupRefused(ValueError):
    """Said to the person as it is (a taken account name, a weak password, a bad address)."""


def normal_email(email: str) -> str:
    email = email.strip().lower()
    if not EMAIL.match(email) or len(email) > 320:
        raise SignupRefused("that is not an email address")
    return email


def person(row: User) -> Person:
    return Person(row.id, row.email, row.email_verified_at is not None, row.is_operator)


def signup(store: Store, email: str, password: str, account_name: str,
           verify_lifetime: timedelta = timedelta(days=2)) -> tuple[Person, str] | None:
    """A new person and their `pending` account, with a verification token to mail; None when
    the address has an account already (the caller mails its owner instead of saying so here,
    so the form does not tell strangers who has an account)."""
    email = normal_email(email)
    try:
        check_policy(password)
    except ValueError as exc:
        raise SignupRefused(str(exc)) from exc
    if not ACCOUNT_NAME.match(account_name):
        raise SignupRefused("the account name must be 3-40 lower-case letters, digits or dashes")
    password_hash = hash_password(password)  # first, so a known address answers as slowly as a new one
    with store.session() as s:
        if s.scalar(select(User.id).where(User.email == email)) is not None:
            return None
    if get_account(store, account_name) is not None:
        raise SignupRefused(f"the account name {account_name!r} is taken")
    try:
        with store.session() as s, s.begin():  # the person, their account and its owner: all or nothing
            account = Account(name=account_name, tier="standard", billing_status="pending")
            user = User(email=email, password_hash=password_hash, is_operator=False)
            s.add_all([account, user])
            s.flush()
            s.add(Membership(account_id=account.id, user_id=user.id, role="owner"))
            return person(user), _mail_token(s, user.id, "verify", verify_lifetime)
    except IntegrityError:  # the address or the name was taken meanwhile
        if find(store, email) is not None:
            return None
        raise SignupRefused(f"the account name {account_name!r} is taken") from None


class TooManyMails(Exception):
    """This person was sent MAILS_PER_HOUR links of this kind in the last hour already."""


def _mail_token(s, user_id: int, purpose: str, lifetime: timedelta) -> str:
    recent = s.scalar(select(func.count()).select_from(MailToken).where(
        MailToken.user_id == user_id, MailToken.purpose == purpose,
        MailToken.expires_at > utcnow() + lifetime - timedelta(hours=1))) or 0
    if recent >= MAILS_PER_HOUR:
        raise TooManyMails
    token = new_token()
    s.add(MailToken(token_hash=digest(token), user_id=user_id, purpose=purpose,
                    expires_at=utcnow() + lifetime))
    return token


def verify_token_for(store: Store, user_id: int, lifetime: timedelta) -> str:
    with store.session() as s, s.begin():
        return _mail_token(s, user_id, "verify", lifetime)


def _use(s, token: str, purpose: str) -> MailToken | None:
    row = s.scalar(select(MailToken).where(MailToken.token_hash == digest(token),
                                           MailToken.purpose == purpose))
    if row is None or row.used_at is not None or aware(row.expires_at) <= utcnow():
        return None
    row.used_at = utcnow()
    return row


def verify_email(store: Store, token: str) -> Person | None:
    with store.session() as s, s.begin():
        row = _use(s, token, "verify")
        if row is None:
            return None
        user = s.get(User, row.user_id)
        user.email_verified_at = user.email_verified_at or utcnow()
        return person(user)


def find(store: Store, email: str) -> tuple[Person, str] | None:
    """The person with this address and their password hash."""
    with store.session() as s:
        row = s.scalar(select(User).where(User.email == email.strip().lower()))
        return (person(row), row.password_hash) if row else None


def reset_token(store: Store, email: str, lifetime: timedelta) -> tuple[Person, str] | None:
    with store.session() as s, s.begin():
        row = s.scalar(select(User).where(User.email == email.strip().lower()))
        if row is None:
            return None
        return person(row), _mail_token(s, row.id, "reset", lifetime)


def reset_password(store: Store, token: str, password: str) -> Person | None:
    """Set a new password from a reset link; every session of the person ends (a reset is what
    someone does who fears another has their password). Following the link proves the address."""
    password_hash = hash_password(password)  # ValueError for a weak one, before the token is used
    with store.session() as s, s.begin():
        row = _use(s, token, "reset")
        if row is None:
            return None
        user = s.get(User, row.user_id)
        user.password_hash = password_hash
        user.email_verified_at = user.email_verified_at or utcnow()
        s.execute(delete(SessionRow).where(SessionRow.user_id == user.id))
        return person(user)


def set_operator(store: Store, email: str, operator: bool = True) -> bool:
    with store.session() as s, s.begin():
        row = s.scalar(select(User).where(User.email == email.strip().lower()))
        if row is None:
            return False
        row.is_operator = operator
        return True


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite drops the zone
