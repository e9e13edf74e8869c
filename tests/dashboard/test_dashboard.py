"""The dashboard in a real headless browser (Debian's chromium driven by Playwright): sign in,
see the chart and the numbers of /v1/usage and the invoice; a revoked key is refused."""

from __future__ import annotations

import os
import shutil
import uuid

import httpx
import pytest

from tests.conftest import Server, cli

CHROMIUM = os.environ.get("MAGISTRAL_TEST_CHROMIUM") or shutil.which("chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (.ci/services.sh installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


def sign_in(browser, server: Server, key: str):
    page = browser.new_page()
    page.goto(f"{server.base_url}/dashboard")
    page.fill("#key", key)
    page.click("button[type=submit]")
    return page


def test_dashboard_shows_the_usage_of_the_signed_in_account(browser, server: Server) -> None:
    account = f"dash-{uuid.uuid4().hex[:8]}"
    cli("accounts", "create", account, "--database-url", server.database_url)
    key = cli("keys", "create", "--name", "web", "--account", account, "--rpm", "50", "--database-url",
              server.database_url).stdout.strip()
    headers = {"Authorization": f"Bearer {key}"}
    for n in (3, 5):
        httpx.post(f"{server.base_url}/v1/chat/completions", headers=headers, timeout=60,
                   json={"model": "magistral-medium-latest", "max_tokens": n,
                         "messages": [{"role": "user", "content": "Hello"}]}).raise_for_status()
    completion = {"model": "magistral-medium-latest", "prompt": "Hi", "max_tokens": 2}
    for path, body in (("/v1/completions", completion),
                       ("/v1/embeddings", {"model": "mistral-embed", "input": ["one", "two"]})):
        httpx.post(f"{server.base_url}{path}", headers=headers, json=body, timeout=60).raise_for_status()
    usage = httpx.get(f"{server.base_url}/v1/usage", headers=headers).json()["data"]
    invoice = httpx.get(f"{server.base_url}/v1/usage/invoice", headers=headers).json()

    page = sign_in(browser, server, key)
    page.wait_for_selector("#app:not([hidden])", timeout=15_000)
    assert page.text_content("#account") == account
    assert page.text_content("#rpm") == "50"
    bars = page.query_selector_all("#chart rect")
    assert [(b.get_attribute("data-day"), int(b.get_attribute("data-tokens"))) for b in bars] == \
        [(d["day"], d["total_tokens"]) for d in usage]
    day_cells = [c.text_content() for c in page.query_selector_all("#days tbody td")]
    assert day_cells[:2] == [usage[0]["day"], "4"] and f"${usage[0]['cost_usd']}" in day_cells
    model_rows = [r.text_content() for r in page.query_selector_all("#models tbody tr")]
    assert len(model_rows) == 2 and "all-minilm-l6-v2" in model_rows[0] and "smollm2" in model_rows[1]
    invoice_rows = [r.text_content() for r in page.query_selector_all("#invoice tbody tr")]
    assert [line["model"] for line in invoice["lines"]] == ["all-minilm-l6-v2", "smollm2-135m-instruct"]
    assert all(line["model"] in row for line, row in zip(invoice["lines"], invoice_rows, strict=True))
    assert page.text_content("#invoice-total") == f"${invoice['total_usd']}"
    assert page.text_content("#month-total") == f"${invoice['total_usd']}"
    key_rows = page.query_selector_all("#keys tbody tr")
    assert len(key_rows) == 1 and "web" in key_rows[0].text_content()
    page.close()

    key_id = next(k for k in cli("keys", "list", "--account", account, "--database-url",
                                 server.database_url).stdout.splitlines()[1:])
    cli("keys", "revoke", key_id.split()[0], "--database-url", server.database_url)
    page = sign_in(browser, server, key)
    # a selector, not wait_for_function: the page's CSP forbids the eval that a string predicate
    # needs when it is not already true on its first check (a loaded machine)
    page.wait_for_selector("#error:not(:empty)", timeout=15_000)
    assert "invalid or revoked" in page.text_content("#error")
    assert page.is_hidden("#app")
    page.close()
