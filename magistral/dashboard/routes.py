"""GET /dashboard: the page (public: it holds no data; everything it shows comes from /v1 with
the key the user signs in with)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)


@cache
def _page() -> str:
    return files("magistral.dashboard").joinpath("dashboard.html").read_text(encoding="utf-8")


@router.get("/dashboard")
async def dashboard() -> HTMLResponse:
    return HTMLResponse(_page(),
                        headers={"Cache-Control": "no-store", "Content-Security-Policy":
                                 "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"})
