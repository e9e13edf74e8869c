"""Accounts own keys and are billed; keys get limits, expiry and an admin flag; usage rows name
their account and replica; daily aggregates, filled from the rows already there. Existing keys
join the operator's `default` account (tier enterprise), as keys made without an account do.

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("tier", sa.String(50), nullable=False),
        sa.Column("billing_status", sa.String(20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False))
    op.execute(sa.text("INSERT INTO accounts (name, tier, billing_status, created_at) "
                       "VALUES ('default', 'enterprise', 'active', CURRENT_TIMESTAMP)"))
    default = "(SELECT id FROM accounts WHERE name = 'default')"

    with op.batch_alter_table("api_keys") as keys:
        keys.add_column(sa.Column("account_id", sa.Integer, nullable=True))
        keys.add_column(sa.Column("rpm", sa.BigInteger, nullable=True))
        keys.add_column(sa.Column("tpm", sa.BigInteger, nullable=True))
        keys.add_column(sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()))
        keys.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(sa.text(f"UPDATE api_keys SET account_id = {default}"))
    with op.batch_alter_table("api_keys") as keys:
        keys.alter_column("account_id", existing_type=sa.Integer, nullable=False)
        keys.create_foreign_key("fk_api_keys_account_id", "accounts", ["account_id"], ["id"])
        keys.create_index("ix_api_keys_account_id", ["account_id"])

    with op.batch_alter_table("usage") as usage:
        usage.add_column(sa.Column("account_id", sa.Integer, nullable=True))
        usage.add_column(sa.Column("replica", sa.String(200), nullable=False, server_default=""))
    op.execute(sa.text("UPDATE usage SET account_id = (SELECT account_id FROM api_keys "
                       "WHERE api_keys.id = usage.key_id)"))
    with op.batch_alter_table("usage") as usage:
        usage.alter_column("account_id", existing_type=sa.Integer, nullable=False)
        usage.create_foreign_key("fk_usage_account_id", "accounts", ["account_id"], ["id"])
        usage.create_index("ix_usage_account_id", ["account_id"])
        usage.create_index("ix_usage_created_at", ["created_at"])

    op.create_table(
        "usage_daily",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("account_id", "key_id", "model", "day"))
    op.create_index("ix_usage_daily_account_id", "usage_daily", ["account_id"])
    op.create_index("ix_usage_daily_day", "usage_daily", ["day"])
    day = "date(created_at)" if op.get_bind().dialect.name == "sqlite" \
        else "CAST((created_at AT TIME ZONE 'UTC') AS DATE)"  # the UTC day, as the journal counts it
    op.execute(sa.text(
        "INSERT INTO usage_daily "
        "(account_id, key_id, model, day, requests, prompt_tokens, completion_tokens) "
        f"SELECT account_id, key_id, model, {day}, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) "
        f"FROM usage GROUP BY account_id, key_id, model, {day}"))


def downgrade() -> None:
    raise NotImplementedError("accounts cannot be taken back out of a database")
