"""Serving benchmark: our engine and llama.cpp on the same GGUF, through the same HTTP API, in one
run. TTFT p50/p95 (32- and 500-token prompts, cold and prefix-cached), batch-1 decode tokens/s,
aggregate tokens/s at 1, 4 and 16 concurrent streams, API overhead per request, peak memory.

    python bench/serving.py                   # both engines (llama.cpp needs magistral[llamacpp])
    python bench/serving.py --engines native
    python bench/serving.py --engines native native-fast   # what batch invariance costs
    python bench/serving.py --engines native native-compiled llamacpp
    (native-fast: serve --fast-batched-decode; native-compiled: serve --compile)
With more than one engine, the last is the baseline of the ratio columns.
Writes bench/results/serving.json and serving.png.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.latency import stream_once  # noqa: E402
from tests.conftest import start_server  # noqa: E402

MODEL = "magistral-medium-latest"
ESSAY = "Write a long, detailed essay about the history of the Roman Empire."


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def chat(client: httpx.Client, messages: list[dict], max_tokens: int) -> dict:
    body = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0}
    return client.post("/v1/chat/completions", json=body).json()


def prompt_of(client: httpx.Client, target: int, salt: str) -> list[dict]:
    """Messages whose chat prompt is `target` tokens; the salt leads, so no prefix is shared."""
    words = max(1, target - 25)
    for _ in range(6):
        messages = [{"role": "system", "content": salt},
                    {"role": "user", "content": " ".join(["hello"] * words)}]
        got = chat(client, messages, 0)["usage"]["prompt_tokens"]
        if got == target:
            break
        words = max(1, words + target - got)
    return messages


def ttft(client: httpx.Client, messages: list[dict]) -> float:
    start = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json={
            "model": MODEL, "messages": messages, "max_tokens": 1, "temperature": 0, "stream": True}) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"finish_reason":null' in line and '"role"' not in line:
                break
            if '"finish_reason":"' in line:
                break
    return (time.perf_counter() - start) * 1000


def aggregate(base_url: str, key: str, streams: int, max_tokens: int = 64) -> float:
    def one(i: int) -> int:
        with httpx.Client(base_url=base_url, timeout=600, headers={"Authorization": f"Bearer {key}"}) as c:
            r = stream_once(c, MODEL, f"{ESSAY} Part {i}.", max_tokens)
            return r["completion_tokens"]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        tokens = sum(pool.map(one, range(streams)))
    return tokens / (time.perf_counter() - start)


def api_overhead_ms(client: httpx.Client, runs: int = 30) -> float:
    """A request that never reaches the model (unknown model: full parse + auth + routing)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        client.post("/v1/chat/completions", json={"model": "no-such-model",
                                                  "messages": [{"role": "user", "content": "hi"}]})
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def measure(engine: str, runs: int) -> dict:
    flags = {"native-fast": ["--engine", "native", "--fast-batched-decode"],
             "native-compiled": ["--engine", "native", "--compile"]}.get(engine, ["--engine", engine])
    started = time.perf_counter()
    server = start_server(Path(tempfile.mkdtemp(prefix=f"bench-{engine}-")), *flags)
    startup_s = time.perf_counter() - started  # to healthy: both default models loaded (and compiled)
    client = httpx.Client(base_url=server.base_url, timeout=600,
                          headers={"Authorization": f"Bearer {server.key}"})
    try:
        stream_once(client, MODEL, ESSAY, 8)  # warm-up
        result: dict = {"engine": engine, "startup_s": startup_s}
        for size in (32, 500):
            cold, cached = [], []
            for i in range(runs):
                messages = prompt_of(client, size, f"Session {engine}-{size}-{i}-{time.time_ns()}.")
                messages[0]["content"] += " x"  # calibration requests must not warm the cache
                cold.append(ttft(client, messages))
                cached.append(ttft(client, messages))  # the same prompt again: a prefix hit
            result[f"ttft_{size}_cold_p50"], result[f"ttft_{size}_cold_p95"] = \
                statistics.median(cold), percentile(cold, 0.95)
            result[f"ttft_{size}_cached_p50"], result[f"ttft_{size}_cached_p95"] = \
                statistics.median(cached), percentile(cached, 0.95)
        rates = []
        for i in range(max(3, runs // 2)):
            r = stream_once(client, MODEL, f"{ESSAY} ({i})", 128)
            rates.append((r["completion_tokens"] - 1) / r["decode_s"])
        result["decode_tps"] = statistics.median(rates)
        for streams in (1, 4, 16):
            result[f"aggregate_tps_{streams}"] = aggregate(server.base_url, server.key, streams)
        result["api_overhead_ms"] = api_overhead_ms(client)
        result["peak_rss_mb"] = peak_rss_mb(server.process.pid)
        return result
    finally:
        client.close()
        server.process.terminate()
        server.process.wait(timeout=30)


ROWS = [("TTFT 32 tok, cold, p50 (ms)", "ttft_32_cold_p50", False),
        ("TTFT 32 tok, cold, p95 (ms)", "ttft_32_cold_p95", False),
        ("TTFT 32 tok, cached, p50 (ms)", "ttft_32_cached_p50", False),
        ("TTFT 500 tok, cold, p50 (ms)", "ttft_500_cold_p50", False),
        ("TTFT 500 tok, cold, p95 (ms)", "ttft_500_cold_p95", False),
        ("TTFT 500 tok, cached, p50 (ms)", "ttft_500_cached_p50", False),
        ("decode, batch 1 (tok/s)", "decode_tps", True),
        ("aggregate, 1 stream (tok/s)", "aggregate_tps_1", True),
        ("aggregate, 4 streams (tok/s)", "aggregate_tps_4", True),
        ("aggregate, 16 streams (tok/s)", "aggregate_tps_16", True),
        ("API overhead per request (ms)", "api_overhead_ms", False),
        ("peak server RSS (MB)", "peak_rss_mb", False),
        ("start-up to healthy (s)", "startup_s", False)]


def report(results: list[dict], out: Path) -> None:
    names = [r["engine"] for r in results]
    base = results[-1]  # the ratio columns: every other engine over the last one
    header = f"{'metric':<32}" + "".join(f"{n:>16}" for n in names)
    header += "".join(f"{n + '/' + base['engine']:>26}" for n in names[:-1])
    print(header)
    for label, key, higher_better in ROWS:
        line = f"{label:<32}" + "".join(f"{r.get(key, 0):>16.1f}" for r in results)
        for r in results[:-1]:
            line += f"{r.get(key, 0) / base[key]:>25.2f}x" if base.get(key) else f"{'':>26}"
        print(line + (" (higher is better)" if higher_better and len(results) > 1 else ""))
    out.mkdir(parents=True, exist_ok=True)
    (out / "serving.json").write_text(json.dumps(results, indent=2))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install 'magistral[bench]'): no plot")
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ttft_keys = [k for _, k, _ in ROWS if k.startswith("ttft") and k.endswith("p50")]
    width = 0.8 / len(results)
    for i, r in enumerate(results):
        axes[0].bar([x + i * width for x in range(len(ttft_keys))], [r[k] for k in ttft_keys], width,
                    label=r["engine"])
        axes[1].plot([1, 4, 16], [r[f"aggregate_tps_{s}"] for s in (1, 4, 16)], marker="o", label=r["engine"])
    axes[0].set_xticks([x + width * (len(results) - 1) / 2 for x in range(len(ttft_keys))],
                       [k.replace("ttft_", "").replace("_p50", "") for k in ttft_keys], rotation=20)
    axes[0].set_ylabel("time to first token, p50 (ms)")
    axes[0].set_yscale("log")
    axes[1].set_xlabel("concurrent streams")
    axes[1].set_ylabel("aggregate tokens/s")
    axes[1].set_xscale("log", base=2)
    for ax in axes:
        ax.legend()
    fig.suptitle("SmolLM2-135M-Instruct (Q4_1 GGUF), 2 CPU cores, through the HTTP API")
    fig.tight_layout()
    fig.savefig(out / "serving.png", dpi=120)
    print(f"wrote {out / 'serving.json'} and {out / 'serving.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--engines", nargs="+", default=["native", "llamacpp"])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()
    results = [measure(engine, args.runs) for engine in args.engines]
    report(results, args.out)


if __name__ == "__main__":
    main()
