"""Migration 0004: a database at 0003 (the release before the console) upgrades in place."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, inspect, text

from magistral.platform.schema import _config, head
from magistral.platform.store import Store


def test_a_0003_database_gains_the_console_tables_and_budgets(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(_config(connection), "0003")
        connection.execute(text("INSERT INTO accounts (name, tier, billing_status, created_at) "
                                "VALUES ('old-co', 'standard', 'active', CURRENT_TIMESTAMP)"))
    engine.dispose()
    store = Store(url)
    assert store.schema_upgrade == ("0003", head())
    tables = set(inspect(store.engine).get_table_names())
    assert {"console_users", "console_sessions", "console_memberships", "console_invitations",
            "console_mail_tokens", "console_login_failures", "console_budget_mails",
            "console_audit"} <= tables
    assert "budget_micros" in {c["name"] for c in inspect(store.engine).get_columns("accounts")}
    assert "budget_micros" in {c["name"] for c in inspect(store.engine).get_columns("api_keys")}
    from magistral.platform.accounts import get_account

    assert get_account(store, "old-co").budget_micros is None


def test_the_console_on_postgresql_upgraded_from_0003(sink) -> None:
    """The same upgrade on PostgreSQL, then the console's main paths there: sign-up, sign-in,
    throttling's time windows, keys, usage by hour (its timestamps come back with a zone)."""
    import asyncio

    from fastapi.testclient import TestClient

    from magistral.api.app import create_app
    from magistral.console.settings import ConsoleSettings
    from magistral.engine.registry import ModelRegistry
    from magistral.platform.gateway import Platform
    from magistral.platform.keys import verify_key
    from magistral.platform.store import engine_url
    from tests.console.conftest import post, sign_in, sign_up
    from tests.platform.services import PrivatePostgres

    database = PrivatePostgres()
    try:
        engine = create_engine(engine_url(database.url))
        with engine.begin() as connection:
            command.upgrade(_config(connection), "0003")
        engine.dispose()
        store = Store(database.url)
        assert store.schema_upgrade == ("0003", head())
        platform = Platform.create(store, replica="pg")
        app = create_app(ModelRegistry([], []), platform, console=ConsoleSettings(smtp_url=sink.url))
        with TestClient(app, base_url="https://testserver") as client:
            sign_up(client, sink, "pg@example.com", "pg-co")
            assert sign_in(client, "pg@example.com", "wrong password!!").status_code == 401
            account_id = sign_in(client, "pg@example.com").json()["accounts"][0]["id"]
            secret = post(client, f"/accounts/{account_id}/keys", {"name": "k"}).json()["secret"]
            call = platform.open_call(verify_key(store, secret), "smollm2-135m-instruct", 100, max_tokens=10)
            asyncio.run(call.finish(10, "stop"))
            hours = client.get(f"/console/api/accounts/{account_id}/usage?group_by=hour").json()["data"]
            assert [(h["requests"], h["total_tokens"]) for h in hours] == [(1, 110)]
            assert client.get(f"/console/api/accounts/{account_id}/keys").json()["data"][0]["last_used_at"]
        platform.close()
        store.dispose()
    finally:
        database.close()
