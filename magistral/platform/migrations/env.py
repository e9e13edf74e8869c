"""Alembic's entry point: migrations run on the connection that `magistral.platform.schema`
hands over (no alembic.ini, no URL of its own)."""

from alembic import context

import magistral.console.tables  # noqa: F401 - the console's tables share the metadata
from magistral.platform.store import Base

connection = context.config.attributes["connection"]
# batch mode: SQLite alters a table by copying it, which is how columns become NOT NULL there
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
