"""Schema migrations: a database written by the first release is upgraded in place (its keys
still work, its usage is kept and aggregated), and ends equal to a new database's schema."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from magistral.platform.keys import KEY_PREFIX, hash_key, verify_key
from magistral.platform.schema import head
from magistral.platform.store import Base, Store
from tests.conftest import cli

# the DDL SQLAlchemy emitted for the first release's models (commit d3c73f1)
FIRST_RELEASE = """
CREATE TABLE api_keys (id INTEGER NOT NULL, name VARCHAR(200) NOT NULL, key_hash VARCHAR(64) NOT NULL,
    prefix VARCHAR(16) NOT NULL, created_at DATETIME NOT NULL, revoked_at DATETIME, PRIMARY KEY (id));
CREATE UNIQUE INDEX ix_api_keys_key_hash ON api_keys (key_hash);
CREATE TABLE usage (id INTEGER NOT NULL, request_id VARCHAR(64) NOT NULL, key_id INTEGER NOT NULL,
    model VARCHAR(200) NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL,
    status VARCHAR(32) NOT NULL, latency_ms INTEGER NOT NULL, created_at DATETIME NOT NULL, PRIMARY KEY (id),
    UNIQUE (request_id), FOREIGN KEY(key_id) REFERENCES api_keys (id));
CREATE INDEX ix_usage_key_id ON usage (key_id);
"""
SECRET = KEY_PREFIX + "first-release-key"


def _first_release_database(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(FIRST_RELEASE)
    db.execute("INSERT INTO api_keys (name, key_hash, prefix, created_at) VALUES (?, ?, ?, ?)",
               ("old", hash_key(SECRET), SECRET[:10], "2026-11-01 10:00:00.000000"))
    for i, day in enumerate(["2026-11-01 12:00:00.000000", "2026-11-01 13:00:00.000000",
                             "2026-11-02 09:00:00.000000"]):
        db.execute("INSERT INTO usage (request_id, key_id, model, prompt_tokens, completion_tokens, status, "
                   "latency_ms, created_at) VALUES (?, 1, 'm', 10, 5, 'stop', 100, ?)", (f"r{i}", day))
    db.commit()
    db.close()


def test_the_first_release_database_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _first_release_database(path)
    result = cli("db", "upgrade", "--database-url", f"sqlite:///{path}")
    assert f"revision {head()} (upgraded from 0001)" in result.stdout
    store = Store(f"sqlite:///{path}")
    assert store.schema_upgrade == (head(), head())  # nothing left to do
    key = verify_key(store, SECRET)
    assert key is not None and key.account == "default" and key.name == "old"
    assert store.usage_count() == 3
    with store.engine.connect() as conn:
        daily = conn.exec_driver_sql("SELECT day, requests, prompt_tokens, completion_tokens "
                                     "FROM usage_daily ORDER BY day").fetchall()
        assert [tuple(r) for r in daily] == [("2026-11-01", 2, 20, 10), ("2026-11-02", 1, 10, 5)]
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert not [d for d in differences if d[0] not in ("add_index", "remove_index")], differences
    store.dispose()


def test_a_new_database_is_stamped_current_and_a_pre_alembic_one_is_recognised(tmp_path: Path) -> None:
    new = Store(f"sqlite:///{tmp_path / 'new.db'}")
    assert new.schema_upgrade == (None, head())
    new.dispose()
    db = sqlite3.connect(tmp_path / "new.db")  # as a database made by create_all before migrations
    db.executescript("DROP TABLE alembic_version; DROP TABLE idempotent_responses;")
    db.close()
    again = Store(f"sqlite:///{tmp_path / 'new.db'}")
    assert again.schema_upgrade == ("0002", head())
    again.dispose()
    db = sqlite3.connect(tmp_path / "new.db")  # made by create_all after idempotency, before Alembic
    db.executescript("DROP TABLE alembic_version;")
    db.close()
    third = Store(f"sqlite:///{tmp_path / 'new.db'}")
    assert third.schema_upgrade == ("0002", head())
    third.dispose()


def test_a_0004_database_gains_thinking_tokens_and_keeps_its_usage(tmp_path: Path) -> None:
    """Migration 0005: usage rows and daily aggregates written before it read 0 thinking tokens
    (their completion tokens, which include any trace, unchanged); new usage adds to them."""
    import asyncio
    from datetime import UTC, datetime

    from alembic import command
    from sqlalchemy import create_engine, select, text

    from magistral.platform.gateway import Platform
    from magistral.platform.reports import usage_report
    from magistral.platform.schema import _config
    from magistral.platform.store import UsageDaily, UsageRecord

    url = f"sqlite:///{tmp_path / 'at-0004.db'}"
    today = datetime.now(UTC).date()
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(_config(connection), "0004")
        def insert(table: str, **row: object) -> int:
            names = ", ".join(row)
            values = ", ".join(f":{name}" for name in row)
            return connection.execute(text(f"INSERT INTO {table} ({names}) VALUES ({values})"), row).lastrowid

        now = datetime.now(UTC)
        account = insert("accounts", name="old-co", tier="standard", billing_status="active", created_at=now)
        key = insert("api_keys", name="k", account_id=account, key_hash=hash_key(SECRET), prefix=SECRET[:10],
                     is_admin=False, created_at=now)
        insert("usage", request_id="old", account_id=account, key_id=key, model="m", prompt_tokens=10,
               completion_tokens=5, status="stop", replica="", latency_ms=1, created_at=now)
        insert("usage_daily", account_id=account, key_id=key, model="m", day=today, requests=1,
               prompt_tokens=10, completion_tokens=5)
    engine.dispose()
    store = Store(url)
    assert store.schema_upgrade == ("0004", head()) and head() == "0005"
    with store.session() as s:
        assert s.scalar(select(UsageRecord.thinking_tokens).where(UsageRecord.request_id == "old")) == 0
        assert s.scalar(select(UsageDaily.thinking_tokens)) == 0
    platform = Platform.create(store, replica="test")
    call = platform.open_call(verify_key(store, SECRET), "m", 20, max_tokens=10)
    asyncio.run(call.finish(8, "stop", thinking_tokens=3))
    [line] = usage_report(store, platform.config, account, today, today, "model")
    assert (line["requests"], line["completion_tokens"], line["thinking_tokens"]) == (2, 13, 3)
    with store.engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert not [d for d in differences if d[0] not in ("add_index", "remove_index")], differences
    platform.close()
    store.dispose()
