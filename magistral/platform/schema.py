"""The database schema's version, kept by Alembic (`platform/migrations/`). A new database is
created from the models and stamped current; an older one is upgraded in place: one written
before Alembic is recognised by its tables (keys without accounts: the first release, 0001;
with accounts: 0002) and stamped so, then migrated. `Store` does this when it opens a
database, and `magistral db upgrade` does it on request."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    return ScriptDirectory(str(MIGRATIONS)).get_current_head() or ""


def _unversioned(tables: set[str]) -> str | None:
    """The revision a database made before Alembic is at; None when it is empty."""
    if "accounts" in tables:
        return "0002"
    if "api_keys" in tables:
        return "0001"
    return None


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring the database to the newest schema; returns (revision before, revision after)."""
    import magistral.console.tables  # noqa: F401 - the console's tables join the metadata
    from magistral.platform.store import Base

    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        if sqlite:  # batch mode drops and recreates tables that others reference
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        with connection.begin():
            if connection.dialect.name == "postgresql":  # replicas starting together: one migrates
                connection.execute(text("SELECT pg_advisory_xact_lock(7421)"))
            config = _config(connection)
            before = MigrationContext.configure(connection).get_current_revision()
            if before is None:
                before = _unversioned(set(inspect(connection).get_table_names()) - {"alembic_version"})
                if before is None:
                    Base.metadata.create_all(connection)
                    command.stamp(config, "head")
                else:
                    command.stamp(config, before)
            if before is not None and before != head():
                command.upgrade(config, "head")
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
    return before, head()
