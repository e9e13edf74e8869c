"""Soak: waves of concurrent streams of mixed lengths against one server (SQLite) for a while;
errors, requests/s, tokens/s, billing exactness and the server's RSS after each wave, with and
without what the prefix cache holds (it fills up to its budget as new prompts come).

    python bench/soak.py [--minutes 10] [--streams 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import new_account, new_key, start_server, stop_server  # noqa: E402
from tests.platform.test_soak import billed_rows, run_load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--streams", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), "--no-embedding-model", "--max-active", "16")
        try:
            key = new_key(server.database_url, new_account(server.database_url), "--rpm", "1000000",
                          "--tpm", "1000000000")
            admin = new_key(server.database_url, new_account(server.database_url), "--admin")
            started, waves, rss, rest, errors, billed = time.monotonic(), 0, [], [], [], {}
            while time.monotonic() - started < args.minutes * 60:
                result = run_load(server, key, streams=args.streams, rounds=1, admin_key=admin)
                waves += 1
                rss += result.rss_mb
                rest += result.rss_without_cache_mb
                errors += result.errors
                billed.update(result.billed)
                print(f"wave {waves}: {len(result.errors)} errors, RSS {result.rss_mb[-1]:.0f} MB, of which "
                      f"prefix cache {result.prefix_cache_mb[-1]:.0f} MB", flush=True)
            elapsed = time.monotonic() - started
            rows = billed_rows(server.database_url, set(billed))
            exact = sum(1 for rid, (p, c) in billed.items() if rows.get(rid, (0, 0, ""))[:2] == (p, c))
            tokens = sum(c for _, c in billed.values())
            print(f"\n{waves} waves of {args.streams} streams in {elapsed / 60:.1f} min: "
                  f"{len(billed)} requests ({len(billed) / elapsed:.2f}/s), {tokens / elapsed:.1f} tokens/s, "
                  f"{len(errors)} errors, {exact}/{len(billed)} billed exactly once; RSS after wave 1 "
                  f"{rss[0]:.0f} MB, median {statistics.median(rss):.0f} MB, last {rss[-1]:.0f} MB, "
                  f"max {max(rss):.0f} MB; without the prefix cache: after wave 1 {rest[0]:.0f} MB, "
                  f"median {statistics.median(rest):.0f} MB, last {rest[-1]:.0f} MB")
        finally:
            stop_server(server)


if __name__ == "__main__":
    main()
