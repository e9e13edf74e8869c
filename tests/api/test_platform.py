"""The platform layer through the real server: accounts and their billing status, expiry,
per-key rate limits (429 shape and headers), /v1/usage and the invoice (API = CLI), /metrics."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from magistral.client import Client, RateLimitError
from tests import conftest
from tests.conftest import Server, cli

MODEL = "magistral-medium-latest"
HI = [{"role": "user", "content": "Hi"}]


def new_account(server: Server, *extra: str) -> str:
    return conftest.new_account(server.database_url, *extra)


def new_key(server: Server, account: str, *extra: str) -> str:
    return conftest.new_key(server.database_url, account, *extra)


def post(server: Server, key: str, **body) -> httpx.Response:
    return server.post("/v1/chat/completions", {"model": MODEL, "messages": HI, "max_tokens": 2, **body}, key)


def test_suspended_account_gets_403_until_activated(server: Server) -> None:
    account = new_account(server, "--status", "suspended")
    key = new_key(server, account)
    refused = post(server, key)
    assert refused.status_code == 403
    assert refused.json()["code"] == "account_inactive" and account in refused.json()["message"]
    cli("accounts", "activate", account, "--database-url", server.database_url)
    assert post(server, key).status_code == 200
    cli("accounts", "suspend", account, "--database-url", server.database_url)
    assert post(server, key).status_code == 403


def test_expired_key_gets_401(server: Server) -> None:
    expiry = datetime.now(UTC) + timedelta(seconds=2)  # a past date is refused at creation
    key = new_key(server, new_account(server), "--expires", expiry.isoformat())
    time.sleep(max(0.0, (expiry - datetime.now(UTC)).total_seconds()) + 0.5)
    response = post(server, key)
    assert response.status_code == 401 and "expired" in response.json()["message"]


def test_requests_per_minute_429_with_headers_and_the_sdk_sees_it(server: Server) -> None:
    key = new_key(server, new_account(server), "--rpm", "3")
    ok = [post(server, key) for _ in range(3)]
    assert [r.status_code for r in ok] == [200, 200, 200]
    assert [r.headers["x-ratelimit-remaining-req-minute"] for r in ok] == ["2", "1", "0"]
    assert ok[0].headers["x-ratelimit-limit-req-minute"] == "3"
    assert int(ok[0].headers["x-ratelimit-limit-tokens-minute"]) > 0
    refused = post(server, key)
    assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60
    body = refused.json()
    assert body["object"] == "error" and body["type"] == "rate_limit_error"
    assert body["code"] == "rate_limit_requests"
    assert refused.headers["x-ratelimit-remaining-req-minute"] == "0"
    with Client(server.base_url, key, max_retries=0) as client, pytest.raises(RateLimitError) as caught:
        client.chat.complete(model=MODEL, messages=HI)
    assert caught.value.status_code == 429


def test_tokens_are_reserved_and_streams_carry_the_headers(server: Server) -> None:
    key = new_key(server, new_account(server), "--tpm", "400")
    too_big = post(server, key, max_tokens=1000)
    assert too_big.status_code == 429 and "lower max_tokens" in too_big.json()["message"]
    body = {"model": MODEL, "messages": HI, "max_tokens": 150, "stream": True}
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {key}"}) as r:
        reserved = 400 - int(r.headers["x-ratelimit-remaining-tokens-minute"])
        lines = [line for line in r.iter_lines() if line.startswith("data: {")]
    used = json.loads(lines[-1][6:])["usage"]
    assert reserved == used["prompt_tokens"] + 150  # prompt + max_tokens held while it ran
    after = post(server, key, max_tokens=1)  # the reservation was settled to what was used
    assert after.status_code == 200
    remaining = int(after.headers["x-ratelimit-remaining-tokens-minute"])
    assert remaining == 400 - used["total_tokens"] - after.json()["usage"]["prompt_tokens"] - 1


def test_usage_and_invoice_agree_with_the_cli(server: Server) -> None:
    account = new_account(server)
    first, second = new_key(server, account), new_key(server, account)
    answers = [post(server, k, max_tokens=3).json() for k in (first, first, second)]
    headers = {"Authorization": f"Bearer {first}"}
    by_key = httpx.get(f"{server.base_url}/v1/usage", params={"group_by": "key"}, headers=headers).json()
    assert by_key["account"] == account and [g["requests"] for g in by_key["data"]] == [2, 1]
    by_model = httpx.get(f"{server.base_url}/v1/usage", params={"group_by": "model"}, headers=headers).json()
    [model] = by_model["data"]
    assert model["total_tokens"] == sum(a["usage"]["total_tokens"] for a in answers)
    assert model["completion_tokens"] == sum(a["usage"]["completion_tokens"] for a in answers)
    by_day = httpx.get(f"{server.base_url}/v1/usage", headers=headers).json()
    assert [d["total_tokens"] for d in by_day["data"]] == [model["total_tokens"]]
    invoice = httpx.get(f"{server.base_url}/v1/usage/invoice", headers=headers).json()
    printed = json.loads(cli("usage", "--account", account, "--month", invoice["month"], "--json",
                             "--database-url", server.database_url).stdout)
    assert printed["total_micro_usd"] == invoice["total_micro_usd"] > 0
    expected = model["prompt_tokens"] * 3.5 + model["completion_tokens"] * 10  # micro-dollars at list price
    assert invoice["total_micro_usd"] == round(expected)
    text = cli("usage", "--account", account, "--month", invoice["month"], "--database-url",
               server.database_url).stdout
    assert f"({invoice['total_micro_usd']} micro-dollars)" in text
    bad = httpx.get(f"{server.base_url}/v1/usage", params={"start": "yesterday"}, headers=headers)
    assert bad.status_code == 400 and bad.json()["param"] == "start"


def test_metrics_need_an_admin_key(server: Server) -> None:
    assert httpx.get(f"{server.base_url}/metrics").status_code == 401
    user = {"Authorization": f"Bearer {server.key}"}
    assert httpx.get(f"{server.base_url}/metrics", headers=user).status_code == 403
    admin = cli("keys", "create", "--name", "ops", "--admin", "--database-url",
                server.database_url).stdout.strip()
    post(server, server.key)
    text = httpx.get(f"{server.base_url}/metrics", headers={"Authorization": f"Bearer {admin}"}).text
    pattern = r'magistral_requests_total\{model="smollm2-135m-instruct",status="(stop|length)"\} (\d+)'
    served = re.search(pattern, text)
    assert served and int(float(served.group(2))) >= 1
    assert "magistral_request_latency_seconds_bucket" in text
    assert "magistral_rate_limit_rejections_total" in text
