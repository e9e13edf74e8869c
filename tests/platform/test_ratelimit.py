"""The sliding-window limiter, in process and in Redis: exact under concurrency, reservations
settle, and entries leave the window (which frees a killed server's reservations)."""

from __future__ import annotations

import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from magistral.platform.ratelimit import MemoryRateLimiter, RedisRateLimiter

REDIS_URL = os.environ.get("MAGISTRAL_TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="set MAGISTRAL_TEST_REDIS_URL (.ci/services.sh does)")


def _limiters():
    yield pytest.param(MemoryRateLimiter, id="memory")
    yield pytest.param(lambda: RedisRateLimiter(REDIS_URL, namespace=f"test-{uuid.uuid4().hex}"),
                       id="redis", marks=needs_redis)


LIMITERS = list(_limiters())


@pytest.mark.parametrize("make", LIMITERS)
def test_exactly_rpm_requests_pass_under_concurrency(make) -> None:
    limiter = make()
    with ThreadPoolExecutor(16) as pool:
        decisions = list(pool.map(lambda i: limiter.acquire(7, f"r{i}", 25, 10**9, 1), range(200)))
    assert sum(d.allowed for d in decisions) == 25
    refused = [d for d in decisions if not d.allowed]
    assert all(d.reason == "requests" and 0 < d.retry_after <= 60 for d in refused)
    assert refused[0].headers()["x-ratelimit-remaining-req-minute"] == "0"


@pytest.mark.parametrize("make", LIMITERS)
def test_token_reservations_cannot_overshoot_and_settle_frees_the_rest(make) -> None:
    limiter = make()
    with ThreadPoolExecutor(16) as pool:
        decisions = list(pool.map(lambda i: limiter.acquire(8, f"r{i}", 1000, 1000, 90), range(50)))
    admitted = [i for i, d in enumerate(decisions) if d.allowed]
    assert len(admitted) == 11  # 11 × 90 = 990 ≤ 1000 < 12 × 90
    assert limiter.acquire(8, "x", 1000, 1000, 90).reason == "tokens"
    limiter.settle(8, f"r{admitted[0]}", 20)  # it used 20 of its 90
    assert limiter.acquire(8, "y", 1000, 1000, 80).allowed
    assert limiter.status(8, 1000, 1000).remaining_tokens == 1000 - 10 * 90 - 20 - 80


@pytest.mark.parametrize("make", LIMITERS)
def test_entries_leave_the_window(make) -> None:
    limiter = make()
    start = 1_000_000.0
    for i in range(3):
        assert limiter.acquire(9, f"r{i}", 3, 100, 30, now=start + i).allowed
    refused = limiter.acquire(9, "late", 3, 100, 30, now=start + 10)
    assert not refused.allowed and refused.retry_after == pytest.approx(50)
    later = limiter.status(9, 3, 100, now=start + 61.5)  # r0 and r1 have left, r2 has not
    assert (later.remaining_requests, later.remaining_tokens) == (2, 70)
    assert limiter.status(9, 3, 100, now=start + 63).remaining_tokens == 100  # nothing stays stuck
