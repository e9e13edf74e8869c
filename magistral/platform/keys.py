"""API keys: random secrets shown once, stored only as SHA-256 hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from magistral.platform.store import ApiKey, Store, utcnow

KEY_PREFIX = "mg-"


@dataclass
class KeyInfo:
    id: int
    name: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(store: Store, name: str) -> tuple[KeyInfo, str]:
    """Returns the key's record and its secret; the secret is not kept anywhere."""
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    with store.session() as s, s.begin():
        row = ApiKey(name=name, key_hash=hash_key(secret), prefix=secret[:10])
        s.add(row)
        s.flush()
        info = _info(row)
    return info, secret


def list_keys(store: Store) -> list[KeyInfo]:
    with store.session() as s:
        return [_info(k) for k in s.scalars(select(ApiKey).order_by(ApiKey.id))]


def revoke_key(store: Store, key_id: int) -> bool:
    with store.session() as s, s.begin():
        row = s.get(ApiKey, key_id)
        if row is None:
            return False
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        return True


def verify_key(store: Store, secret: str) -> KeyInfo | None:
    """The active key with this secret, or None (unknown or revoked)."""
    digest = hash_key(secret)
    with store.session() as s:
        row = s.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
        if row is None or not hmac.compare_digest(row.key_hash, digest) or row.revoked_at:
            return None
        return _info(row)


def _info(row: ApiKey) -> KeyInfo:
    return KeyInfo(id=row.id, name=row.name, prefix=row.prefix, created_at=row.created_at,
                   revoked_at=row.revoked_at)
