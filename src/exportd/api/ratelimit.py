"""Rate limits per user and per client IP, with separate budgets for creating exports and for
everything else an authenticated caller does (reading status, listing, cancelling).

Counting is the maintained ``limits`` library's moving window: at most ``N`` requests in any
window of the configured length. That is a token bucket of ``N`` tokens refilled over the window,
without the burst a bucket allows right after a long pause. Counters live in Redis when
``redis_url`` is set, so every API replica enforces one limit; in this process's memory
otherwise. If Redis does not answer, requests are let through and the failure is logged: a
limiter outage must not become an API outage (the credit and queue limits, which protect the
database and the workers, stay in force).

The middleware runs after the bearer check (it needs the user) and before the body is read, so a
refused request costs one counter round trip. The client IP is the TCP peer, unless the peer is
one of ``trusted_proxies``: then ``X-Forwarded-For`` is read from the right, skipping trusted
hops, and the first untrusted address is the client (a client cannot forge its way past the
proxies it does not control).
"""

from __future__ import annotations

import bisect
import ipaddress
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from exportd.api.auth import PRINCIPAL_SCOPE_KEY
from exportd.api.limits_headers import PolicyState, rate_limit_headers
from exportd.api.problems import problem_response
from exportd.security.tokens import Principal
from exportd.settings import ApiSettings

log = logging.getLogger(__name__)

CREATE_ROUTES = frozenset({("POST", "/export"), ("POST", "/v1/exports")})
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RouteClass(StrEnum):
    CREATE = "create"
    READ = "read"


def route_class(method: str, path: str) -> RouteClass:
    return RouteClass.CREATE if (method.upper(), path) in CREATE_ROUTES else RouteClass.READ


@dataclass(frozen=True)
class Policy:
    name: str
    item: RateLimitItem
    per_user: bool


@dataclass(frozen=True)
class Decision:
    allowed: bool
    states: tuple[PolicyState, ...]

    def headers(self) -> dict[str, str]:
        return rate_limit_headers(self.states, refused=not self.allowed)


def parse_networks(entries: Iterable[str]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in entries)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def _trusted(text: str, networks: Sequence[IpNetwork]) -> bool:
    address = _address(text)
    return address is not None and any(address in network for network in networks)


def client_ip(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IpNetwork]) -> str:
    """The client's address: the peer, or behind trusted proxies the first untrusted hop of
    ``X-Forwarded-For`` counted from the right."""
    if peer is None:
        return "unknown"
    if not _trusted(peer, trusted):
        return peer
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


class PrunedMemoryStorage(MemoryStorage):
    """``limits``' in-memory storage, with expired entries pruned at most once a second, on the
    loop. The library schedules a pruning pass after every hit, and that pass hops to a worker
    thread once per key: with a few dozen callers that was more CPU than the request itself.
    Pruning only frees memory; the moving window compares entry times, so limits are unchanged.
    """

    PRUNE_SECONDS = 1.0
    _pruned_at = 0.0

    async def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the library's schedule
        now = time.monotonic()
        if now - self._pruned_at >= self.PRUNE_SECONDS:
            self._pruned_at = now
            self.prune()

    def prune(self) -> None:
        """Synchronous, so no other coroutine holds a key's lock while it runs."""
        now = time.time()
        for key, events in list(self.events.items()):
            kept = events[: bisect.bisect_left(events, -now, key=lambda event: -event.expiry)]
            if kept:
                self.events[key] = kept
            else:
                self.events.pop(key, None)
                self.locks.pop(key, None)
        for key, expires in list(self.expirations.items()):
            if expires <= now:
                self.storage.pop(key, None)
                self.expirations.pop(key, None)
                self.locks.pop(key, None)


def limits_storage(settings: ApiSettings) -> Storage:
    """Where counters live: Redis when configured (shared by replicas), else memory."""
    if settings.redis_url is None:
        return PrunedMemoryStorage()
    url = settings.redis_url.get_secret_value()
    return RedisStorage(
        f"async+{url}", implementation="redispy", key_prefix=settings.redis_key_prefix
    )


class RateLimiter:
    """The policies of each route class, counted in one storage."""

    def __init__(self, settings: ApiSettings) -> None:
        self.storage = limits_storage(settings)
        self.strategy = MovingWindowRateLimiter(self.storage)
        self.trusted = parse_networks(settings.trusted_proxies)
        self.policies = {
            RouteClass.CREATE: (
                Policy("create-user", parse(settings.rate_limit_create_per_user), True),
                Policy("create-ip", parse(settings.rate_limit_create_per_ip), False),
            ),
            RouteClass.READ: (
                Policy("read-user", parse(settings.rate_limit_read_per_user), True),
                Policy("read-ip", parse(settings.rate_limit_read_per_ip), False),
            ),
        }

    async def ping(self) -> bool:
        return bool(await self.storage.check())

    async def check(self, kind: RouteClass, user: str, ip: str) -> Decision:
        """Count one request against each policy of ``kind``; stop at the first refusal (so a
        refused request does not use up the other policies)."""
        states: list[PolicyState] = []
        allowed = True
        for policy in self.policies[kind]:
            identity = ("user", user) if policy.per_user else ("ip", ip)
            if allowed:
                allowed = await self.strategy.hit(policy.item, policy.name, *identity)
            stats = await self.strategy.get_window_stats(policy.item, policy.name, *identity)
            states.append(
                PolicyState(
                    name=policy.name,
                    quota=policy.item.amount,
                    window_seconds=policy.item.get_expiry(),
                    remaining=stats.remaining,
                    reset_seconds=max(0.0, stats.reset_time - time.time()),
                )
            )
        return Decision(allowed, tuple(states))


class RateLimitMiddleware:
    """429 with ``Retry-After`` beyond a limit; the ``RateLimit`` fields on every answer."""

    def __init__(self, app: ASGIApp, limiter: RateLimiter | None) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope.get(PRINCIPAL_SCOPE_KEY) if scope["type"] == "http" else None
        if self.limiter is None or not isinstance(principal, Principal):
            await self.app(scope, receive, send)  # public paths and disabled limits
            return
        decision = await self._decide(scope, principal)
        if decision is None:
            await self.app(scope, receive, send)
            return
        headers = decision.headers()
        if not decision.allowed:
            response = problem_response(
                429,
                "too many requests; retry after the time in Retry-After",
                reason="RateLimited",
                headers=headers,
                instance=scope["path"],
            )
            await response(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                target = MutableHeaders(scope=message)
                for name, value in headers.items():
                    target.append(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _decide(self, scope: Scope, principal: Principal) -> Decision | None:
        assert self.limiter is not None
        peer = scope.get("client")
        forwarded = Headers(scope=scope).getlist("x-forwarded-for")
        ip = client_ip(peer[0] if peer else None, forwarded, self.limiter.trusted)
        kind = route_class(scope["method"], scope["path"])
        try:
            return await self.limiter.check(kind, principal.sub, ip)
        except Exception:  # Redis down: let the request through (see the module docstring)
            log.warning("rate limiter unavailable; request not counted", exc_info=True)
            return None
