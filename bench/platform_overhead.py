"""What the platform layer (auth, rate limits with reservations, metering) costs a request.

Two servers on the same model run side by side, one with the layer and one with it switched off
(`--no-platform-for-benchmarks`, a flag meant for this benchmark only), and requests alternate
between them: the added latency is the difference of the medians, for a 1-token completion and
for a 64-token stream (whose usage row is advanced before every token). This is done with SQLite
(one replica) and, when `--postgres-url` and `--redis-url` are given, with PostgreSQL + Redis.
Then the layer alone, in process with no model: requests/s of authenticate → admit → meter →
settle from 32 concurrent tasks.

    python bench/platform_overhead.py [--postgres-url postgresql://… --redis-url redis://…] [--requests 60]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import Server, cli, start_server  # noqa: E402

MODEL = "magistral-medium-latest"


def fresh_postgres(url: str) -> str:
    import psycopg

    name = f"magistral_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return url.rsplit("/", 1)[0] + "/" + name


def one(server: Server, stream: bool, max_tokens: int) -> float:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": max_tokens,
            "temperature": 0, "stream": stream}
    headers = {"Authorization": f"Bearer {server.key}"}
    start = time.perf_counter()
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, headers=headers,
                      timeout=120) as response:
        response.raise_for_status()
        for _ in response.iter_bytes():
            pass
    return (time.perf_counter() - start) * 1000


def side_by_side(backend: str, database_url: str | None, extra: list[str], requests: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp())
    servers = {}
    for label, flags in (("on", extra), ("off", ["--no-platform-for-benchmarks"])):
        url = database_url or f"sqlite:///{tmp / (label + '.db')}"
        (tmp / label).mkdir()
        key = cli("keys", "create", "--name", "bench", "--rpm", "1000000", "--tpm", "1000000000",
                  "--database-url", url).stdout.strip()  # limits that a benchmark never reaches
        servers[label] = start_server(tmp / label, *flags, database_url=url, key=key)
    try:
        out = {}
        for name, stream, tokens in (("1-token completion", False, 1), ("64-token stream", True, 64)):
            times: dict[str, list[float]] = {"on": [], "off": []}
            for label in ("on", "off"):  # warm-up
                one(servers[label], stream, tokens)
            for i in range(requests):
                for label in (("on", "off") if i % 2 == 0 else ("off", "on")):
                    times[label].append(one(servers[label], stream, tokens))
            on, off = statistics.median(times["on"]), statistics.median(times["off"])
            out[name] = (on, off)
            print(f"{backend:<22} {name:<20} with platform {on:8.1f} ms   without {off:8.1f} ms   "
                  f"added {on - off:+6.1f} ms", flush=True)
        return out
    finally:
        for server in servers.values():
            server.process.terminate()
            server.process.wait(timeout=20)


async def layer_alone(database_url: str, redis_url: str | None, total: int = 2000,
                      concurrency: int = 32) -> float:
    from magistral.platform.gateway import Platform
    from magistral.platform.keys import create_key as make_key
    from magistral.platform.metering import Usage
    from magistral.platform.store import Store

    store = Store(database_url)
    platform = Platform.create(store, redis_url=redis_url, replica="bench",
                               namespace=f"bench-{uuid.uuid4().hex}")
    _, secret = make_key(store, "bench", rpm=10**9, tpm=10**12)
    queue = iter(range(total))

    async def worker() -> None:
        for i in queue:
            key = await asyncio.to_thread(platform.authenticate, secret)
            request_id = f"bench-{uuid.uuid4().hex}-{i}"
            decision = await asyncio.to_thread(platform.admit, key, request_id, 100)
            assert decision.allowed
            await platform.journal.write(Usage(request_id, key.account_id, key.id, "m", 50, 50, "stop",
                                               replica="bench"))
            await asyncio.to_thread(platform.limiter.settle, key.id, request_id, 100)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    rate = total / (time.perf_counter() - start)
    platform.close()
    store.dispose()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--postgres-url", default=os.environ.get("MAGISTRAL_TEST_POSTGRES_URL"))
    parser.add_argument("--redis-url", default=os.environ.get("MAGISTRAL_TEST_REDIS_URL"))
    parser.add_argument("--requests", type=int, default=60, help="per server and kind of request")
    args = parser.parse_args()
    setups = [("SQLite, in-process", None, [])]
    if args.postgres_url and args.redis_url:
        setups.append(("PostgreSQL + Redis", fresh_postgres(args.postgres_url),
                       ["--redis-url", args.redis_url, "--redis-namespace", f"bench-{uuid.uuid4().hex[:8]}"]))
    for backend, url, extra in setups:
        side_by_side(backend, url, extra, args.requests)
    alone = [("SQLite, in-process", f"sqlite:///{Path(tempfile.mkdtemp()) / 'alone.db'}", None)]
    if len(setups) > 1:
        alone.append(("PostgreSQL + Redis", fresh_postgres(args.postgres_url), args.redis_url))
    for backend, url, redis_url in alone:
        rates = [asyncio.run(layer_alone(url, redis_url)) for _ in range(3)]
        print(f"{backend:<22} platform layer alone: {statistics.median(rates):8.0f} requests/s "
              f"(median of 3 × 2000, 32 concurrent)", flush=True)


if __name__ == "__main__":
    main()
