"""Durable storage (SQLAlchemy): accounts, their keys, one usage row per request and daily
aggregates of usage, kept in the same transactions as the rows so that reports, invoices and
the dashboard read a few hundred rows instead of millions. SQLite by default; PostgreSQL (or
any SQLAlchemy URL) for several replicas."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

log = logging.getLogger("magistral.store")


def utcnow() -> datetime:
    return datetime.now(UTC)


def default_database_url() -> str:
    """`$MAGISTRAL_DATABASE_URL`, else a SQLite file in the user's data directory."""
    if url := os.environ.get("MAGISTRAL_DATABASE_URL"):
        return url
    base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "magistral"
    base.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{base / 'magistral.db'}"


def engine_url(url: str) -> str:
    """postgresql:// means psycopg 3 here (the driver this package installs)."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


class Base(DeclarativeBase):
    pass


class Account(Base):
    """An organisation: owns keys, is billed. No free tier: only `active` accounts are served."""
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    tier: Mapped[str] = mapped_column(String(50), default="standard")  # default limits
    billing_status: Mapped[str] = mapped_column(String(20), default="active")  # active | suspended | pending
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # monthly budget in micro-dollars (None: none); requests that would pass it are refused (budgets.py)
    budget_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings to tell keys apart
    rpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # None: the tier's default
    tpm: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)  # may read /metrics
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    budget_micros: Mapped[int | None] = mapped_column(BigInteger, nullable=True)  # this key's, monthly


class UsageRecord(Base):
    """One row per request that reached the model. A streamed request's row is written before
    its first token leaves and advanced before each later one (status `in_progress` meanwhile),
    so a crash never leaves tokens that a client saw unbilled."""
    __tablename__ = "usage"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"), index=True)
    model: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)  # thinking tokens included
    # of completion_tokens, those of [THINK]…[/THINK] traces, markers included (billed as output)
    thinking_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # a finish reason, or in_progress, disconnected, error, interrupted
    status: Mapped[str] = mapped_column(String(32))
    replica: Mapped[str] = mapped_column(String(200), default="")
    latency_ms: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class UsageDaily(Base):
    """Pre-aggregated usage per account, key, model and UTC day."""
    __tablename__ = "usage_daily"
    __table_args__ = (UniqueConstraint("account_id", "key_id", "model", "day"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id"))
    model: Mapped[str] = mapped_column(String(200))
    day: Mapped[date] = mapped_column(Date, index=True)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, default=0)  # billions a day fit
    completion_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    thinking_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class IdempotentResponse(Base):
    """The answer to a request sent with an `Idempotency-Key` header, kept for a day so that a
    retry gets it again instead of a second, billed run (`api/idempotency.py`)."""
    __tablename__ = "idempotent_responses"
    __table_args__ = (UniqueConstraint("key_id", "idempotency_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[int] = mapped_column(Integer, index=True)
    idempotency_key: Mapped[str] = mapped_column(String(255))
    fingerprint: Mapped[str] = mapped_column(String(64))  # sha256 of method, path and body
    done: Mapped[bool] = mapped_column(Boolean, default=False)  # False: the first run is going on
    status: Mapped[int] = mapped_column(Integer, default=0)
    headers: Mapped[str] = mapped_column(Text, default="[]")  # JSON [[name, value], ...]
    body: Mapped[bytes] = mapped_column(LargeBinary, default=b"")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class StorageUnavailable(RuntimeError):
    """The database can no longer be trusted with writes (its file vanished, was replaced or
    became read-only, or its server cannot be reached): requests are refused with 503."""


class Store:
    HEALTH_CHECK_INTERVAL = 0.0  # seconds between two looks at the file (a few stat calls: ~20 µs)

    def __init__(self, url: str | None = None):
        self.url = url or default_database_url()
        url = engine_url(self.url)
        _prepare_sqlite_file(url)
        self._file = _sqlite_path(url)
        self._identity = _identity(self._file) if self._file else None
        self._checked_at, self._problem = 0.0, None
        pool = {} if url.startswith("sqlite") else {"pool_size": 20, "max_overflow": 20}
        if url.startswith("postgresql"):  # a server that went silent must not hold requests forever
            pool["connect_args"] = {"connect_timeout": 5}
        self.engine: Engine = create_engine(url, pool_pre_ping=True, **pool)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        from magistral.platform.schema import upgrade

        self.schema_upgrade = upgrade(self.engine)  # (before, after): an older database is migrated
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def check_writable(self) -> None:
        """Raise StorageUnavailable when the SQLite file this store opened is gone, replaced or
        read-only. SQLite itself would go on writing into a deleted file (lost at the next
        restart) or die of SIGBUS on an immutable one. Cheap: a stat now and then."""
        if self._file is None:
            return
        now = time.monotonic()
        if now - self._checked_at >= self.HEALTH_CHECK_INTERVAL:
            self._checked_at, self._problem = now, _file_problem(self._file, self._identity)
            if self._problem:
                log.error("storage: %s; refusing requests until it is fixed", self._problem)
        if self._problem:
            raise StorageUnavailable(self._problem)

    def check_reachable(self) -> None:
        """check_writable, and for a database server one round trip (`SELECT 1`): /health says
        503 while PostgreSQL is down, so a load balancer sends requests to other replicas."""
        self.check_writable()
        if self._file is not None:
            return
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            cause = getattr(exc, "orig", None) or exc
            raise StorageUnavailable(f"the database cannot be reached ({type(cause).__name__})") from exc

    def usage_count(self) -> int:
        with self.session() as s:
            return s.scalar(select(func.count()).select_from(UsageRecord)) or 0

    def dispose(self) -> None:
        self.engine.dispose()


class StorageError(RuntimeError):
    """The database cannot be used as given; the message says why (for the operator)."""


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _file_problem(path: Path, identity: tuple[int, int] | None) -> str | None:
    current = _identity(path)
    if current is None:
        return f"the database file {path} has been deleted"
    if identity is not None and current != identity:
        return f"the database file {path} has been replaced by another file"
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if part.exists() and not os.access(part, os.W_OK):
            return f"the database file {part} is read-only"
    if not os.access(path.parent, os.W_OK):
        return f"the database folder {path.parent} is read-only"
    return None


def _prepare_sqlite_file(url: str) -> None:
    """A SQLite database holds key hashes and usage: its file is the owner's alone (0600; SQLite
    gives its -wal and -shm files the database file's mode). A folder that does not exist is an
    operator's typo, said plainly rather than as a driver traceback."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database)
    if not path.parent.is_dir():
        raise StorageError(f"cannot open the database {path}: the folder {path.parent} does not exist")
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if part.exists() and part.stat().st_mode & 0o077 and part.stat().st_uid == os.getuid():
            part.chmod(0o600)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets the CLI create or revoke keys while the server reads; NORMAL sync is still
    # durable across process crashes in WAL mode
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


__all__ = ["Account", "ApiKey", "Base", "IdempotentResponse", "Session", "StorageError", "StorageUnavailable",
           "Store", "UsageDaily", "UsageRecord", "default_database_url", "utcnow"]
