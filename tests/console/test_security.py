"""The console's security properties, in process: CSRF, session fixation, cookie flags, one
account never reaching another's keys or usage (by id, in every route), passwords never in
the logs, and sign-in throttling."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi.testclient import TestClient

from tests.console.conftest import PASSWORD, post, sign_in, sign_up, token_of


def signed_in(client: TestClient, sink, email: str, account: str) -> int:
    sign_up(client, sink, email, account)
    response = sign_in(client, email)
    assert response.status_code == 200, response.text
    return response.json()["accounts"][0]["id"]


def test_changes_without_the_right_csrf_token_are_refused(app_client: TestClient, sink) -> None:
    body = {"email": "csrf@example.com", "password": PASSWORD, "account": "csrf-co"}
    assert app_client.post("/console/api/signup", json=body).status_code == 403  # no token at all
    token_of(app_client)  # the double-submit cookie is set…
    refused = app_client.post("/console/api/signup", json=body, headers={"X-CSRF-Token": "forged"})
    assert refused.status_code == 403 and refused.json()["code"] == "csrf_failed"  # …but forged here
    account_id = signed_in(app_client, sink, "csrf@example.com", "csrf-co")
    anonymous_token = app_client.cookies.get("mg_csrf")
    key = {"name": "k"}
    for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": anonymous_token}):
        # signed in, only the session's own token counts (not the double-submit cookie's)
        assert app_client.post(f"/console/api/accounts/{account_id}/keys", json=key,
                               headers=headers).status_code == 403
    other_site = {"X-CSRF-Token": token_of(app_client), "Origin": "https://evil.example"}
    assert app_client.post(f"/console/api/accounts/{account_id}/keys", json=key,
                           headers=other_site).status_code == 403
    assert post(app_client, f"/accounts/{account_id}/keys", key).status_code == 201
    assert app_client.get(f"/console/api/accounts/{account_id}/keys").json()["data"][0]["name"] == "k"


def test_sign_in_issues_a_new_session_and_cookies_are_secure_httponly_strict(app_client: TestClient,
                                                                           sink) -> None:
    sign_up(app_client, sink, "fix@example.com", "fix-co")
    planted = "attacker-chosen-session-id"
    app_client.cookies.set("mg_session", planted, path="/console")  # as a fixation attack would
    response = sign_in(app_client, "fix@example.com")
    cookie = next(h for h in response.headers.get_list("set-cookie") if h.startswith("mg_session="))
    session_id = cookie.split(";")[0].split("=", 1)[1]
    assert session_id != planted and len(session_id) >= 40
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert {"secure", "httponly", "samesite=strict", "path=/console"} <= set(flags)
    first = session_id
    again = sign_in(app_client, "fix@example.com")  # signing in again: yet another id, the old one ends
    second = next(h for h in again.headers.get_list("set-cookie") if h.startswith("mg_session="))
    assert second.split(";")[0].split("=", 1)[1] != first
    for old in (planted, first):  # neither the planted id nor the replaced one signs anybody in
        stale = TestClient(app_client.app, base_url="https://testserver")
        stale.cookies.set("mg_session", old, path="/console")
        assert stale.get("/console/api/session").json()["signed_in"] is False


def test_logout_everywhere_ends_every_session(app_client: TestClient, sink) -> None:
    signed_in(app_client, sink, "all@example.com", "all-co")
    other = TestClient(app_client.app, base_url="https://testserver")
    assert sign_in(other, "all@example.com").status_code == 200
    assert post(app_client, "/logout-everywhere").json()["sessions"] == 2
    assert other.get("/console/api/session").json()["signed_in"] is False


ROUTES = [("GET", "/accounts/{a}"), ("PUT", "/accounts/{a}/budget"), ("GET", "/accounts/{a}/keys"),
          ("POST", "/accounts/{a}/keys"), ("POST", "/accounts/{a}/keys/{k}/revoke"),
          ("PUT", "/accounts/{a}/keys/{k}/budget"), ("GET", "/accounts/{a}/usage"),
          ("GET", "/accounts/{a}/usage.csv"), ("GET", "/accounts/{a}/invoice"),
          ("GET", "/accounts/{a}/members"),
          ("POST", "/accounts/{a}/invitations"), ("PUT", "/accounts/{a}/members/{u}"),
          ("DELETE", "/accounts/{a}/members/{u}")]
BODIES = {"/budget": {"budget_usd": "1"}, "/keys": {"name": "stolen"},
          "/invitations": {"email": "x@example.com"},
          "/members/{u}": {"role": "member"}}


def test_one_account_never_reaches_another_accounts_keys_or_usage(app_client: TestClient, sink) -> None:
    victim = TestClient(app_client.app, base_url="https://testserver")
    victim_account = signed_in(victim, sink, "victim@example.com", "victim-co")
    made = post(victim, f"/accounts/{victim_account}/keys", {"name": "secret-key"}).json()["key"]
    victim_user = victim.get(f"/console/api/accounts/{victim_account}/members").json()["data"][0]["user_id"]
    mine = signed_in(app_client, sink, "attacker@example.com", "attacker-co")
    own_key = post(app_client, f"/accounts/{mine}/keys", {"name": "mine"}).json()["key"]
    token = token_of(app_client)
    probes = [(victim_account, made["id"]), (mine, made["id"]), (victim_account, own_key["id"])]
    for method, route in ROUTES:
        for account, key in probes:
            if account == mine and "{k}" not in route:
                continue  # my own account without a foreign id: allowed, not a probe
            path = "/console/api" + route.format(a=account, k=key, u=victim_user)
            body = next((b for suffix, b in BODIES.items() if route.endswith(suffix)), None)
            response = app_client.request(method, path, json=body, headers={"X-CSRF-Token": token})
            assert response.status_code == 404, (method, path, response.status_code, response.text)
            assert "secret-key" not in response.text and "victim" not in response.text
    # the victim's key is untouched and its name never appeared to the attacker
    assert victim.get(f"/console/api/accounts/{victim_account}/keys").json()["data"][0]["status"] == "active"
    own = app_client.get(f"/console/api/accounts/{mine}/keys").json()["data"]
    assert [k["name"] for k in own] == ["mine"]
    operator_only = app_client.get("/console/api/operator/accounts")
    assert operator_only.status_code == 403


def test_passwords_are_never_logged(app_client: TestClient, sink, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sign_up(app_client, sink, "quiet@example.com", "quiet-co")
    sign_in(app_client, "quiet@example.com")
    sign_in(app_client, "quiet@example.com", "wrong password 12345")
    post(app_client, "/signup", {"email": "bad", "password": "short", "account": "x"})
    post(app_client, "/login", {"email": "quiet@example.com", "password": ""})  # a 422
    text = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "failed sign-in" in text  # the log is there…
    for secret in (PASSWORD, "wrong password 12345", "short"):
        assert secret not in text  # …without a password in it


def test_sign_ins_are_throttled_after_repeated_failures(app_client: TestClient, sink) -> None:
    sign_up(app_client, sink, "slow@example.com", "slow-co")
    for _ in range(5):
        assert sign_in(app_client, "slow@example.com", "not the password!").status_code == 401
    throttled = sign_in(app_client, "slow@example.com")  # even the right password, for now
    assert throttled.status_code == 429 and throttled.json()["code"] == "login_throttled"
    assert int(throttled.headers["Retry-After"]) > 0
    assert "mg_session" not in throttled.headers.get("set-cookie", "")


def test_unverified_addresses_cannot_sign_in_and_resets_end_sessions(app_client: TestClient, sink) -> None:
    sign_up(app_client, sink, "new@example.com", "new-co", verify=False)
    assert sign_in(app_client, "new@example.com").json()["code"] == "email_unverified"
    assert post(app_client, "/password/forgot", {"email": "new@example.com"}).status_code == 202
    token = sink.link("new@example.com", "reset your password", "/console/reset").rsplit("=", 1)[1]
    assert post(app_client, "/password/reset", {"token": token, "password": "short"}).status_code == 400
    changed = post(app_client, "/password/reset", {"token": token, "password": "a brand new password"})
    assert changed.status_code == 200
    used = post(app_client, "/password/reset", {"token": token, "password": "another new one!"})
    assert used.status_code == 400  # a link works once
    assert sign_in(app_client, "new@example.com", "a brand new password").status_code == 200  # verified


def test_every_console_answer_has_a_strict_csp(app_client: TestClient) -> None:
    for path in ("/console", "/console/verify", "/console/static/console.js", "/console/api/session",
                 "/console/api/accounts/1"):
        csp = app_client.get(path).headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    page = app_client.get("/console").text
    assert "http://" not in page and "https://" not in page  # nothing from elsewhere
    assert "<script>" not in page and "<style" not in page  # nothing inline…
    assert not re.search(r"\son\w+=", page)  # …not even an event handler


def test_mail_links_are_limited_per_person_and_hour(app_client: TestClient, sink) -> None:
    sign_up(app_client, sink, "flood@example.com", "flood-co")
    for _ in range(8):
        assert post(app_client, "/password/forgot", {"email": "flood@example.com"}).status_code == 202
    assert sum(m["To"] == "flood@example.com" and "reset" in m["Subject"] for m in sink.messages) == 5


def test_behind_a_tls_proxy_the_public_origin_is_ours(app_client: TestClient, sink) -> None:
    app_client.app.state.console.settings.public_url = "https://console.example.com"
    body = {"email": "proxy@example.com", "password": PASSWORD, "account": "proxy-co"}
    headers = {"X-CSRF-Token": token_of(app_client), "Origin": "https://console.example.com"}
    assert app_client.post("/console/api/signup", json=body, headers=headers).status_code == 202
    link = sink.link("proxy@example.com", "confirm your address", "/console/verify")
    assert link.startswith("https://console.example.com/console/verify#token=")
    headers["Origin"] = "https://elsewhere.example.com"
    assert app_client.post("/console/api/signup", json=body, headers=headers).status_code == 403
