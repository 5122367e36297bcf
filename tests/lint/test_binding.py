"""The bind model against the real Linux kernel: every pair of listeners, both orders."""

from __future__ import annotations

import itertools
import socket

import pytest

from mailwarden.lint.addresses import Family, parse_literal
from mailwarden.lint.binding import BindStatus, Endpoint, conflict, simulate
from tests.fixtures.net import free_port

ADDRESSES = ["0.0.0.0", "127.0.0.1", "::", "::1", "::ffff:127.0.0.1"]


def endpoint(text: str, port: int, v6only: bool) -> Endpoint:
    address = parse_literal(text)
    assert address is not None
    return Endpoint(address.family, address, port, v6only)


def open_socket(e: Endpoint) -> socket.socket:
    """bind + listen as sendmail and Postfix do: SO_REUSEADDR, IPV6_V6ONLY set explicitly."""
    af = socket.AF_INET if e.family is Family.INET else socket.AF_INET6
    sock = socket.socket(af, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if af == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(e.v6only))
        sock.bind((e.address.text, e.port))
        sock.listen(8)
    except OSError:
        sock.close()
        raise
    return sock


def kernel_allows(first: Endpoint, second: Endpoint) -> bool:
    one = open_socket(first)
    try:
        two = open_socket(second)
    except OSError:
        return False
    finally:
        one.close()
    two.close()
    return True


def ipv6_available() -> None:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError as exc:
        pytest.fail(f"the kernel model test needs IPv6 on loopback (::1): {exc}")


@pytest.mark.parametrize("v6only", [False, True])
def test_conflict_model_matches_the_kernel_for_every_pair(v6only: bool) -> None:
    ipv6_available()
    mismatches = []
    for a, b in itertools.product(ADDRESSES, repeat=2):
        port = free_port()
        first, second = endpoint(a, port, v6only), endpoint(b, port, v6only)
        if not (first.bindable and second.bindable):
            continue
        predicted = not conflict(first, second)
        if kernel_allows(first, second) != predicted:
            mismatches.append((a, b, v6only, predicted))
    assert mismatches == []


def test_mapped_address_with_v6only_cannot_be_bound() -> None:
    e = endpoint("::ffff:127.0.0.1", free_port(), True)
    assert not e.bindable
    with pytest.raises(OSError, match="Invalid argument"):
        open_socket(e).close()
    result = simulate([e])[0]
    assert result is not None
    assert result.status is BindStatus.INVALID


def test_two_phase_bind_then_listen_fails_at_listen_for_the_later_socket() -> None:
    """sendmail binds every daemon before any listens: with SO_REUSEADDR both binds succeed."""
    port = free_port()
    first = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    second = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        for sock in (first, second):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        second.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        first.bind(("127.0.0.1", port))
        second.bind(("::", port))
        first.listen(8)
        with pytest.raises(OSError, match="Address already in use"):
            second.listen(8)
    finally:
        first.close()
        second.close()
    results = simulate([endpoint("127.0.0.1", port, False), endpoint("::", port, False)])
    assert [r.status if r else None for r in results] == [BindStatus.OK, BindStatus.IN_USE]
