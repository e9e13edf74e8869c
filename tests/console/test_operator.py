"""Operators: the operator console's actions and the CLI's are the same, each audited; the
billing hook (a payment integration's activation interface) needs an admin key; invitations
add members whose roles bound what they may do."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from magistral.console.people import set_operator
from magistral.platform.accounts import get_account
from magistral.platform.keys import create_key
from tests.conftest import cli
from tests.console.conftest import post, sign_in, sign_up


def test_operator_console_lists_accounts_and_audits_its_actions(app_client: TestClient, sink) -> None:
    store = app_client.app.state.console.store
    sign_up(app_client, sink, "customer@example.com", "customer-co")
    ops = TestClient(app_client.app, base_url="https://testserver")
    sign_up(ops, sink, "ops@example.com", "ops-co")
    set_operator(store, "ops@example.com")
    sign_in(ops, "ops@example.com")
    listing = ops.get("/console/api/operator/accounts").json()
    row = next(a for a in listing["data"] if a["name"] == "customer-co")
    assert row["status"] == "pending" and row["tier"] == "standard" and row["spend_micros"] == 0
    assert post(ops, f"/operator/accounts/{row['id']}/status", {"status": "active"}).status_code == 200
    assert post(ops, f"/operator/accounts/{row['id']}/tier", {"tier": "scale"}).status_code == 200
    assert post(ops, f"/operator/accounts/{row['id']}/tier", {"tier": "gold"}).status_code == 400
    account = get_account(store, "customer-co")
    assert (account.billing_status, account.tier) == ("active", "scale")
    log = ops.get("/console/api/operator/audit").json()["data"]
    assert [(e["actor"], e["action"], e["account"]) for e in log[:2]] == [
        ("user:ops@example.com", "tier", "customer-co"),
        ("user:ops@example.com", "status:active", "customer-co")]
    assert log[0]["detail"] == {"after": "scale", "before": "standard"}


def test_the_cli_does_the_same_audited(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    cli("accounts", "create", "shop", "--status", "pending", "--database-url", url)
    assert "shop is active" in cli("accounts", "activate", "shop", "--database-url", url).stdout
    assert "tier scale" in cli("accounts", "set-tier", "shop", "scale", "--database-url", url).stdout
    assert cli("accounts", "set-tier", "shop", "gold", "--database-url", url, check=False).returncode == 1
    from magistral.console import audit
    from magistral.platform.store import Store

    entries = audit.entries(Store(url))
    assert [e["action"] for e in entries] == ["tier", "status:active"]
    assert all(e["actor"].startswith("cli") and e["account"] == "shop" for e in entries)


def test_the_billing_hook_activates_with_an_admin_key_only(app_client: TestClient) -> None:
    from magistral.platform.accounts import create_account

    store = app_client.app.state.console.store
    create_account(store, "paying", status="pending")
    _, plain = create_key(store, "plain", None)
    _, admin = create_key(store, "stripe", None, admin=True)
    event = {"account": "paying", "status": "active", "reference": "pi_123"}
    assert app_client.post("/console/hooks/billing", json=event).status_code == 401
    assert app_client.post("/console/hooks/billing", json=event,
                           headers={"Authorization": f"Bearer {plain}"}).status_code == 403
    done = app_client.post("/console/hooks/billing", json=event, headers={"Authorization": f"Bearer {admin}"})
    assert done.status_code == 200 and get_account(store, "paying").billing_status == "active"
    from magistral.console import audit

    entry = audit.entries(store)[0]
    assert (entry["actor"], entry["action"], entry["detail"]["reference"]) == \
        ("billing-hook:stripe", "status:active", "pi_123")


def test_invited_members_join_with_their_role(app_client: TestClient, sink) -> None:
    sign_up(app_client, sink, "boss@example.com", "team-co")
    account_id = sign_in(app_client, "boss@example.com").json()["accounts"][0]["id"]
    assert post(app_client, f"/accounts/{account_id}/invitations",
                {"email": "Mate@Example.com", "role": "member"}).status_code == 201
    token = sink.link("mate@example.com", "join team-co", "/console/invite").rsplit("=", 1)[1]
    mate = TestClient(app_client.app, base_url="https://testserver")
    sign_up(mate, sink, "other@example.com", "other-co")
    sign_in(mate, "other@example.com")
    assert post(mate, "/invitations/accept", {"token": token}).status_code == 400  # not the invited address
    mate.cookies.clear()
    sign_up(mate, sink, "mate@example.com", "mate-co")
    sign_in(mate, "mate@example.com")
    assert post(mate, "/invitations/accept", {"token": token}).json() == {"account_id": account_id}
    assert post(mate, "/invitations/accept", {"token": token}).status_code == 400  # once
    assert mate.get(f"/console/api/accounts/{account_id}/keys").status_code == 200  # members read
    assert post(mate, f"/accounts/{account_id}/keys", {"name": "x"}).status_code == 403  # but do not manage
    members = app_client.get(f"/console/api/accounts/{account_id}/members").json()["data"]
    roles = {m["email"]: m["role"] for m in members}
    assert roles == {"boss@example.com": "owner", "mate@example.com": "member"}


def test_keys_follow_the_cli_rules_and_the_tier_caps(app_client: TestClient, sink) -> None:
    sign_up(app_client, sink, "caps@example.com", "caps-co")
    account_id = sign_in(app_client, "caps@example.com").json()["accounts"][0]["id"]
    too_many = post(app_client, f"/accounts/{account_id}/keys", {"name": "k", "rpm": 61})
    assert too_many.status_code == 400 and "standard tier allows (60)" in too_many.json()["message"]
    assert post(app_client, f"/accounts/{account_id}/keys", {"name": "k", "rpm": 0}).status_code == 422
    made = post(app_client, f"/accounts/{account_id}/keys",
                {"name": "k", "rpm": 60, "expires_in_days": 30, "budget_usd": "12.50"}).json()
    assert made["key"]["budget_usd"] == "12.500000" and made["key"]["expires_at"]
    listed = app_client.get(f"/console/api/accounts/{account_id}/keys").json()["data"]
    assert "secret" not in json.dumps(listed) and made["secret"] not in json.dumps(listed)
