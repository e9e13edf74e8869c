"""Fetching image URLs without becoming a proxy into the operator's network (SSRF guard).

Every hop is resolved first and each address checked; the connection then goes to the checked
address itself (Host header and TLS SNI keep the name), so a second DNS answer cannot swap in a
private address. Redirects are followed by hand, each one checked again.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

MAX_REDIRECTS = 5
Resolver = Callable[[str, int], list[str]]


class FetchError(ValueError):
    """The URL was refused or could not be fetched; the message is safe to show the client."""


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f"cannot resolve host {host!r}") from exc
    return sorted({info[4][0] for info in infos})


def address_allowed(address: str, allow_private: bool = False) -> bool:
    """Public unicast addresses only, unless the operator allows private ones. Loopback,
    private, link-local (cloud metadata 169.254.169.254), CGNAT, multicast and reserved
    ranges are refused; IPv4-mapped IPv6 is judged as the IPv4 it carries."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        ip = _embedded_ipv4(ip)
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return False
    if allow_private:
        return True
    return ip.is_global


NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 in the last 32 bits
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: site-specific translators


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv6 address that carries an IPv4 one (mapped, 6to4, NAT64) is judged
    as that IPv4 address: 2002:7f00:1:: reaches 127.0.0.1 through a 6to4 relay."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in NAT64_LOCAL:
        return ipaddress.IPv4Address("10.0.0.0")  # a private translator: private, whatever it carries
    return ip  # Teredo (2001::/32) is not global: refused as it is


def check_url(url: str, allow_private: bool = False, resolver: Resolver = system_resolver
              ) -> tuple[str, int, str]:
    """Validate one hop → (host, port, an allowed address to connect to). Opens no connection."""
    try:
        parts = urlsplit(url)
        explicit_port = parts.port  # raises for a port outside 0-65535 or not a number
    except ValueError as exc:
        raise FetchError(f"image URL is malformed: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise FetchError(f"image URL scheme {parts.scheme or 'none'!r} is not allowed (http, https or data)")
    if not parts.hostname:
        raise FetchError("image URL has no host")
    port = explicit_port or (443 if parts.scheme == "https" else 80)
    addresses = resolver(parts.hostname, port)
    if not addresses:
        raise FetchError(f"cannot resolve host {parts.hostname!r}")
    refused = [a for a in addresses if not address_allowed(a, allow_private)]
    if refused:
        raise FetchError(f"image host {parts.hostname!r} resolves to a non-public address; "
                         "fetching it is not allowed")
    return parts.hostname, port, addresses[0]


async def fetch_url(url: str, *, max_bytes: int, timeout: float = 10.0, allow_private: bool = False,
                    resolver: Resolver = system_resolver) -> bytes:
    """GET url (following checked redirects) and return at most max_bytes of body."""
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            host, port, address = check_url(url, allow_private, resolver)
            parts = urlsplit(url)
            literal = f"[{address}]" if ":" in address else address
            target = urlunsplit((parts.scheme, f"{literal}:{port}", parts.path or "/", parts.query, ""))
            default_port = port == (443 if parts.scheme == "https" else 80)
            headers = {"Host": host if default_port else f"{host}:{port}", "Accept": "image/*"}
            try:
                async with client.stream("GET", target, headers=headers,
                                         extensions={"sni_hostname": host}) as response:
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise FetchError(f"image URL answered HTTP {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise FetchError(f"image is larger than {max_bytes} bytes")
                    body = bytearray()
                    async for piece in response.aiter_bytes():
                        body += piece
                        if len(body) > max_bytes:
                            raise FetchError(f"image is larger than {max_bytes} bytes")
                    return bytes(body)
            except httpx.HTTPError as exc:
                raise FetchError(f"could not fetch image: {type(exc).__name__}") from exc
    raise FetchError(f"too many redirects (more than {MAX_REDIRECTS})")
