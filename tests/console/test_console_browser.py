"""The console end to end in a real browser (Debian's chromium driven by Playwright) against the
real server with the real default model, mail through an aiosmtpd sink on loopback:

sign up → the confirmation mail arrives → confirm → pending → the operator activates (in the
operator console) → create a key → the official mistralai SDK uses it → usage and cost appear →
a budget is reached → refused (402) and mailed about → revoke → 401.

Screenshots of the main pages go to $MAGISTRAL_TEST_ARTIFACTS (default /tmp/artifacts/console)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import Server, cli, start_server, stop_server
from tests.console.conftest import PASSWORD, SmtpSink
from tests.dashboard.test_dashboard import CHROMIUM, FLAGS

pytestmark = pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (.ci/services.sh installs it)")
ARTIFACTS = Path(os.environ.get("MAGISTRAL_TEST_ARTIFACTS", "/tmp/artifacts/console"))
CUSTOMER, OPERATOR = "dev@acme.example", "ops@magistral.example"


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory, sink: SmtpSink) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("console"), "--smtp-url", sink.url, "--no-embedding-model")
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def open_console(browser, server: Server, path: str = "/console"):
    page = browser.new_context().new_page()
    page.goto(server.base_url + path)
    page.wait_for_selector("body[data-ready]")
    return page


def sign_up_and_confirm(browser, server: Server, sink: SmtpSink, email: str, account: str):
    page = open_console(browser, server)
    page.fill("#signup-email", email)
    page.fill("#signup-password", PASSWORD)
    page.fill("#signup-account", account)
    page.click("#signup-form button[type=submit]")
    page.wait_for_selector("#message:has-text('Check your mail')")
    link = sink.link(email, "confirm your address", "/console/verify")
    assert link.startswith(server.base_url)
    page.goto(link)
    page.wait_for_selector("#message:has-text('is confirmed')")
    return page


def sign_in(page, email: str) -> None:
    page.fill("#login-email", email)
    page.fill("#login-password", PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#app:not([hidden])")


def test_sign_up_to_revoked_key_in_the_browser(browser, console_server: Server, sink: SmtpSink) -> None:
    from mistralai.client import Mistral
    from mistralai.client.errors import SDKError

    server = console_server
    page = sign_up_and_confirm(browser, server, sink, CUSTOMER, "acme")
    shot(page, "01-signed-out")
    sign_in(page, CUSTOMER)
    page.wait_for_selector("#account-status:has-text('pending')")
    assert "operator has not activated" in page.text_content("#account-why")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["mg_session"]["httpOnly"] and cookies["mg_session"]["secure"]
    assert cookies["mg_session"]["sameSite"] == "Strict"
    shot(page, "02-pending")

    # the operator: a console user the CLI made an operator, activating in the operator console
    ops = sign_up_and_confirm(browser, server, sink, OPERATOR, "magistral-ops")
    cli("accounts", "operator", OPERATOR, "--database-url", server.database_url)
    sign_in(ops, OPERATOR)
    ops.click("#operator-tab")
    row = ops.wait_for_selector("#ops-table tr[data-account=acme]")
    assert "pending" in row.text_content()
    row.query_selector("button.activate").click()
    ops.wait_for_selector("#ops-table tr[data-account=acme] >> text=active")
    ops.wait_for_selector(f"#audit-table >> text=user:{OPERATOR}")
    shot(ops, "03-operator")

    page.reload()
    page.wait_for_selector("#account-status:has-text('active')")
    page.click("#tabs button[data-tab=keys]")
    page.fill("#key-name", "laptop")
    page.fill("#key-rpm", "30")
    page.click("#key-form button[type=submit]")
    page.wait_for_selector("#new-secret-box:not([hidden])")
    secret = page.text_content("#new-secret")
    assert secret.startswith("mg-")
    page.wait_for_selector("#keys-table tbody tr[data-status=active]")
    shot(page, "04-keys")
    page.click("#tabs button[data-tab=members]")
    page.wait_for_selector(f"#members-table >> text={CUSTOMER}")
    shot(page, "04-members")

    client = Mistral(api_key=secret, server_url=server.base_url)
    answer = client.chat.complete(model="magistral-medium-latest", max_tokens=8,
                                  messages=[{"role": "user", "content": "Say hello"}])
    used = answer.usage.total_tokens
    assert used > 0

    page.click("#tabs button[data-tab=usage]")
    page.wait_for_selector("#usage-table tfoot tr")
    total = page.query_selector_all("#usage-table tfoot td")
    assert int(total[5].text_content()) == used and Decimal(total[6].text_content().lstrip("$")) > 0
    assert "thinking" in page.text_content("#usage-table thead") and total[4].text_content() == "0"
    assert page.query_selector("#usage-chart g[data-tokens]") is not None
    assert "smollm2" in page.text_content("#invoice-table")
    page.select_option("#usage-group", "hour")
    page.click("#usage-form button[type=submit]")
    page.wait_for_selector("#usage-table tbody td:has-text('T')")
    shot(page, "05-usage")

    # a budget just above this month's spend, which is then past 80% of it (the 80% mail is due
    # at the next request), and close enough that the next requests reach it and are refused.
    # (spend + $0.0005 alone left 80% unreached when the spend so far was small: then the
    # refusal came while spend was between 80% of the budget and the budget minus a request)
    page.click("#tabs button[data-tab=overview]")
    page.wait_for_selector("#spend:not(:text-is('$0.000000'))")
    spend = Decimal(page.text_content("#spend").lstrip("$"))
    assert spend > 0
    headroom = min(Decimal("0.0005"), spend / 4).quantize(Decimal("0.000001"), rounding="ROUND_DOWN")
    page.fill("#budget-input", str(spend + headroom))
    page.click("#budget-form button[type=submit]")
    page.wait_for_selector("#message:has-text('Budget saved')")
    refusal = None
    for _ in range(10):
        try:
            client.chat.complete(model="magistral-medium-latest", max_tokens=8,
                                 messages=[{"role": "user", "content": "Say hello"}])
        except SDKError as exc:
            refusal = exc
            break
    assert refusal is not None and refusal.status_code == 402
    assert "budget_exceeded" in refusal.body and "Monthly budget reached" in refusal.body
    sink.wait_for(CUSTOMER, "reached its monthly budget")
    sink.wait_for(CUSTOMER, "has used 80%")
    page.reload()
    page.wait_for_selector("#budget-bar rect.warn, #budget-bar rect.over")  # past 80%
    assert float(page.get_attribute("#budget-bar", "data-share")) >= 0.8
    shot(page, "06-budget-reached")

    page.click("#tabs button[data-tab=keys]")
    page.click("#keys-table tbody tr[data-status=active] button.revoke")
    page.wait_for_selector("#keys-table tbody tr[data-status=revoked]")
    page.wait_for_selector("#keys-table tbody tr >> text=20")  # last used: this year
    with pytest.raises(SDKError) as revoked:
        client.chat.complete(model="magistral-medium-latest", max_tokens=8,
                             messages=[{"role": "user", "content": "Say hello"}])
    assert revoked.value.status_code == 401
    shot(page, "07-revoked")
