"""Sign-up, address verification, sign-in (throttled), sign-out (here or everywhere), password
reset and accepting invitations: /console/api/…"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from magistral.api.errors import APIError
from magistral.console import people, sessions, teams
from magistral.console.passwords import MAX_LENGTH, verify_password
from magistral.console.tokens import new_token
from magistral.console.web import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Signed,
    check_csrf,
    clear_session_cookie,
    client_ip,
    console,
    current,
    set_csrf_cookie,
    set_session_cookie,
    signed_in,
)

log = logging.getLogger("magistral.console")
router = APIRouter(prefix="/console/api", dependencies=[Depends(check_csrf)], include_in_schema=False)
Password = Field(min_length=1, max_length=MAX_LENGTH, repr=False)  # repr=False: never in a log line


class SignupForm(BaseModel):
    email: str = Field(max_length=320)
    password: str = Password
    account: str = Field(max_length=40)


class LoginForm(BaseModel):
    email: str = Field(max_length=320)
    password: str = Password


class TokenForm(BaseModel):
    token: str = Field(min_length=10, max_length=200)


class EmailForm(BaseModel):
    email: str = Field(max_length=320)


class ResetForm(BaseModel):
    token: str = Field(min_length=10, max_length=200)
    password: str = Password


def me(signed: Signed | None, accounts: list[teams.AccountView]) -> dict[str, Any]:
    if signed is None:
        return {"signed_in": False}
    return {"signed_in": True, "email": signed.person.email, "operator": signed.person.is_operator,
            "csrf_token": signed.csrf,
            "accounts": [{"id": a.id, "name": a.name, "tier": a.tier, "status": a.status, "role": a.role}
                         for a in accounts]}


@router.get("/session")
async def session(request: Request, response: Response) -> dict[str, Any]:
    """Who is signed in, their accounts and the CSRF token; signed out, a fresh double-submit token."""
    signed = await current(request)
    if signed is not None:
        accounts = await run_in_threadpool(teams.accounts_of, console(request).store, signed.person.id)
        return me(signed, accounts)
    token = request.cookies.get(CSRF_COOKIE) or new_token()
    set_csrf_cookie(response, token)
    return {"signed_in": False, "csrf_token": token}


@router.post("/signup", status_code=202)
async def signup(form: SignupForm, request: Request) -> dict[str, str]:
    ctx = console(request)
    try:
        made = await run_in_threadpool(people.signup, ctx.store, form.email, form.password, form.account,
                                       ctx.settings.verify_lifetime)
    except people.SignupRefused as exc:
        raise APIError(400, str(exc), code="signup_refused") from exc
    email = people.normal_email(form.email)
    if made is None:  # the address has an account: tell its owner, not the form
        await ctx.mailer.send(email, "magistral: you already have an account",
                              "Someone (you?) tried to sign up with this address, which has an account "
                              f"already. Sign in at {ctx.link(request, '/console')}, or reset your "
                              f"password there.\n")
    else:
        await _send_verification(request, email, made[1])
    return {"message": f"Check your mail: a link to confirm {email} is on its way."}


async def _send_verification(request: Request, email: str, token: str) -> None:
    ctx = console(request)
    await ctx.mailer.send(email, "magistral: confirm your address",
                          f"Confirm your address to sign in to the magistral console:\n\n"
                          f"{ctx.link(request, '/console/verify#token=' + token)}\n\n"
                          "If you did not sign up, ignore this mail.\n")


@router.post("/verify")
async def verify(form: TokenForm, request: Request) -> dict[str, str]:
    done = await run_in_threadpool(people.verify_email, console(request).store, form.token)
    if done is None:
        raise APIError(400, "This link is invalid, used or expired; sign in to get a new one",
                       code="invalid_token")
    return {"message": f"{done.email} is confirmed. You can sign in now.", "email": done.email}


@router.post("/verify/resend", status_code=202)
async def resend(form: EmailForm, request: Request) -> dict[str, str]:
    ctx = console(request)
    found = await run_in_threadpool(people.find, ctx.store, form.email)
    if found is not None and not found[0].verified:
        try:
            token = await run_in_threadpool(people.verify_token_for, ctx.store, found[0].id,
                                            ctx.settings.verify_lifetime)
        except people.TooManyMails:  # the answer stays the same: it tells nobody anything
            log.warning("confirmation links for %s: hourly limit reached", found[0].email)
        else:
            await _send_verification(request, found[0].email, token)
    return {"message": "If that address waits for confirmation, a new link is on its way."}


@router.post("/login")
async def login(form: LoginForm, request: Request, response: Response) -> dict[str, Any]:
    ctx, settings = console(request), console(request).settings
    email, ip = form.email.strip().lower(), client_ip(request)
    if await run_in_threadpool(sessions.throttled, ctx.store, email, ip, settings.throttle_window,
                               settings.max_failures_per_email, settings.max_failures_per_ip):
        log.warning("sign-in throttled for %s from %s", email, ip)
        raise APIError(429, "Too many failed sign-ins: wait a few minutes and try again, or reset your "
                       "password", code="login_throttled",
                       headers={"Retry-After": str(int(settings.throttle_window.total_seconds()))})
    found = await run_in_threadpool(people.find, ctx.store, email)
    ok = await run_in_threadpool(verify_password, found[1] if found else None, form.password)
    if not ok or found is None:
        await run_in_threadpool(sessions.record_failure, ctx.store, email, ip, settings.throttle_window)
        log.info("failed sign-in for %s from %s", email, ip)
        raise APIError(401, "Wrong email or password", code="invalid_credentials")
    who = found[0]
    if not who.verified:
        raise APIError(403, "Confirm your address first: follow the link we mailed you (or ask for a new "
                       "one)", code="email_unverified")
    await run_in_threadpool(sessions.clear_failures, ctx.store, email)
    # always a new session id: one the browser (or an attacker) brought is dropped, never promoted
    old = request.cookies.get(SESSION_COOKIE)
    token, csrf = await run_in_threadpool(sessions.start, ctx.store, who.id, settings.session_lifetime, old)
    set_session_cookie(response, token, int(settings.session_lifetime.total_seconds()))
    accounts = await run_in_threadpool(teams.accounts_of, ctx.store, who.id)
    log.info("%s signed in from %s", email, ip)
    return me(Signed(who, csrf, token), accounts)


@router.post("/logout")
async def logout(request: Request, response: Response, signed: Signed = Depends(signed_in)) -> dict[str, str]:
    await run_in_threadpool(sessions.end, console(request).store, signed.token)
    clear_session_cookie(response)
    return {"message": "Signed out"}


@router.post("/logout-everywhere")
async def logout_everywhere(request: Request, response: Response,
                            signed: Signed = Depends(signed_in)) -> dict[str, Any]:
    ended = await run_in_threadpool(sessions.end_all, console(request).store, signed.person.id)
    clear_session_cookie(response)
    return {"message": f"Signed out of {ended} session(s)", "sessions": ended}


@router.post("/password/forgot", status_code=202)
async def forgot(form: EmailForm, request: Request) -> dict[str, str]:
    ctx = console(request)
    try:
        found = await run_in_threadpool(people.reset_token, ctx.store, form.email,
                                        ctx.settings.reset_lifetime)
    except people.TooManyMails:
        log.warning("reset links for %s: hourly limit reached", form.email.strip().lower())
        found = None
    if found is not None:
        who, token = found
        await ctx.mailer.send(who.email, "magistral: reset your password",
                              "Choose a new password (the link works once, for an hour):\n\n"
                              f"{ctx.link(request, '/console/reset#token=' + token)}\n\n"
                              "If you did not ask for this, ignore this mail.\n")
    return {"message": "If that address has an account, a link to reset its password is on its way."}


@router.post("/password/reset")
async def reset(form: ResetForm, request: Request, response: Response) -> dict[str, str]:
    try:
        done = await run_in_threadpool(people.reset_password, console(request).store, form.token,
                                       form.password)
    except ValueError as exc:
        raise APIError(400, str(exc), code="weak_password") from exc
    if done is None:
        raise APIError(400, "This link is invalid, used or expired; ask for a new one", code="invalid_token")
    clear_session_cookie(response)
    return {"message": "Your password is changed and every session signed out. Sign in again."}


@router.post("/invitations/accept")
async def accept(form: TokenForm, request: Request, signed: Signed = Depends(signed_in)) -> dict[str, Any]:
    account_id = await run_in_threadpool(teams.accept, console(request).store, form.token, signed.person)
    if account_id is None:
        raise APIError(400, "This invitation is invalid, used, expired, or meant for another address",
                       code="invalid_token")
    return {"account_id": account_id}
