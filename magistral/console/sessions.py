"""Signed-in browsers and sign-in throttling.

A session is a random secret in a Secure, HttpOnly, SameSite=Strict cookie; the database keeps
its hash and the session's CSRF token (a synchronizer token the page sends back in a header on
every change). Signing in always makes a new session (a session id planted before sign-in is
never promoted: no fixation); signing out everywhere deletes them all."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select

from magistral.console.people import Person, aware, person
from magistral.console.tables import LoginFailure, SessionRow, User
from magistral.console.tokens import digest, new_token
from magistral.platform.store import Store, utcnow


def start(store: Store, user_id: int, lifetime: timedelta, replacing: str | None = None) -> tuple[str, str]:
    """A new session (cookie secret, CSRF token); the one the browser had, if any, ends."""
    token, csrf = new_token(), new_token()
    with store.session() as s, s.begin():
        if replacing:
            s.execute(delete(SessionRow).where(SessionRow.token_hash == digest(replacing)))
        s.execute(delete(SessionRow).where(SessionRow.user_id == user_id, SessionRow.expires_at <= utcnow()))
        s.add(SessionRow(token_hash=digest(token), user_id=user_id, csrf_token=csrf,
                         expires_at=utcnow() + lifetime))
    return token, csrf


def lookup(store: Store, token: str) -> tuple[Person, str] | None:
    """The signed-in person and the session's CSRF token, or None (unknown or expired)."""
    with store.session() as s:
        found = s.execute(select(SessionRow, User).join(User, SessionRow.user_id == User.id)
                          .where(SessionRow.token_hash == digest(token))).first()
        if found is None or aware(found[0].expires_at) <= utcnow():
            return None
        return person(found[1]), found[0].csrf_token


def end(store: Store, token: str) -> None:
    with store.session() as s, s.begin():
        s.execute(delete(SessionRow).where(SessionRow.token_hash == digest(token)))


def end_all(store: Store, user_id: int) -> int:
    with store.session() as s, s.begin():
        return s.execute(delete(SessionRow).where(SessionRow.user_id == user_id)).rowcount or 0


def count(store: Store, user_id: int) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(SessionRow)
                        .where(SessionRow.user_id == user_id)) or 0


def throttled(store: Store, email: str, ip: str, window: timedelta, per_email: int, per_ip: int) -> bool:
    """Too many recent failures for this address or from this client: refuse before checking."""
    since = utcnow() - window
    with store.session() as s:
        by_email = s.scalar(select(func.count()).select_from(LoginFailure)
                            .where(LoginFailure.email == email, LoginFailure.at >= since)) or 0
        by_ip = s.scalar(select(func.count()).select_from(LoginFailure)
                         .where(LoginFailure.ip == ip, LoginFailure.at >= since)) or 0
    return by_email >= per_email or by_ip >= per_ip


def record_failure(store: Store, email: str, ip: str, window: timedelta) -> None:
    with store.session() as s, s.begin():
        s.add(LoginFailure(email=email[:320], ip=ip[:64]))
        s.execute(delete(LoginFailure).where(LoginFailure.at < utcnow() - 2 * window))  # old ones go


def clear_failures(store: Store, email: str) -> None:
    with store.session() as s, s.begin():
        s.execute(delete(LoginFailure).where(LoginFailure.email == email))
