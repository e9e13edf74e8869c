"""What every console route shares: the console's state, the signed-in person, CSRF checks,
membership checks, and the security headers of its answers.

CSRF: every request that changes something carries `X-CSRF-Token`. Signed in, it must equal
the session's own token (a synchronizer token, handed to the page by GET /console/api/session);
signed out (sign-up, sign-in, reset), it must equal the `mg_csrf` cookie (double submit). A
request whose `Origin` is another site is refused too. Cookies are SameSite=Strict besides."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastapi import Request, Response
from starlette.concurrency import run_in_threadpool

from magistral.api.errors import APIError
from magistral.console import sessions, teams
from magistral.console.mail import Mailer
from magistral.console.people import Person
from magistral.console.settings import ConsoleSettings
from magistral.platform.gateway import Platform
from magistral.platform.store import Store

SESSION_COOKIE = "mg_session"
CSRF_COOKIE = "mg_csrf"
CSRF_HEADER = "x-csrf-token"
COOKIE_PATH = "/console"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "X-Frame-Options": "DENY", "Cache-Control": "no-store",
                    "Referrer-Policy": "no-referrer"}


@dataclass
class Console:
    platform: Platform
    settings: ConsoleSettings
    mailer: Mailer

    @property
    def store(self) -> Store:
        return self.platform.store

    def link(self, request: Request, path: str) -> str:
        base = self.settings.public_url or str(request.base_url)
        return base.rstrip("/") + path


@dataclass
class Signed:
    person: Person
    csrf: str
    token: str


def console(request: Request) -> Console:
    return request.app.state.console


async def current(request: Request) -> Signed | None:
    """The signed-in person of this request (looked up once), or None."""
    if "console_signed" in request.scope.get("state", {}):
        return request.state.console_signed
    token = request.cookies.get(SESSION_COOKIE)
    found = await run_in_threadpool(sessions.lookup, console(request).store, token) if token else None
    signed = Signed(found[0], found[1], token) if found else None
    request.state.console_signed = signed
    return signed


async def check_csrf(request: Request) -> None:
    """A router dependency: every change needs its CSRF token, and no foreign Origin."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("origin")
    if origin is not None and origin.rstrip("/") not in own_origins(request):
        raise APIError(403, "Forbidden: cross-site request", code="csrf_failed")
    sent = request.headers.get(CSRF_HEADER, "")
    signed = await current(request)
    expected = signed.csrf if signed else request.cookies.get(CSRF_COOKIE, "")
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        raise APIError(403, "Forbidden: missing or wrong CSRF token; reload the page", code="csrf_failed")


def own_origins(request: Request) -> set[str]:
    """This server's origins: the one the request came to, and the public one (behind a proxy
    that ends TLS, the request's own scheme is http while the browser's origin is https)."""
    origins = {str(request.base_url).rstrip("/")}
    public = console(request).settings.public_url
    if public:
        parts = urlsplit(public)
        origins.add(f"{parts.scheme}://{parts.netloc}")
    return origins


async def signed_in(request: Request) -> Signed:
    signed = await current(request)
    if signed is None:
        raise APIError(401, "Not signed in", code="not_signed_in")
    return signed


async def membership(request: Request, account_id: int) -> tuple[Signed, str]:
    """The signed-in person and their role in `account_id`; 404 when they are no member (an
    account of someone else looks exactly like one that does not exist)."""
    signed = await signed_in(request)
    role = await run_in_threadpool(teams.role_in, console(request).store, signed.person.id, account_id)
    if role is None:
        raise APIError(404, "Not found: no such account", code="not_found")
    return signed, role


async def manager(request: Request, account_id: int) -> tuple[Signed, str]:
    signed, role = await membership(request, account_id)
    if role not in teams.MANAGERS:
        raise APIError(403, "Forbidden: this needs the owner or an admin of the account", code="forbidden")
    return signed, role


async def operator(request: Request) -> Signed:
    signed = await signed_in(request)
    if not signed.person.is_operator:
        raise APIError(403, "Forbidden: operators only", code="forbidden")
    return signed


def set_session_cookie(response: Response, token: str, max_age: int) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age, path=COOKIE_PATH, secure=True, httponly=True,
                        samesite="strict")


def set_csrf_cookie(response: Response, token: str) -> None:
    # readable by the page's script (double submit), so not HttpOnly; SameSite keeps it first-party
    response.set_cookie(CSRF_COOKIE, token, path=COOKIE_PATH, secure=True, httponly=False, samesite="strict")


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, secure=True, httponly=True, samesite="strict")


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "?"
