"""API keys: random secrets shown once, stored only as SHA-256 hashes, each owned by an account,
with optional per-key limits, expiry and revocation."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from magistral.platform.accounts import DEFAULT_ACCOUNT, ensure_account, get_account
from magistral.platform.store import Account, ApiKey, Store, utcnow

KEY_PREFIX = "mg-"


@dataclass
class KeyInfo:
    id: int
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None
    account_id: int = 0
    account: str = ""
    account_status: str = "active"
    tier: str = "standard"
    rpm: int | None = None  # None: the account tier's default
    tpm: int | None = None
    expires_at: datetime | None = None
    is_admin: bool = False
    budget_micros: int | None = None  # this key's monthly budget (None: none)
    account_budget_micros: int | None = None  # its account's

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and _aware(self.expires_at) <= utcnow()


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(store: Store, name: str, account: str | None = None, *, rpm: int | None = None,
               tpm: int | None = None, expires_at: datetime | None = None,
               admin: bool = False) -> tuple[KeyInfo, str]:
    """Returns the key's record and its secret; the secret is not kept anywhere. Without an
    account the key belongs to the operator's `default` account (made on first use)."""
    for name_, limit in (("rpm", rpm), ("tpm", tpm)):
        if limit is not None and limit < 1:
            raise ValueError(f"{name_} must be at least 1 (got {limit}); leave it out for the tier's")
    if expires_at is not None and _aware(expires_at) <= utcnow():
        raise ValueError(f"the expiry {expires_at:%Y-%m-%d %H:%M} is in the past")
    if account is None:
        owner = ensure_account(store, DEFAULT_ACCOUNT, tier="enterprise")  # the operator's own
    else:
        owner = get_account(store, account)
        if owner is None:
            raise ValueError(f"no account named {account!r} (magistral accounts create {account})")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    with store.session() as s, s.begin():
        row = ApiKey(name=name, account_id=owner.id, key_hash=hash_key(secret), prefix=secret[:10],
                     rpm=rpm, tpm=tpm, expires_at=expires_at, is_admin=admin)
        s.add(row)
        s.flush()
        info = _info(row, s.get(Account, owner.id))
    return info, secret


def list_keys(store: Store, account: str | None = None) -> list[KeyInfo]:
    with store.session() as s:
        query = select(ApiKey, Account).join(Account, ApiKey.account_id == Account.id).order_by(ApiKey.id)
        if account is not None:
            query = query.where(Account.name == account)
        return [_info(k, a) for k, a in s.execute(query)]


def set_key_budget(store: Store, key_id: int, budget_micros: int | None) -> bool:
    """A key's own monthly budget in micro-dollars (None: only its account's applies)."""
    if budget_micros is not None and budget_micros < 0:
        raise ValueError("a budget cannot be negative")
    with store.session() as s, s.begin():
        row = s.get(ApiKey, key_id)
        if row is None:
            return False
        row.budget_micros = budget_micros
        return True


def revoke_key(store: Store, key_id: int) -> bool:
    with store.session() as s, s.begin():
        row = s.get(ApiKey, key_id)
        if row is None:
            return False
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return True


def verify_key(store: Store, secret: str) -> KeyInfo | None:
    """The key with this secret and its account, or None (unknown or revoked). Expiry and the
    account's status are left to the caller, which answers them with their own messages."""
    digest = hash_key(secret)
    with store.session() as s:
        found = s.execute(select(ApiKey, Account).join(Account, ApiKey.account_id == Account.id)
                          .where(ApiKey.key_hash == digest)).first()
        if found is None:
            hmac.compare_digest(digest, "0" * 64)  # same work whether or not the key exists
            return None
        row, account = found
        if not hmac.compare_digest(row.key_hash, digest) or row.revoked_at:
            return None
        return _info(row, account)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite drops the zone


def _info(row: ApiKey, account: Account) -> KeyInfo:
    return KeyInfo(id=row.id, name=row.name, prefix=row.prefix, created_at=row.created_at,
                   revoked_at=row.revoked_at, account_id=account.id, account=account.name,
                   account_status=account.billing_status, tier=account.tier, rpm=row.rpm, tpm=row.tpm,
                   expires_at=row.expires_at and _aware(row.expires_at), is_admin=row.is_admin,
                   budget_micros=row.budget_micros, account_budget_micros=account.budget_micros)
