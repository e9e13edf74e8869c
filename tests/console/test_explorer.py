"""The usage explorer: a range grouped by day, hour, key or model, totals, CSV export (safe to
open in a spreadsheet) and the month's invoice, from usage billed through the metered call."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime

from fastapi.testclient import TestClient

from magistral.platform.keys import verify_key
from tests.console.conftest import post, sign_in, sign_up

MODEL = "smollm2-135m-instruct"


def bill(client: TestClient, secret: str, prompt: int, completion: int, thinking: int = 0) -> None:
    platform = client.app.state.platform
    call = platform.open_call(verify_key(platform.store, secret), MODEL, prompt, max_tokens=completion)
    asyncio.run(call.finish(completion, "stop", thinking_tokens=thinking))


def test_usage_grouped_every_way_with_csv_and_invoice(app_client: TestClient, sink) -> None:
    sign_up(app_client, sink, "data@example.com", "data-co")
    account_id = sign_in(app_client, "data@example.com").json()["accounts"][0]["id"]
    first = post(app_client, f"/accounts/{account_id}/keys", {"name": "=HYPERLINK(evil)"}).json()
    second = post(app_client, f"/accounts/{account_id}/keys", {"name": "batch"}).json()
    bill(app_client, first["secret"], 1000, 500, thinking=300)  # $0.0035 + $0.005: thinking is output
    bill(app_client, second["secret"], 2000, 0)  # $0.007
    base = f"/console/api/accounts/{account_id}"
    today = datetime.now(UTC).date().isoformat()
    for group in ("day", "hour", "key", "model"):
        report = app_client.get(f"{base}/usage?group_by={group}&start={today}&end={today}").json()
        assert report["totals"] == {"requests": 2, "prompt_tokens": 3000, "completion_tokens": 500,
                                    "thinking_tokens": 300, "total_tokens": 3500,
                                    "cost_usd": "0.015500"}, group
    by_key = app_client.get(f"{base}/usage?group_by=key").json()["data"]
    assert [(r["group"], r["total_tokens"]) for r in by_key] == [
        (f"=HYPERLINK(evil) (#{first['key']['id']})", 1500), (f"batch (#{second['key']['id']})", 2000)]
    hours = app_client.get(f"{base}/usage?group_by=hour").json()["data"]
    assert len(hours) == 1 and hours[0]["group"].endswith(":00Z")
    exported = app_client.get(f"{base}/usage.csv?group_by=key")
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert rows[0]["group"].startswith("'=")  # not a formula when opened in a spreadsheet
    assert [r["cost_usd"] for r in rows] == ["0.008500", "0.007000"]
    assert list(rows[0]) == ["group", "requests", "prompt_tokens", "completion_tokens", "thinking_tokens",
                             "total_tokens", "cost_usd"]
    assert [(r["completion_tokens"], r["thinking_tokens"]) for r in rows] == [("500", "300"), ("0", "0")]
    invoice = app_client.get(f"{base}/invoice").json()
    assert invoice["total_usd"] == "0.015500" and invoice["lines"][0]["model"] == MODEL
    keys = app_client.get(f"{base}/keys").json()["data"]
    assert all(k["last_used_at"] and k["last_used_at"].startswith(today) for k in keys)
    assert app_client.get(f"{base}/usage?group_by=hour&start=2026-01-01&end=2026-03-01").status_code == 400
    assert app_client.get(f"{base}/usage?start=2026-11-02&end=2026-11-01").status_code == 400
    assert app_client.get(f"{base}/usage?group_by=week").status_code == 422
