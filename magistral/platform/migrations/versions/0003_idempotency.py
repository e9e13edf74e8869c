"""Answers kept for retries sent with an Idempotency-Key.

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    # databases made between the table's arrival and Alembic's have it already (from create_all)
    if "idempotent_responses" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "idempotent_responses",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key_id", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("done", sa.Boolean, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("key_id", "idempotency_key"))
    op.create_index("ix_idempotent_responses_key_id", "idempotent_responses", ["key_id"])


def downgrade() -> None:
    op.drop_table("idempotent_responses")
