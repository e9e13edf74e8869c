"""The metered call without a server: admission and reservations, checkpoints before tokens are
sent, settle, abandon, double finish, and what /v1/usage and the invoice read afterwards."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from magistral.platform.billing import list_cost
from magistral.platform.calls import RateLimited, reservation
from magistral.platform.gateway import Platform
from magistral.platform.keys import KeyInfo, create_key
from magistral.platform.reports import usage_report
from magistral.platform.store import Store, UsageRecord


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    platform = Platform.create(Store(f"sqlite:///{tmp_path / 'calls.db'}"), replica="test")
    yield platform
    platform.close()


def new_key(platform: Platform, rpm: int = 100, tpm: int = 10_000) -> KeyInfo:
    info, _ = create_key(platform.store, "k", rpm=rpm, tpm=tpm)
    return info


def row(platform: Platform, request_id: str) -> UsageRecord:
    with platform.store.session() as s:
        return s.scalar(select(UsageRecord).where(UsageRecord.request_id == request_id))


def remaining_tokens(platform: Platform, key: KeyInfo) -> int:
    return platform.remaining(key).remaining_tokens


def test_reservation_formula() -> None:
    assert reservation(100, 50, 1, 4096, 4096) == 150
    assert reservation(100, 50, 3, 4096, 4096) == 250  # n completions
    assert reservation(100, None, 1, 4096, 1000) == 1100  # the platform's default for no max_tokens
    assert reservation(4000, 500, 2, 4096, 4096) == 4000 + 2 * 96  # capped by the context left
    assert reservation(10, 0, 1, 4096, 4096) == 10  # embeddings: the prompt only


def test_open_call_reserves_and_finish_settles(platform: Platform) -> None:
    key = new_key(platform)
    call = platform.open_call(key, "m", 100, max_tokens=400, max_context=4096)
    assert call.headers["x-ratelimit-remaining-tokens-minute"] == str(10_000 - 500)
    assert remaining_tokens(platform, key) == 10_000 - 500
    asyncio.run(call.finish(30, "stop"))
    assert remaining_tokens(platform, key) == 10_000 - 130  # settled to what was used
    record = row(platform, call.id)
    assert (record.prompt_tokens, record.completion_tokens, record.status) == (100, 30, "stop")
    assert call.usage() == {"prompt_tokens": 100, "completion_tokens": 30, "total_tokens": 130,
                            "completion_tokens_details": {"reasoning_tokens": 0}}


def test_refusals_are_rate_limited_with_headers(platform: Platform) -> None:
    key = new_key(platform, rpm=2, tpm=1000)
    with pytest.raises(RateLimited) as too_big:
        platform.open_call(key, "m", 100, max_tokens=2000, max_context=8192)
    assert too_big.value.code == "rate_limit_tokens" and "lower max_tokens" in too_big.value.message
    platform.open_call(key, "m", 10, max_tokens=0)
    platform.open_call(key, "m", 10, max_tokens=0)
    with pytest.raises(RateLimited) as third:
        platform.open_call(key, "m", 10, max_tokens=0)
    assert third.value.code == "rate_limit_requests" and third.value.status == 429
    assert int(third.value.headers["retry-after"]) >= 1
    assert third.value.headers["x-ratelimit-remaining-req-minute"] == "0"


def test_checkpoints_are_durable_before_they_return(platform: Platform) -> None:
    key = new_key(platform)
    call = platform.open_call(key, "m", 10, max_tokens=100, max_context=4096)

    async def stream() -> list[tuple[int, str]]:
        seen = []
        for tokens in (1, 2, 3):
            await call.checkpoint(tokens)
            record = row(platform, call.id)  # what a SIGKILL right now would leave
            seen.append((record.completion_tokens, record.status))
        await call.finish(3, "length")
        return seen

    assert asyncio.run(stream()) == [(1, "in_progress"), (2, "in_progress"), (3, "in_progress")]
    assert row(platform, call.id).status == "length"
    with pytest.raises(RuntimeError):
        asyncio.run(call.checkpoint(4))  # nothing may be sent after the end


def test_abandon_bills_what_was_generated_and_only_the_first_end_counts(platform: Platform) -> None:
    key = new_key(platform)
    call = platform.open_call(key, "m", 10, max_tokens=100, max_context=4096)
    asyncio.run(call.checkpoint(5))
    call.abandon(7, "disconnected")
    call.abandon(9, "error")  # ignored
    asyncio.run(call.finish(11, "stop"))  # ignored
    platform.journal.flush()
    record = row(platform, call.id)
    assert (record.completion_tokens, record.status) == (7, "disconnected")
    assert remaining_tokens(platform, key) == 10_000 - 17  # settled once
    requests = platform.metrics.requests.labels("m", "disconnected")._value.get()
    assert requests == 1 and platform.metrics.requests.labels("m", "stop")._value.get() == 0


def test_calls_of_several_endpoints_land_in_the_report(platform: Platform) -> None:
    key = new_key(platform)

    async def calls() -> None:
        chat = platform.open_call(key, "chat-model", 20, max_tokens=10, max_context=4096)
        await chat.finish(10, "length")
        embed = platform.open_call(key, "embed-model", 7, max_tokens=0)
        await embed.finish(0, "stop")

    asyncio.run(calls())
    today = datetime.now(UTC).date()
    report = usage_report(platform.store, platform.config, key.account_id, today, today, "model")
    by_model = {r["model"]: (r["requests"], r["prompt_tokens"], r["completion_tokens"]) for r in report}
    assert by_model == {"chat-model": (1, 20, 10), "embed-model": (1, 7, 0)}


def test_disabled_platform_meters_nothing(tmp_path: Path) -> None:
    platform = Platform.create(Store(f"sqlite:///{tmp_path / 'off.db'}"), replica="t", enabled=False)
    key = new_key(platform, rpm=1)
    for _ in range(3):  # no limits either
        call = platform.open_call(key, "m", 10, max_tokens=5)
        asyncio.run(call.finish(5, "stop"))
    assert row(platform, call.id) is None
    platform.close()


def test_several_prompts_reserve_each_and_settle_together(platform: Platform) -> None:
    key = new_key(platform)
    call = platform.open_call(key, "m", [100, 4000], max_tokens=500, n=2, max_context=4096)
    assert call.prompt_tokens == 4100
    assert remaining_tokens(platform, key) == 10_000 - (100 + 2 * 500) - (4000 + 2 * 96)
    asyncio.run(call.finish(40, "stop"))
    assert remaining_tokens(platform, key) == 10_000 - 4140


def test_a_void_call_bills_nothing_and_frees_its_reservation(platform: Platform) -> None:
    key = new_key(platform)
    call = platform.open_call(key, "m", 300, max_tokens=200, max_context=4096)
    asyncio.run(call.void("error"))
    record = row(platform, call.id)
    assert (record.prompt_tokens, record.completion_tokens, record.status) == (0, 0, "error")
    assert remaining_tokens(platform, key) == 10_000
    today = datetime.now(UTC).date()
    report = usage_report(platform.store, platform.config, key.account_id, today, today, "model")
    assert report == [{"model": "m", "requests": 1, "prompt_tokens": 0, "completion_tokens": 0,
                       "thinking_tokens": 0, "total_tokens": 0, "cost_usd": "0.000000"}]
    asyncio.run(call.void("error"))  # a second end changes nothing


def test_thinking_tokens_ride_with_the_completion_tokens_they_are_part_of(platform: Platform) -> None:
    """Each checkpoint, abandon and finish bills thinking tokens with the completion tokens they
    are part of (the row a SIGKILL leaves has both); the daily aggregate, the report and the
    usage object carry them; the price does not change (they are output tokens)."""
    key = new_key(platform)
    call = platform.open_call(key, "m", 10, max_tokens=100, max_context=4096)

    async def stream() -> list[tuple[int, int]]:
        seen = []
        for completion, thinking in ((4, 4), (9, 6)):
            await call.checkpoint(completion, thinking_tokens=thinking)
            record = row(platform, call.id)
            seen.append((record.completion_tokens, record.thinking_tokens))
        return seen

    assert asyncio.run(stream()) == [(4, 4), (9, 6)]
    call.abandon(12, "disconnected", thinking_tokens=6)
    platform.journal.flush()
    record = row(platform, call.id)
    assert (record.completion_tokens, record.thinking_tokens, record.status) == (12, 6, "disconnected")
    assert call.usage() == {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22,
                            "completion_tokens_details": {"reasoning_tokens": 6}}
    other = platform.open_call(key, "m", 10, max_tokens=100, max_context=4096)
    asyncio.run(other.finish(5, "stop", thinking_tokens=9))  # never more than the completion's
    assert row(platform, other.id).thinking_tokens == 5
    today = datetime.now(UTC).date()
    [line] = usage_report(platform.store, platform.config, key.account_id, today, today, "model")
    assert (line["completion_tokens"], line["thinking_tokens"], line["total_tokens"]) == (17, 11, 37)
    assert line["cost_usd"] == str(list_cost(platform.config, "m", 20, 17))
