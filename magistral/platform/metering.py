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
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite

from magistral.platform.store import Store, UsageDaily, UsageRecord, utcnow

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
        self._thread = threading.Thread(target=self._run, name="magistral-usage", daemon=True)
        self._thread.start()

    async def write(self, usage: Usage) -> None:
        """Commit this state of the request's row; returns when it is durable."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._enqueue(_Pending(replace(usage), done, loop))
        await done

    def write_nowait(self, usage: Usage) -> None:
        """Queue the final state of a request that is being torn down (no one can await)."""
        self._enqueue(_Pending(replace(usage), None, None))

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
        latest: dict[str, Usage] = {}
        for usage in batch:  # several states of one request in a round: the last one wins
            latest[usage.request_id] = usage
        daily: dict[tuple[int, int, str, date], list[int]] = defaultdict(lambda: [0, 0, 0])
        with self.store.session() as s, s.begin():
            for usage in latest.values():
                before = self._committed.get(usage.request_id)
                day = usage.created_at.astimezone(UTC).date()
                totals = daily[(usage.account_id, usage.key_id, usage.model, day)]
                if before is None:
                    s.add(UsageRecord(**vars(usage)))
                    totals[0] += 1
                    totals[1] += usage.prompt_tokens
                    totals[2] += usage.completion_tokens
                else:
                    s.execute(update(UsageRecord).where(UsageRecord.request_id == usage.request_id).values(
                        completion_tokens=usage.completion_tokens, status=usage.status,
                        latency_ms=usage.latency_ms))
                    totals[2] += usage.completion_tokens - before.completion_tokens
            for (account_id, key_id, model, day), (requests, prompt, completion) in daily.items():
                s.execute(_upsert_daily(self.store.dialect, account_id, key_id, model, day, requests, prompt,
                                        completion))
        for usage in latest.values():
            if usage.final:
                self._committed.pop(usage.request_id, None)
            else:
                self._committed[usage.request_id] = usage


def _resolve(done: asyncio.Future, error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(RuntimeError(f"usage could not be recorded: {error}"))


def _upsert_daily(dialect: str, account_id: int, key_id: int, model: str, day: date, requests: int,
                  prompt: int, completion: int):
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(UsageDaily).values(
        account_id=account_id, key_id=key_id, model=model, day=day, requests=requests, prompt_tokens=prompt,
        completion_tokens=completion)
    table = UsageDaily.__table__
    return statement.on_conflict_do_update(
        index_elements=["account_id", "key_id", "model", "day"],
        set_={"requests": table.c.requests + statement.excluded.requests,
              "prompt_tokens": table.c.prompt_tokens + statement.excluded.prompt_tokens,
              "completion_tokens": table.c.completion_tokens + statement.excluded.completion_tokens})


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
