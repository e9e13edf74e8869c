"""The SSRF guard, tested without opening a single connection."""

from __future__ import annotations

import pytest

from magistral.chat.fetch import FetchError, address_allowed, check_url

REFUSED = ["10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "127.0.0.1", "0.0.0.0",
           "100.64.0.1", "fd00::1", "::1", "fe80::1", "::ffff:10.0.0.1", "::ffff:127.0.0.1", "224.0.0.1",
           "255.255.255.255",
           # IPv6 that carries a private IPv4: 6to4, NAT64 (well-known and local prefixes), Teredo
           "2002:7f00:1::", "2002:a9fe:a9fe::", "2002:a00:1::1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",
           "64:ff9b:1::808:808", "2001:0:4136:e378:8000:63bf:3fff:fdd2"]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not address_allowed(address)


def test_public_addresses_pass_and_the_operator_flag_opens_private_ones() -> None:
    assert address_allowed("8.8.8.8") and address_allowed("2606:4700:4700::1111")
    assert address_allowed("2002:808:808::1") and address_allowed("64:ff9b::808:808")  # public IPv4 inside
    assert address_allowed("10.0.0.1", allow_private=True)
    assert address_allowed("127.0.0.1", allow_private=True)
    assert not address_allowed("224.0.0.1", allow_private=True)  # multicast never


def fake_resolver(table: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        return table[host]
    return resolve


def test_hostname_resolving_to_a_private_address_is_refused() -> None:
    resolver = fake_resolver({"images.example.com": ["93.184.216.34"],
                              "evil.example.com": ["93.184.216.34", "10.1.2.3"],
                              "metadata.example.com": ["169.254.169.254"]})
    assert check_url("https://images.example.com/a.png", resolver=resolver) == \
        ("images.example.com", 443, "93.184.216.34")
    for host in ("evil.example.com", "metadata.example.com"):
        with pytest.raises(FetchError, match="non-public"):
            check_url(f"http://{host}/a.png", resolver=resolver)


def test_schemes_other_than_http_are_refused() -> None:
    for url in ("file:///etc/passwd", "gopher://x/", "ftp://x/a.png", "/relative.png"):
        with pytest.raises(FetchError, match="scheme"):
            check_url(url, resolver=fake_resolver({}))
