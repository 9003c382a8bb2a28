"""The ``RateLimit-Policy`` and ``RateLimit`` fields of the IETF httpapi draft
(draft-ietf-httpapi-ratelimit-headers, structured-field form), and ``Retry-After``.

Every rate-limited response carries both fields, one list member per policy that applies to the
request (the per-user and the per-IP limit of its route class)::

    RateLimit-Policy: "create-user";q=30;w=60, "create-ip";q=120;w=60
    RateLimit: "create-user";r=29;t=60, "create-ip";r=119;t=60

``q`` is the quota and ``w`` the window in seconds; ``r`` the quota units remaining and ``t`` the
seconds until they are available again. A refused request (429) also carries ``Retry-After``:
the seconds until the exhausted policy lets the next request through.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

POLICY_FIELD = "RateLimit-Policy"
STATE_FIELD = "RateLimit"


@dataclass(frozen=True)
class PolicyState:
    """One policy as it stands after this request."""

    name: str
    quota: int
    window_seconds: int
    remaining: int
    reset_seconds: float

    @property
    def exhausted(self) -> bool:
        return self.remaining <= 0


def _token(name: str) -> str:
    """A policy name as a structured-field String (names are ours: letters and dashes)."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _seconds(value: float) -> int:
    return max(0, math.ceil(value))


def policy_field(states: Sequence[PolicyState]) -> str:
    return ", ".join(f"{_token(s.name)};q={s.quota};w={s.window_seconds}" for s in states)


def state_field(states: Sequence[PolicyState]) -> str:
    return ", ".join(
        f"{_token(s.name)};r={max(0, s.remaining)};t={_seconds(s.reset_seconds)}" for s in states
    )


def retry_after(states: Sequence[PolicyState]) -> int:
    """Seconds until every exhausted policy admits a request again (at least 1)."""
    waits = [_seconds(s.reset_seconds) for s in states if s.exhausted]
    return max([1, *waits])


def rate_limit_headers(states: Sequence[PolicyState], *, refused: bool) -> dict[str, str]:
    if not states:
        return {}
    headers = {POLICY_FIELD: policy_field(states), STATE_FIELD: state_field(states)}
    if refused:
        headers["Retry-After"] = str(retry_after(states))
    return headers
