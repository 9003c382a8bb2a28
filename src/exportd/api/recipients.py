"""Who may receive an e-mailed export, and how many e-mail exports a user may ask for a day.

Without a policy any signed-in user could have exportd mail files to any address: a spam and
data-exfiltration channel. ``email_recipients`` chooses who may receive them:

- ``any``: every address (the embedded default, where the development outbox sends nothing);
- ``domains``: addresses whose domain is in ``email_allowed_domains`` (exact match);
- ``token``: only the address in the caller token's ``email`` claim (refused when the token says
  ``email_verified: false``).

A refused address is a 403 ``RecipientNotAllowed``. Each user may also ask for at most
``email_daily_cap_per_user`` e-mail exports in any 24 hours (429 ``EmailCapReached`` with
``Retry-After``), counted in the rate limits' storage (Redis when configured, so all replicas
share it). The cap is checked before the export is admitted and counted once it was, so a
request refused for credits or a full queue uses none of it. If the counter store does not
answer, e-mail requests are refused (503): the cap fails closed.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Literal

from fastapi import FastAPI, Request
from limits import RateLimitItemPerDay
from limits.aio.strategies import MovingWindowRateLimiter
from starlette.responses import Response

from exportd.api.problems import retry_later_response
from exportd.api.ratelimit import limits_storage
from exportd.contract.errors import ExportdError, Forbidden, TransientFailure
from exportd.security.tokens import Principal
from exportd.settings import ApiSettings

log = logging.getLogger(__name__)
_POLICY_NAME = "email-user"


@dataclass
class RecipientNotAllowed(Forbidden):
    reason: str = "RecipientNotAllowed"


@dataclass
class EmailCapReached(ExportdError):
    reason: str = "EmailCapReached"
    status: int = 429
    retry_after_seconds: int = 1


@dataclass
class RecipientPolicy:
    mode: Literal["any", "domains", "token"]
    domains: frozenset[str]
    daily_cap: int
    counter: MovingWindowRateLimiter

    @classmethod
    def from_settings(cls, settings: ApiSettings) -> RecipientPolicy:
        return cls(
            mode=settings.email_recipients,
            domains=frozenset(settings.email_allowed_domains),
            daily_cap=settings.email_daily_cap_per_user,
            counter=MovingWindowRateLimiter(limits_storage(settings)),
        )

    def check(self, principal: Principal, address: str) -> None:
        """Raise RecipientNotAllowed unless the policy lets ``principal`` mail ``address``."""
        if self.mode == "domains":
            domain = address.rpartition("@")[2].lower()
            if domain not in self.domains:
                raise RecipientNotAllowed(
                    f"e-mail to {domain} addresses is not allowed here; allowed domains: "
                    + (", ".join(sorted(self.domains)) or "none")
                )
        elif self.mode == "token":
            claimed = principal.claims.get("email")
            verified = principal.claims.get("email_verified", True) is not False
            if not (isinstance(claimed, str) and claimed.lower() == address.lower() and verified):
                raise RecipientNotAllowed(
                    "exports may only be e-mailed to the (verified) address in your token's "
                    "email claim"
                )

    async def check_cap(self, owner: str) -> None:
        """Raise EmailCapReached when ``owner`` used up the day's e-mail exports."""
        if self.daily_cap == 0:
            raise Forbidden(
                "e-mail delivery is turned off here (email_daily_cap_per_user is 0); ask for a "
                "link instead (returnType url)",
                reason="EmailDisabled",
            )
        item = self._item()
        try:
            allowed = await self.counter.test(item, _POLICY_NAME, owner)
            stats = await self.counter.get_window_stats(item, _POLICY_NAME, owner)
        except Exception as exc:
            log.warning("e-mail cap counter unavailable; refusing e-mail export", exc_info=True)
            raise TransientFailure(
                "the e-mail cap cannot be checked right now", reason="EmailCapUnavailable"
            ) from exc
        if not allowed:
            raise EmailCapReached(
                f"you asked for {self.daily_cap} e-mail exports in the last 24 hours, the most "
                "allowed; ask for a link instead (returnType url) or retry later",
                retry_after_seconds=max(1, math.ceil(stats.reset_time - time.time())),
            )

    async def count(self, owner: str) -> None:
        """Count one admitted e-mail export of ``owner``."""
        try:
            await self.counter.hit(self._item(), _POLICY_NAME, owner)
        except Exception:
            log.warning("e-mail cap counter unavailable; export of %s not counted", owner)

    def _item(self) -> RateLimitItemPerDay:
        return RateLimitItemPerDay(max(self.daily_cap, 1))


async def _on_cap_reached(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EmailCapReached)
    return retry_later_response(request, exc, exc.retry_after_seconds)


def install_recipient_errors(app: FastAPI) -> None:
    app.add_exception_handler(EmailCapReached, _on_cap_reached)
