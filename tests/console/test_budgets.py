"""Monthly budgets where requests are admitted (`Platform.open_call`, which every metered route
goes through): refused with 402 `budget_exceeded` when a request could pass the account's or
the key's budget; listeners told at 80% and 100%; budget mails sent once to owners and admins."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from magistral.console.alerts import BudgetMails
from magistral.console.mail import Mailer
from magistral.platform.accounts import create_account, set_budget
from magistral.platform.budgets import BudgetEvent, BudgetExceeded
from magistral.platform.gateway import Platform
from magistral.platform.keys import create_key, set_key_budget, verify_key
from magistral.platform.store import Store

MODEL = "smollm2-135m-instruct"  # $3.50 in, $10.00 out per million at list price


@pytest.fixture
def platform(tmp_path: Path):
    platform = Platform.create(Store(f"sqlite:///{tmp_path / 'b.db'}"), replica="test")
    yield platform
    platform.close()


def spend(platform: Platform, key, prompt: int, completion: int) -> None:
    """One finished request of `key`, billed through the metered call as a route bills it."""
    call = platform.open_call(key, MODEL, prompt, max_tokens=completion)
    asyncio.run(call.finish(completion, "stop"))


def test_a_request_that_could_pass_the_account_budget_is_refused(platform: Platform) -> None:
    create_account(platform.store, "acme")
    info, secret = create_key(platform.store, "k", "acme")
    set_budget(platform.store, "acme", 1_000)  # $0.001
    events: list[BudgetEvent] = []
    platform.budgets.listeners.append(events.append)
    key = verify_key(platform.store, secret)
    spend(platform, key, 100, 40)  # $0.00035 + $0.0004 = $0.00075: 75%
    assert events == []
    with pytest.raises(BudgetExceeded) as refused:  # 75% + up to $0.00035 + $0.001 (100 out): over
        platform.open_call(key, MODEL, 100, max_tokens=100)
    assert refused.value.status == 402 and refused.value.code == "budget_exceeded"
    assert "account 'acme' has spent $0.000750 of its $0.001000 budget" in refused.value.message
    assert [e.threshold for e in events] == [100]
    spend(platform, key, 10, 5)  # a small one still fits: $0.000035 + $0.00005
    with pytest.raises(BudgetExceeded):
        platform.open_call(key, MODEL, 100, max_tokens=100)
    assert sorted({e.threshold for e in events}) == [80, 100]  # now past 80% (83.5%) too


def test_a_key_budget_refuses_that_key_only(platform: Platform) -> None:
    create_account(platform.store, "acme")
    capped, capped_secret = create_key(platform.store, "capped", "acme")
    _, free_secret = create_key(platform.store, "free", "acme")
    set_key_budget(platform.store, capped.id, 500)
    key = verify_key(platform.store, capped_secret)
    spend(platform, key, 100, 10)  # $0.00045
    with pytest.raises(BudgetExceeded, match="key 'capped'"):
        platform.open_call(key, MODEL, 100, max_tokens=10)
    other = verify_key(platform.store, free_secret)
    spend(platform, other, 100, 10)  # the account has no budget: its other keys go on


def test_budget_mails_go_once_to_owners_and_admins(tmp_path: Path, sink, app_client) -> None:
    from tests.console.conftest import sign_in, sign_up

    sign_up(app_client, sink, "owner@example.com", "mailed-co")
    account_id = sign_in(app_client, "owner@example.com").json()["accounts"][0]["id"]
    store = app_client.app.state.console.store
    mails = BudgetMails(store, Mailer(sink.url, "magistral <m@localhost>"), "https://console.example/console")
    event = BudgetEvent(account_id, "mailed-co", None, "", "2026-11", 80, 800, 1000)

    async def twice() -> None:
        mails(event)
        mails(event)  # the same threshold again: nothing more
        await asyncio.gather(*mails._sending)
    asyncio.run(twice())
    message = sink.wait_for("owner@example.com", "has used 80%")
    assert "$0.000800 of its $0.001000 budget" in message.get_payload(decode=True).decode()
    again = BudgetMails(store, Mailer(sink.url, "m@localhost"), "")  # another replica: the row says sent
    again(event)
    assert sum("has used 80%" in m["Subject"] for m in sink.messages) == 1


def test_requests_still_running_count_against_the_budget(platform: Platform) -> None:
    create_account(platform.store, "busy")
    _, secret = create_key(platform.store, "k", "busy")
    set_budget(platform.store, "busy", 1_000)  # $0.001
    key = verify_key(platform.store, secret)
    running = platform.open_call(key, MODEL, 100, max_tokens=40)  # may cost $0.00075: held
    with pytest.raises(BudgetExceeded, match="requests still running could cost up to"):
        platform.open_call(key, MODEL, 100, max_tokens=40)  # together they could pass $0.001
    asyncio.run(running.finish(4, "stop"))  # it spent $0.00039: the hold ends
    asyncio.run(platform.open_call(key, MODEL, 100, max_tokens=10).finish(4, "stop"))  # $0.00045 fits
    assert platform.budgets._held == {}
