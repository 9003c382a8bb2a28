"""Pure parts of rate limiting: who the client is behind proxies, which budget a route uses,
and the exact text of the IETF RateLimit fields."""

from __future__ import annotations

import pytest

from exportd.api.limits_headers import PolicyState, rate_limit_headers, retry_after
from exportd.api.ratelimit import RouteClass, client_ip, parse_networks, route_class

PROXIES = parse_networks(["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("198.51.100.7", ["203.0.113.9"], "198.51.100.7"),  # untrusted peer: header ignored
        ("10.1.2.3", ["203.0.113.9"], "203.0.113.9"),
        ("10.1.2.3", ["203.0.113.9, 10.9.9.9"], "203.0.113.9"),  # two proxy hops
        ("10.1.2.3", ["6.6.6.6, 203.0.113.9"], "203.0.113.9"),  # a forged left entry
        ("10.1.2.3", ["6.6.6.6", "203.0.113.9, 192.0.2.1"], "203.0.113.9"),  # two headers
        ("10.1.2.3", [], "10.1.2.3"),  # a trusted peer that forwarded nothing
        ("10.1.2.3", ["10.4.4.4"], "10.4.4.4"),  # only proxies: the farthest one
        ("2001:db8::1", ["2001:db9::5"], "2001:db9::5"),
        ("10.1.2.3", ["not-an-ip"], "not-an-ip"),  # garbage is untrusted, so it is the key
        (None, ["203.0.113.9"], "unknown"),
    ],
)
def test_client_ip_reads_x_forwarded_for_only_through_trusted_proxies(
    peer: str | None, forwarded: list[str], client: str
) -> None:
    assert client_ip(peer, forwarded, PROXIES) == client


def test_only_the_two_create_routes_use_the_create_budget() -> None:
    assert route_class("POST", "/export") is RouteClass.CREATE
    assert route_class("post", "/v1/exports") is RouteClass.CREATE
    assert route_class("GET", "/v1/exports") is RouteClass.READ
    assert route_class("DELETE", "/v1/exports/exp-1") is RouteClass.READ
    assert route_class("POST", "/v1/exports/exp-1") is RouteClass.READ


def test_fields_are_structured_field_lists_of_every_policy() -> None:
    states = [
        PolicyState("create-user", quota=30, window_seconds=60, remaining=29, reset_seconds=59.2),
        PolicyState("create-ip", quota=120, window_seconds=60, remaining=100, reset_seconds=10),
    ]
    assert rate_limit_headers(states, refused=False) == {
        "RateLimit-Policy": '"create-user";q=30;w=60, "create-ip";q=120;w=60',
        "RateLimit": '"create-user";r=29;t=60, "create-ip";r=100;t=10',
    }


def test_a_refusal_adds_retry_after_of_the_exhausted_policy() -> None:
    states = [
        PolicyState("read-user", quota=5, window_seconds=60, remaining=0, reset_seconds=41.1),
        PolicyState("read-ip", quota=9, window_seconds=60, remaining=3, reset_seconds=59),
    ]
    headers = rate_limit_headers(states, refused=True)
    assert headers["Retry-After"] == "42"
    assert headers["RateLimit"] == '"read-user";r=0;t=42, "read-ip";r=3;t=59'
    assert retry_after([PolicyState("x", 1, 1, 0, 0.0)]) == 1


def test_the_in_memory_limits_count_the_same_and_prune_expired_entries() -> None:
    """Tried: a 2-per-second moving window in the pruned in-memory storage, hit three times,
    then again after the window and a pruning pass. Must hold: the third hit is refused; once
    the entries have expired, pruning drops them and a new hit is allowed."""
    import asyncio

    from limits import parse
    from limits.aio.strategies import MovingWindowRateLimiter

    from exportd.api.ratelimit import PrunedMemoryStorage

    async def scenario() -> None:
        storage = PrunedMemoryStorage()
        limiter = MovingWindowRateLimiter(storage)
        item = parse("2/second")
        assert [await limiter.hit(item, "user", "a") for _ in range(3)] == [True, True, False]
        await asyncio.sleep(1.2)
        storage.prune()
        assert storage.events == {}
        assert await limiter.hit(item, "user", "a")

    asyncio.run(scenario())
