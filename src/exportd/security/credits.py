"""Credits (design question Q1): the pure arithmetic, with the clock passed in.

Every user starts with ``initial`` credits (5); each accepted export costs one; at every local
midnight of the configured zone (UTC by default) a user gains ``per_day`` (1) while the balance is
below ``cap`` (5). The cap bounds what accrues by itself, so a user who is away for a month comes
back to 5, not 35, and cannot hoard. A refund (an export that failed or was cancelled) gives back
exactly the credit that export took, even above the cap: the user paid it and got nothing.

Nothing runs at midnight. An account stores its balance and the instant it was last brought up to
date (``accrued_at``); whoever reads or debits it first adds the midnights crossed since then, in
the zone's calendar (so a day with a daylight-saving change still counts once). A missed job, a
restart or a replica that was down cannot lose or double a credit, and the result does not depend
on how often accounts are read. The stores apply these functions inside the same transaction as
the export they charge (see :mod:`exportd.store.admission`).

Tests control the clock: every function takes ``now``; none reads the time itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from exportd.contract.errors import ExportdError
from exportd.contract.spec import Phase
from exportd.settings import ApiSettings

EXPORT_COST = 1


@dataclass
class InsufficientCredits(ExportdError):
    """No credit left: 402 Payment Required, with the time the next credit arrives.

    402 rather than 429: the caller is not too fast, it has spent what it may spend; waiting a
    few seconds (what 429 invites) does not help, waiting for ``next_credit_at`` does.
    """

    reason: str = "InsufficientCredits"
    status: int = 402
    next_credit_at: datetime | None = None


@dataclass(frozen=True)
class CreditPolicy:
    enabled: bool = True
    initial: int = 5
    cap: int = 5
    per_day: int = 1
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    refund_on: frozenset[Phase] = frozenset({Phase.FAILED, Phase.CANCELLED})

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> CreditPolicy:
        return cls(
            enabled=settings.credits_enabled,
            initial=settings.credits_initial,
            cap=settings.credits_cap,
            per_day=settings.credits_per_day,
            zone=ZoneInfo(settings.credits_timezone),
            refund_on=frozenset(Phase(p) for p in settings.credits_refund_on),
        )

    def refunds(self, phase: Phase) -> bool:
        return phase in self.refund_on


@dataclass(frozen=True)
class CreditAccount:
    owner: str
    balance: int
    accrued_at: datetime

    @classmethod
    def opening(cls, owner: str, policy: CreditPolicy, now: datetime) -> CreditAccount:
        """The account of a user seen for the first time."""
        return cls(owner=owner, balance=policy.initial, accrued_at=now)


def local_date(moment: datetime, zone: ZoneInfo) -> date:
    return moment.astimezone(zone).date()


def midnights_between(start: datetime, end: datetime, zone: ZoneInfo) -> int:
    """Local midnights in ``(start, end]``; 0 when the clock went backwards."""
    return max(0, (local_date(end, zone) - local_date(start, zone)).days)


def accrue(account: CreditAccount, policy: CreditPolicy, now: datetime) -> CreditAccount:
    """The account brought up to ``now``: the daily credits it earned, capped."""
    days = midnights_between(account.accrued_at, now, policy.zone)
    if days == 0:
        return account
    balance = account.balance
    if balance < policy.cap:
        balance = min(policy.cap, balance + days * policy.per_day)
    return replace(account, balance=balance, accrued_at=now)


def next_midnight(now: datetime, zone: ZoneInfo) -> datetime:
    """The first local midnight after ``now``, as a UTC instant."""
    tomorrow = local_date(now, zone) + timedelta(days=1)
    return datetime.combine(tomorrow, time(0), tzinfo=zone).astimezone(UTC)


def next_credit_at(account: CreditAccount, policy: CreditPolicy, now: datetime) -> datetime | None:
    """When the balance next grows by itself; ``None`` when it will not (at the cap, or no
    daily credit configured). ``account`` must already be accrued to ``now``."""
    if policy.per_day <= 0 or account.balance >= policy.cap:
        return None
    return next_midnight(now, policy.zone)


def debit(
    account: CreditAccount, policy: CreditPolicy, now: datetime, cost: int = EXPORT_COST
) -> CreditAccount:
    """The account after paying ``cost`` at ``now``; :class:`InsufficientCredits` if it cannot."""
    current = accrue(account, policy, now)
    if current.balance < cost:
        arrives = next_credit_at(current, policy, now)
        when = f"; the next credit arrives at {arrives.isoformat()}" if arrives else ""
        raise InsufficientCredits(
            f"no credit left (balance {current.balance}){when}", next_credit_at=arrives
        )
    return replace(current, balance=current.balance - cost)


def refund(
    account: CreditAccount, policy: CreditPolicy, now: datetime, amount: int = EXPORT_COST
) -> CreditAccount:
    """The account after an export's credit came back (accrued first, so no midnight is lost)."""
    current = accrue(account, policy, now)
    return replace(current, balance=current.balance + amount)
