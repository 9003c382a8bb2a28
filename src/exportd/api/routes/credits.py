"""``GET /v1/credits``: the caller's balance and when the next credit arrives (design Q1)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter

from exportd.api.auth import PrincipalDep
from exportd.api.protection import ProtectionDep
from exportd.contract.spec import CamelModel

router = APIRouter()


class CreditsResource(CamelModel):
    enabled: bool
    balance: int
    cap: int
    per_day: int
    timezone: str
    next_credit_at: datetime | None = None
    cost_per_export: int = 1


@router.get(
    "/v1/credits",
    response_model=CreditsResource,
    response_model_exclude_none=True,
    summary="The caller's credits: balance, cap, and when the next daily credit arrives",
)
async def get_credits(principal: PrincipalDep, protection: ProtectionDep) -> Any:
    account, now = await protection.account(principal.sub)
    policy = protection.credits
    return CreditsResource(
        enabled=policy.enabled,
        balance=account.balance,
        cap=policy.cap,
        per_day=policy.per_day,
        timezone=policy.zone.key,
        next_credit_at=protection.next_credit_at(account, now),
    ).to_json_dict()
