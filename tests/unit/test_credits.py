"""Credit arithmetic (Q1) with a clock the test sets: accrual at local midnight, the cap, debits,
refunds, and the time of the next credit. No test sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from exportd.contract.spec import Phase
from exportd.security.credits import (
    CreditAccount,
    CreditPolicy,
    InsufficientCredits,
    accrue,
    debit,
    midnights_between,
    next_credit_at,
    refund,
)
from exportd.settings import ApiSettings

POLICY = CreditPolicy()
T0 = datetime(2025, 3, 10, 15, 0, tzinfo=UTC)


def spend(account: CreditAccount, times: int, now: datetime) -> CreditAccount:
    for _ in range(times):
        account = debit(account, POLICY, now)
    return account


def test_a_new_user_has_five_credits_and_each_export_costs_one() -> None:
    account = CreditAccount.opening("alice", POLICY, T0)
    assert account.balance == 5
    assert spend(account, 5, T0).balance == 0


def test_an_empty_account_is_refused_with_the_next_midnight() -> None:
    """The sixth debit of the day fails with 402 and names the next 00:00 UTC."""
    empty = spend(CreditAccount.opening("alice", POLICY, T0), 5, T0)
    with pytest.raises(InsufficientCredits) as refused:
        debit(empty, POLICY, T0 + timedelta(hours=1))
    assert refused.value.status == 402
    assert refused.value.next_credit_at == datetime(2025, 3, 11, 0, 0, tzinfo=UTC)


def test_one_credit_arrives_at_midnight_and_not_a_second_before() -> None:
    empty = spend(CreditAccount.opening("alice", POLICY, T0), 5, T0)
    before = datetime(2025, 3, 10, 23, 59, 59, 999999, tzinfo=UTC)
    assert accrue(empty, POLICY, before).balance == 0
    after = accrue(empty, POLICY, datetime(2025, 3, 11, 0, 0, tzinfo=UTC))
    assert after.balance == 1
    assert debit(after, POLICY, datetime(2025, 3, 11, 0, 0, 1, tzinfo=UTC)).balance == 0


def test_accrual_is_capped_and_does_not_depend_on_how_often_it_is_read() -> None:
    """Ten days away from an empty account: back to the cap (5), not 10. Reading every hour
    on the way gives the same balance as reading once at the end."""
    empty = spend(CreditAccount.opening("alice", POLICY, T0), 5, T0)
    end = T0 + timedelta(days=10)
    assert accrue(empty, POLICY, end).balance == 5
    stepped, moment = empty, T0
    while moment < end:
        moment += timedelta(hours=1)
        stepped = accrue(stepped, POLICY, moment)
    assert stepped.balance == 5
    partial = accrue(empty, POLICY, T0 + timedelta(days=2))
    assert partial.balance == 2


def test_a_full_account_gains_nothing_and_spending_later_does_not_back_pay() -> None:
    """At the cap, midnights pass without adding; a debit after them does not collect them."""
    full = CreditAccount.opening("alice", POLICY, T0)
    later = T0 + timedelta(days=3, hours=1)
    after_spending = debit(full, POLICY, later)
    assert after_spending.balance == 4
    assert accrue(after_spending, POLICY, later + timedelta(hours=1)).balance == 4
    assert next_credit_at(after_spending, POLICY, later) == datetime(2025, 3, 14, tzinfo=UTC)
    assert next_credit_at(full, POLICY, T0) is None


def test_midnight_of_the_configured_zone_counts_not_utc() -> None:
    """Europe/Berlin (UTC+1 in winter): the credit arrives at 23:00 UTC, and next_credit_at
    says so."""
    berlin = CreditPolicy(zone=ZoneInfo("Europe/Berlin"))
    start = datetime(2025, 1, 10, 12, 0, tzinfo=UTC)
    empty = CreditAccount("alice", 0, start)
    assert next_credit_at(empty, berlin, start) == datetime(2025, 1, 10, 23, 0, tzinfo=UTC)
    assert accrue(empty, berlin, datetime(2025, 1, 10, 22, 59, tzinfo=UTC)).balance == 0
    assert accrue(empty, berlin, datetime(2025, 1, 10, 23, 0, tzinfo=UTC)).balance == 1


def test_a_day_with_a_daylight_saving_change_counts_once() -> None:
    """Across the March change in New York (a 23-hour day) two midnights are two credits."""
    ny = ZoneInfo("America/New_York")
    start = datetime(2025, 3, 8, 12, 0, tzinfo=ny)
    end = datetime(2025, 3, 10, 0, 30, tzinfo=ny)
    assert midnights_between(start, end, ny) == 2
    assert accrue(CreditAccount("a", 0, start), CreditPolicy(zone=ny), end).balance == 2


def test_a_clock_going_backwards_adds_nothing() -> None:
    account = CreditAccount("alice", 1, T0)
    assert accrue(account, POLICY, T0 - timedelta(days=3)) == account


def test_a_refund_returns_the_credit_even_above_the_cap_after_accruing() -> None:
    """Balance 4 yesterday, refund today: the midnight credit is added first (5), then the
    refunded one (6): neither is lost."""
    account = CreditAccount("alice", 4, T0)
    assert refund(account, POLICY, T0 + timedelta(days=1)).balance == 6


def test_policy_from_settings(tmp_path: object) -> None:
    settings = ApiSettings(
        data_dir=tmp_path,
        credits_initial=3,
        credits_cap=7,
        credits_per_day=2,
        credits_timezone="Asia/Tokyo",
        credits_refund_on=["Failed"],
    )
    policy = CreditPolicy.from_settings(settings)
    assert (policy.initial, policy.cap, policy.per_day) == (3, 7, 2)
    assert policy.zone == ZoneInfo("Asia/Tokyo")
    assert policy.refunds(Phase.FAILED) and not policy.refunds(Phase.CANCELLED)
