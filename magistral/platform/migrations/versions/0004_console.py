"""The console: monthly budgets on accounts and keys; people, memberships, invitations,
sessions, mail tokens, failed logins, budget mails and the audit log.

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def _when(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    # a database made by create_all (stamped by its tables, as 0002) may have all of this already
    for table in ("accounts", "api_keys"):
        if "budget_micros" not in {c["name"] for c in inspector.get_columns(table)}:
            with op.batch_alter_table(table) as batch:
                batch.add_column(sa.Column("budget_micros", sa.BigInteger, nullable=True))
    if "console_users" in inspector.get_table_names():
        return

    op.create_table(
        "console_users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        _when("email_verified_at", nullable=True),
        sa.Column("is_operator", sa.Boolean, nullable=False),
        _when("created_at"))
    op.create_index("ix_console_users_email", "console_users", ["email"], unique=True)
    op.create_table(
        "console_memberships",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("console_users.id"), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        _when("created_at"),
        sa.UniqueConstraint("account_id", "user_id"))
    op.create_index("ix_console_memberships_account_id", "console_memberships", ["account_id"])
    op.create_index("ix_console_memberships_user_id", "console_memberships", ["user_id"])
    op.create_table(
        "console_invitations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("invited_by", sa.Integer, sa.ForeignKey("console_users.id"), nullable=False),
        _when("created_at"), _when("expires_at"), _when("accepted_at", nullable=True))
    op.create_index("ix_console_invitations_account_id", "console_invitations", ["account_id"])
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("console_users.id"), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        _when("created_at"), _when("expires_at"))
    op.create_index("ix_console_sessions_token_hash", "console_sessions", ["token_hash"], unique=True)
    op.create_index("ix_console_sessions_user_id", "console_sessions", ["user_id"])
    op.create_table(
        "console_mail_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey("console_users.id"), nullable=False),
        sa.Column("purpose", sa.String(20), nullable=False),
        _when("expires_at"), _when("used_at", nullable=True))
    op.create_index("ix_console_mail_tokens_token_hash", "console_mail_tokens", ["token_hash"], unique=True)
    op.create_index("ix_console_mail_tokens_user_id", "console_mail_tokens", ["user_id"])
    op.create_table(
        "console_login_failures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("ip", sa.String(64), nullable=False),
        _when("at"))
    for column in ("email", "ip", "at"):
        op.create_index(f"ix_console_login_failures_{column}", "console_login_failures", [column])
    op.create_table(
        "console_budget_mails",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
        sa.Column("key_id", sa.Integer, nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("threshold", sa.Integer, nullable=False),
        _when("sent_at"),
        sa.UniqueConstraint("account_id", "key_id", "month", "threshold"))
    op.create_table(
        "console_audit",
        sa.Column("id", sa.Integer, primary_key=True),
        _when("at"),
        sa.Column("actor", sa.String(400), nullable=False),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("account_id", sa.Integer, nullable=True),
        sa.Column("detail", sa.Text, nullable=False))
    op.create_index("ix_console_audit_at", "console_audit", ["at"])
    op.create_index("ix_console_audit_account_id", "console_audit", ["account_id"])


def downgrade() -> None:
    for table in ("console_audit", "console_budget_mails", "console_login_failures", "console_mail_tokens",
                  "console_sessions", "console_invitations", "console_memberships", "console_users"):
        op.drop_table(table)
    with op.batch_alter_table("api_keys") as keys:
        keys.drop_column("budget_micros")
    with op.batch_alter_table("accounts") as accounts:
        accounts.drop_column("budget_micros")
