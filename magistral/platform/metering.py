"""Usage rows and their daily aggregates, written by a group-commit journal.

A streamed request's row is written before its first token leaves and advanced before each
later one: `await journal.write(...)` returns once the row (and its day's aggregate) are
committed, so a token a client received is always billed, even if the server is killed the
next instant. Writes of concurrent requests share one transaction per round, so the cost per
token stays at a fraction of a commit.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import bindparam, insert, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from magistral.platform.store import StorageUnavailable, Store, UsageDaily, UsageRecord, utcnow

log = logging.getLogger("magistral.metering")
IN_PROGRESS = "in_progress"


@dataclass
class Usage:
    request_id: str
    account_id: int
    key_id: int
    model: str
    prompt_tokens: int
    completion_tokens: int
    status: str  # IN_PROGRESS until the request ends
    latency_ms: int = 0
    replica: str = ""
    created_at: datetime = field(default_factory=utcnow)
    thinking_tokens: int = 0  # of completion_tokens, a reasoning trace's (last: fields keep their places)

    @property
    def final(self) -> bool:
        return self.status != IN_PROGRESS


@dataclass
class _Pending:
    usage: Usage
    done: asyncio.Future | None  # None: nobody waits (a request being torn down)
    loop: asyncio.AbstractEventLoop | None


class UsageJournal:
    def __init__(self, store: Store):
        self.store = store
        self._pending: list[_Pending] = []
        self._committed: dict[str, Usage] = {}  # last committed state of rows still in progress
        self._lock = threading.Condition()
        self._closed = False
        self._busy = False
        self._connection = None  # the journal thread's own
        self._upsert = _upsert_daily(store.dialect)
        self._thread = threading.Thread(target=self._run, name="magistral-usage", daemon=True)
        self._thread.start()

    async def write(self, usage: Usage) -> None:
        """Commit this state of the request's row; returns when it is durable."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._enqueue(_Pending(usage, done, loop))
        await done

    def write_nowait(self, usage: Usage) -> None:
        """Queue the final state of a request that is being torn down (no one can await)."""
        self._enqueue(_Pending(usage, None, None))

    def flush(self, timeout: float = 10.0) -> None:
        """Block until everything queued so far is committed (shutdown, tests)."""
        with self._lock:
            self._lock.wait_for(lambda: not self._pending and not self._busy, timeout=timeout)

    def close(self) -> None:
        self.flush()
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        self._thread.join(timeout=5)
        if self._connection is not None:
            self._connection.close()

    def _enqueue(self, pending: _Pending) -> None:
        with self._lock:
            self._pending.append(pending)
            self._lock.notify_all()

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._pending or self._closed)
                if self._closed and not self._pending:
                    return
                batch, self._pending = self._pending, []
                self._busy = True
            error: BaseException | None = None
            try:
                self.store.check_writable()  # never into a deleted file, never SIGBUS on a frozen one
                self._commit([p.usage for p in batch])
            except Exception as exc:  # the waiting requests fail: they must not send unbilled tokens
                log.exception("usage write failed")
                error = exc
            with self._lock:
                self._busy = False
                self._lock.notify_all()
            for p in batch:
                if p.done is not None and p.loop is not None:
                    p.loop.call_soon_threadsafe(_resolve, p.done, error)

    def _commit(self, batch: list[Usage]) -> None:
        """One transaction for the round, in Core statements (this runs once per streamed token
        of every request, so it is kept lean)."""
        latest: dict[str, Usage] = {}
        for usage in batch:  # several states of one request in a round: the last one wins
            latest[usage.request_id] = usage
        # (account, key, model, day) → [requests, prompt, completion, thinking]
        daily: dict[tuple[int, int, str, date], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        new_rows, updates = [], []
        for usage in latest.values():
            before = self._committed.get(usage.request_id)
            day = usage.created_at.astimezone(UTC).date()
            totals = daily[(usage.account_id, usage.key_id, usage.model, day)]
            if before is None:
                new_rows.append(vars(usage))
                totals[0] += 1
                totals[1] += usage.prompt_tokens
                totals[2] += usage.completion_tokens
                totals[3] += usage.thinking_tokens
            else:
                # the prompt's count may be corrected at the end (an upstream's own count)
                updates.append({"rid": usage.request_id, "prompt_tokens": usage.prompt_tokens,
                                "completion_tokens": usage.completion_tokens,
                                "thinking_tokens": usage.thinking_tokens, "status": usage.status,
                                "latency_ms": usage.latency_ms})
                totals[1] += usage.prompt_tokens - before.prompt_tokens
                totals[2] += usage.completion_tokens - before.completion_tokens
                totals[3] += usage.thinking_tokens - before.thinking_tokens
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = self.store.engine.connect()
            try:
                with self._connection.begin():
                    if new_rows:
                        self._connection.execute(insert(UsageRecord), new_rows)
                    if updates:
                        self._connection.execute(_UPDATE_ROW, updates)
                    self._connection.execute(self._upsert, [
                        {"account_id": account, "key_id": key, "model": model, "day": day,
                         "requests": requests, "prompt": prompt, "completion": completion,
                         "thinking": thinking}
                        for (account, key, model, day), (requests, prompt, completion, thinking)
                        in daily.items()])
                break
            except DBAPIError as exc:
                self._connection.close()  # a fresh connection next time
                self._connection = None
                # the database server restarted since this connection was opened: the round's
                # transaction never began there, so it is safe to run it once more
                if not exc.connection_invalidated or attempt == 2:
                    raise
            except Exception:
                self._connection.close()
                self._connection = None
                raise
        for usage in latest.values():
            if usage.final:
                self._committed.pop(usage.request_id, None)
            else:
                self._committed[usage.request_id] = usage


_UPDATE_ROW = (update(UsageRecord).where(UsageRecord.request_id == bindparam("rid"))
               .values(prompt_tokens=bindparam("prompt_tokens"),
                       completion_tokens=bindparam("completion_tokens"),
                       thinking_tokens=bindparam("thinking_tokens"), status=bindparam("status"),
                       latency_ms=bindparam("latency_ms")))


def _resolve(done: asyncio.Future, error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        # a 503 for a whole answer: it is not sent, as it could not be billed
        done.set_exception(StorageUnavailable(f"usage could not be recorded: {error}"))


def _upsert_daily(dialect: str):
    """Add a round's counts to the (account, key, model, day) aggregate, creating it if needed.
    Built once per dialect: constructing it per round cost more than executing it."""
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = make(UsageDaily).values(
        account_id=bindparam("account_id"), key_id=bindparam("key_id"), model=bindparam("model"),
        day=bindparam("day"), requests=bindparam("requests"), prompt_tokens=bindparam("prompt"),
        completion_tokens=bindparam("completion"), thinking_tokens=bindparam("thinking"))
    table = UsageDaily.__table__
    return statement.on_conflict_do_update(
        index_elements=["account_id", "key_id", "model", "day"],
        set_={"requests": table.c.requests + statement.excluded.requests,
              "prompt_tokens": table.c.prompt_tokens + statement.excluded.prompt_tokens,
              "completion_tokens": table.c.completion_tokens + statement.excluded.completion_tokens,
              "thinking_tokens": table.c.thinking_tokens + statement.excluded.thinking_tokens})


def reconcile(store: Store, replica: str, stale_after: timedelta = timedelta(hours=1)) -> int:
    """At startup: rows this replica left `in_progress` (it was killed), and any replica's rows
    untouched for an hour, become `interrupted`. Their tokens stay billed: clients got them."""
    with store.session() as s, s.begin():
        in_progress = UsageRecord.status == IN_PROGRESS
        mine = s.execute(update(UsageRecord).where(in_progress, UsageRecord.replica == replica)
                         .values(status="interrupted"))
        stale = s.execute(update(UsageRecord).where(UsageRecord.status == IN_PROGRESS,
                                                    UsageRecord.created_at < utcnow() - stale_after)
                          .values(status="interrupted"))
        return (mine.rowcount or 0) + (stale.rowcount or 0)
