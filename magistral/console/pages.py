"""The console's page and its script and style, all served by the app under a strict CSP (no
inline script or style, nothing from elsewhere). One page; the paths mail links point at
(/console/verify, /console/reset, /console/invite) serve it too and its script reads the token
from the fragment (`#token=…`), which browsers never send: no token reaches a log or a Referer."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from magistral.console.web import SECURITY_HEADERS

router = APIRouter(prefix="/console", include_in_schema=False)
TYPES = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}


@cache
def _asset(name: str) -> str:
    return files("magistral.console").joinpath("static", name).read_text(encoding="utf-8")


def _page() -> Response:
    return Response(_asset("console.html"), media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)


@router.get("")
async def console_page() -> Response:
    return _page()


@router.get("/{link}")
async def linked_page(link: str) -> Response:
    if link not in ("verify", "reset", "invite"):
        return Response("Not found", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)
    return _page()


@router.get("/static/{name}")
async def asset(name: str) -> Response:
    if name not in TYPES:
        return Response("Not found", status_code=404, media_type="text/plain", headers=SECURITY_HEADERS)
    return Response(_asset(name), media_type=TYPES[name], headers=SECURITY_HEADERS)
