"""Every endpoint goes through the metered seam: limits apply to any mix of them, and each one's
usage shows in /v1/usage and the month's invoice at its own price (embeddings apart)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import httpx

from tests.conftest import Server, new_account, new_key

MODEL = "magistral-medium-latest"


def calls(server: Server) -> list[tuple[str, dict]]:
    return [("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}],
                                      "max_tokens": 2}),
            ("/v1/completions", {"model": MODEL, "prompt": "Hello", "max_tokens": 2}),
            ("/v1/embeddings", {"model": "mistral-embed", "input": ["one", "two"]})]


def test_rate_limits_apply_to_any_mix_of_endpoints(server: Server) -> None:
    for first, second, third in ((0, 1, 2), (2, 1, 0), (1, 2, 1)):
        key = new_key(server.database_url, new_account(server.database_url), "--rpm", "2")
        mix = calls(server)
        for index in (first, second):
            response = server.post(mix[index][0], mix[index][1], key)
            assert response.status_code == 200, response.text
            assert response.headers["x-ratelimit-limit-req-minute"] == "2"
        refused = server.post(mix[third][0], mix[third][1], key)
        assert refused.status_code == 429, mix[third][0]
        assert refused.json()["code"] == "rate_limit_requests" and "retry-after" in refused.headers
    key = new_key(server.database_url, new_account(server.database_url), "--rpm", "2")
    assert server.post("/v1/fim/completions", {"model": MODEL, "prompt": "x"}, key).status_code == 400
    one_token = {"model": MODEL, "prompt": "x", "max_tokens": 1}
    assert server.post("/v1/completions", one_token, key).status_code == 200
    assert server.post("/v1/embeddings", {"model": "mistral-embed", "input": "x"}, key).status_code == 200
    assert server.post("/v1/embeddings", {"model": "mistral-embed", "input": "x"}, key).status_code == 429


def test_each_endpoints_usage_is_reported_and_invoiced(server: Server) -> None:
    key = new_key(server.database_url, new_account(server.database_url))
    used: dict[str, list[int]] = {}
    for path, body in calls(server):
        usage = server.post(path, body, key).json()["usage"]
        model = "all-minilm-l6-v2" if "embeddings" in path else "smollm2-135m-instruct"
        totals = used.setdefault(model, [0, 0, 0])
        totals[0] += 1
        totals[1] += usage["prompt_tokens"]
        totals[2] += usage["completion_tokens"]
    stream = httpx.post(f"{server.base_url}/v1/completions", headers=server.auth(key), timeout=60,
                        json={"model": MODEL, "prompt": "Count: 1, 2,", "max_tokens": 3, "stream": True})
    last_usage = [line for line in stream.text.splitlines() if '"usage"' in line][-1]
    streamed = httpx.Response(200, content=last_usage.removeprefix("data: ")).json()["usage"]
    used["smollm2-135m-instruct"][0] += 1
    used["smollm2-135m-instruct"][1] += streamed["prompt_tokens"]
    used["smollm2-135m-instruct"][2] += streamed["completion_tokens"]
    assert used["all-minilm-l6-v2"][2] == 0 and used["all-minilm-l6-v2"][1] >= 4

    report = httpx.get(f"{server.base_url}/v1/usage", params={"group_by": "model"}, headers=server.auth(key),
                       timeout=30).json()["data"]
    assert {r["model"]: [r["requests"], r["prompt_tokens"], r["completion_tokens"]] for r in report} == used
    month = datetime.now(UTC).strftime("%Y-%m")
    invoice = httpx.get(f"{server.base_url}/v1/usage/invoice", params={"month": month},
                        headers=server.auth(key), timeout=30).json()
    lines = {line["model"]: Decimal(line["amount_usd"]) for line in invoice["lines"]}
    embed_prompt = used["all-minilm-l6-v2"][1]
    micro = Decimal("0.000001")
    assert lines["all-minilm-l6-v2"] == (Decimal("0.10") * embed_prompt / 1_000_000).quantize(micro)
    _, prompt, completion = used["smollm2-135m-instruct"]
    expected = (Decimal("3.50") * prompt + Decimal("10.00") * completion) / 1_000_000
    assert lines["smollm2-135m-instruct"] == expected.quantize(micro)
