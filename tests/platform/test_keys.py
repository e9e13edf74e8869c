from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from magistral.platform.keys import create_key, hash_key, list_keys, revoke_key, verify_key
from magistral.platform.metering import Usage, UsageJournal
from magistral.platform.store import ApiKey, Store


def test_key_lifecycle_stores_only_a_hash(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    info, secret = create_key(store, "alice")
    assert secret.startswith("mg-") and len(secret) > 40
    with store.session() as s:
        row = s.scalar(select(ApiKey))
    assert row.key_hash == hash_key(secret) and secret not in (row.key_hash, row.prefix, row.name)
    assert secret.encode() not in (tmp_path / "k.db").read_bytes()
    assert verify_key(store, secret).id == info.id
    assert verify_key(store, secret + "x") is None
    assert revoke_key(store, info.id) and verify_key(store, secret) is None
    assert not revoke_key(store, 999)
    assert [k.revoked_at is not None for k in list_keys(store)] == [True]


def test_usage_rows_persist(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'u.db'}"
    store = Store(url)
    info, _ = create_key(store, "bob")
    journal = UsageJournal(store)
    journal.write_nowait(Usage("r1", info.account_id, info.id, "m", 10, 20, "stop", 5))
    journal.close()
    store.dispose()
    assert Store(url).usage_count() == 1  # a fresh connection sees it
