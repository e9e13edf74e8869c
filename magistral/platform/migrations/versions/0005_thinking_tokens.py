"""Thinking tokens: of each request's completion tokens, those of its reasoning trace
([THINK]…[/THINK], markers included), on the usage rows and their daily aggregates. Rows written
before this revision did not count them apart: they read 0 (their completion tokens, which
include any trace, are unchanged, and so is what they were billed).

Revision ID: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

TABLES = {"usage": sa.Integer, "usage_daily": sa.BigInteger}


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    for table, kind in TABLES.items():
        if "thinking_tokens" in {c["name"] for c in inspector.get_columns(table)}:
            continue  # made by create_all after this revision's models
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("thinking_tokens", kind, nullable=False, server_default="0"))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("thinking_tokens")
