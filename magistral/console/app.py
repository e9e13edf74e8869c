"""Mounting the console on the API's FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from magistral.console import account_routes, auth_routes, member_routes, operator_routes, pages, usage_routes
from magistral.console.alerts import BudgetMails
from magistral.console.mail import Mailer
from magistral.console.settings import ConsoleSettings
from magistral.console.web import SECURITY_HEADERS, Console
from magistral.platform.gateway import Platform

PREFIX = "/console"


class ConsoleHeaders:
    """The console's security headers on every answer under /console, errors included."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            return await self.app(scope, receive, send)

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()
                    if name.lower().encode() not in present]
            await send(message)

        await self.app(scope, receive, with_headers)


def install(app: FastAPI, platform: Platform, settings: ConsoleSettings | None = None,
            console_url: str | None = None) -> Console:
    """Add the console's routes; budget mails go to each account's owners and admins."""
    settings = settings or ConsoleSettings()
    mailer = Mailer(settings.smtp_url, settings.mail_from)
    ctx = Console(platform, settings, mailer)
    app.state.console = ctx
    platform.budgets.listeners.append(
        BudgetMails(platform.store, mailer, (settings.public_url or console_url or "").rstrip("/") + PREFIX))
    app.add_middleware(ConsoleHeaders)
    for module in (auth_routes, account_routes, usage_routes, member_routes, operator_routes, pages):
        app.include_router(module.router)
    app.include_router(operator_routes.hooks)
    return ctx
