"""An account's members and invitations: owners and admins invite (by mail) and change roles;
only an owner touches an owner."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from magistral.api.errors import APIError
from magistral.console import teams
from magistral.console.account_routes import account_row
from magistral.console.people import SignupRefused, normal_email
from magistral.console.web import check_csrf, console, manager, membership

router = APIRouter(prefix="/console/api/accounts/{account_id}", dependencies=[Depends(check_csrf)],
                   include_in_schema=False)


class InviteForm(BaseModel):
    email: str = Field(max_length=320)
    role: Literal["owner", "admin", "member"] = "member"


class RoleForm(BaseModel):
    role: Literal["owner", "admin", "member"]


@router.get("/members")
async def members(account_id: int, request: Request, who=Depends(membership)) -> dict[str, Any]:
    return {"data": await run_in_threadpool(teams.members, console(request).store, account_id)}


@router.post("/invitations", status_code=201)
async def invite(account_id: int, form: InviteForm, request: Request, who=Depends(manager)) -> dict[str, str]:
    ctx, (signed, role) = console(request), who
    if form.role == "owner" and role != "owner":
        raise APIError(403, "only an owner can invite an owner", code="forbidden")
    try:
        email = normal_email(form.email)
    except SignupRefused as exc:
        raise APIError(400, str(exc), param="email") from exc
    account = await run_in_threadpool(account_row, request, account_id)
    token = await run_in_threadpool(teams.invite, ctx.store, account_id, email, form.role, signed.person,
                                    ctx.settings.invite_lifetime)
    await ctx.mailer.send(email, f"magistral: join {account.name}",
                          f"{signed.person.email} invites you to the account {account.name} "
                          f"as {form.role}.\n\n"
                          f"Accept (sign up first with this address if you have no account):\n"
                          f"{ctx.link(request, '/console/invite#token=' + token)}\n")
    return {"message": f"Invitation sent to {email}"}


@router.put("/members/{user_id}")
async def set_role(account_id: int, user_id: int, form: RoleForm, request: Request, who=Depends(manager)
                   ) -> dict[str, Any]:
    return await _change_member(request, account_id, user_id, form.role, who[1])


@router.delete("/members/{user_id}")
async def remove(account_id: int, user_id: int, request: Request, who=Depends(manager)) -> dict[str, Any]:
    return await _change_member(request, account_id, user_id, None, who[1])


async def _change_member(request: Request, account_id: int, user_id: int, role: str | None, mine: str
                         ) -> dict[str, Any]:
    current = await run_in_threadpool(teams.role_in, console(request).store, user_id, account_id)
    if current is None:
        raise APIError(404, "Not found: no such member", code="not_found")
    if mine != "owner" and ("owner" in (current, role)):
        raise APIError(403, "only an owner can change an owner's role or make one", code="forbidden")
    try:
        await run_in_threadpool(teams.set_role, console(request).store, account_id, user_id, role)
    except ValueError as exc:
        raise APIError(400, str(exc)) from exc
    return {"user_id": user_id, "role": role}
