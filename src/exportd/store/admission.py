"""Admitting a new export: idempotency key, queue limits, credit debit and record, at once.

Each store runs :func:`admit` inside ONE of its transactions, through the small
:class:`AdmissionTx` protocol (a handful of SQL statements per store), so the rules live here
once and both stores (SQLite, PostgreSQL) enforce them identically:

1. ``Idempotency-Key`` (Stripe's semantics): the key is claimed (a pending row) for the caller;
   a key already used with another body is 422; one still being processed is 409; one finished
   returns its stored response and nothing else happens.
2. Queue limits: beyond the per-user or global number of exports in flight the store refuses
   with 503 (:class:`QueueFull`) before anything is charged.
3. Credits: the account is locked, accrued to ``now`` and debited (402 when empty); the debit is
   written to the ledger under the export's id, which is the debit's idempotency key.
4. The export's record, when the backend keeps records in this store (embedded mode).

Any refusal raises, so the transaction rolls back as a whole: a refused request leaves no claim,
no debit and no record. Refunds (:func:`refund_export`) are keyed by the export id too, so an
export is refunded at most once however many writers report its end.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from exportd.contract.errors import Conflict, ExportdError, FieldError, InvalidInput
from exportd.security.credits import CreditAccount, CreditPolicy, debit, refund
from exportd.store.base import ExportRecord

IDEMPOTENCY_HEADER = "Idempotency-Key"
LedgerKind = Literal["debit", "refund"]
KeyState = Literal["pending", "done"]


@dataclass
class QueueFull(ExportdError):
    """Too many exports in flight: 503 with ``Retry-After``; nothing was charged."""

    reason: str = "QueueFull"
    status: int = 503
    retriable: bool = True


@dataclass
class KeyInProgress(Conflict):
    """The first request with this key is still being answered: 409 naming its export, with
    ``Retry-After``; a retry then gets the first request's answer replayed."""

    reason: str = "IdempotencyKeyInProgress"
    export_id: str = ""


@dataclass(frozen=True)
class StoredResponse:
    """The response an idempotent request gave, kept to be given again."""

    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IdempotencyEntry:
    owner: str
    key: str
    request_hash: str
    export_id: str
    state: KeyState
    created_at: datetime
    expires_at: datetime
    response: StoredResponse | None = None


@dataclass(frozen=True)
class QueueLimits:
    """Refuse when the user's, or everyone's, exports in flight reach these numbers."""

    per_user: int
    total: int


@dataclass(frozen=True)
class Admission:
    owner: str
    export_id: str
    now: datetime
    record: ExportRecord | None = None
    credits: CreditPolicy | None = None
    queue: QueueLimits | None = None
    # Unfinished exports (the owner's, everyone's) when the store does not hold the records
    # (Kubernetes mode: the requests are counted from the cluster); otherwise counted in ``tx``.
    in_flight: tuple[int, int] | None = None
    key: str | None = None
    request_hash: str | None = None
    key_expires_at: datetime | None = None


@dataclass(frozen=True)
class Admitted:
    export_id: str
    balance: int | None = None
    replay: StoredResponse | None = None


class AdmissionTx(Protocol):
    """What :func:`admit` needs from a store, all inside one open transaction."""

    def claim_key(self, entry: IdempotencyEntry) -> IdempotencyEntry | None:
        """Insert the pending entry; when (owner, key) exists, return it (locked) instead."""

    def replace_key(self, entry: IdempotencyEntry) -> None:
        """Overwrite the (expired) entry of (owner, key)."""

    def lock_account(self, opening: CreditAccount) -> CreditAccount:
        """The owner's account, locked for this transaction; created as ``opening`` if new."""

    def save_account(self, account: CreditAccount) -> None: ...

    def add_ledger(
        self, export_id: str, kind: LedgerKind, owner: str, amount: int, at: datetime
    ) -> bool:
        """Record a debit or refund; ``False`` when that export already has one of that kind."""

    def ledger_debit(self, export_id: str) -> tuple[str, int] | None:
        """(owner, amount) of the export's debit, if it was charged."""

    def in_flight(self, owner: str) -> tuple[int, int]:
        """Exports in Pending, Queued or Running: (the owner's, everyone's)."""

    def insert_record(self, record: ExportRecord) -> None: ...


def admit(tx: AdmissionTx, admission: Admission) -> Admitted:
    """Apply the admission rules in ``tx``; raise to refuse (the caller rolls back)."""
    if admission.key is not None:
        replay = _claim(tx, admission)
        if replay is not None:
            return replay
    if admission.queue is not None:
        _check_queue(admission.in_flight or tx.in_flight(admission.owner), admission.queue)
    balance = None
    if admission.credits is not None and admission.credits.enabled:
        balance = _charge(tx, admission)
    if admission.record is not None:
        tx.insert_record(admission.record)
    return Admitted(admission.export_id, balance)


def _claim(tx: AdmissionTx, admission: Admission) -> Admitted | None:
    assert admission.key is not None and admission.request_hash is not None
    assert admission.key_expires_at is not None
    entry = IdempotencyEntry(
        owner=admission.owner,
        key=admission.key,
        request_hash=admission.request_hash,
        export_id=admission.export_id,
        state="pending",
        created_at=admission.now,
        expires_at=admission.key_expires_at,
    )
    existing = tx.claim_key(entry)
    if existing is None:
        return None
    if existing.expires_at <= admission.now:
        tx.replace_key(entry)
        return None
    if existing.request_hash != admission.request_hash:
        raise InvalidInput(
            f"this {IDEMPOTENCY_HEADER} was used with another request",
            reason="IdempotencyKeyReused",
            errors=[FieldError(IDEMPOTENCY_HEADER, "already used with a different request")],
        )
    if existing.state != "done" or existing.response is None:
        raise KeyInProgress(
            f"a request with this {IDEMPOTENCY_HEADER} is still being processed "
            f"(export {existing.export_id}); retry to get its answer",
            export_id=existing.export_id,
        )
    return Admitted(existing.export_id, replay=existing.response)


def _check_queue(in_flight: tuple[int, int], limits: QueueLimits) -> None:
    mine, everyone = in_flight
    if mine >= limits.per_user:
        raise QueueFull(f"you have {mine} exports in flight, the most allowed; try again later")
    if everyone >= limits.total:
        raise QueueFull("the export queue is full; try again later")


def _charge(tx: AdmissionTx, admission: Admission) -> int:
    policy = admission.credits
    assert policy is not None
    opening = CreditAccount.opening(admission.owner, policy, admission.now)
    account = debit(tx.lock_account(opening), policy, admission.now)
    tx.save_account(account)
    if not tx.add_ledger(admission.export_id, "debit", admission.owner, 1, admission.now):
        raise Conflict(f"export {admission.export_id} was already charged", reason="AlreadyExists")
    return account.balance


def ensure_account(
    tx: AdmissionTx, owner: str, policy: CreditPolicy, now: datetime
) -> CreditAccount:
    """The owner's stored account, opened (and stored) now if this is the first time. Accrual
    counts from the first time a user is seen, so the opening must be kept even when the request
    that saw the user is refused (a user who starts with no credit must still earn one)."""
    return tx.lock_account(CreditAccount.opening(owner, policy, now))


def refund_export(tx: AdmissionTx, export_id: str, policy: CreditPolicy, now: datetime) -> bool:
    """Give back the credit ``export_id`` took, once; ``False`` if it took none or got it back."""
    charged = tx.ledger_debit(export_id)
    if charged is None:
        return False
    owner, amount = charged
    if not tx.add_ledger(export_id, "refund", owner, amount, now):
        return False
    account = tx.lock_account(CreditAccount.opening(owner, policy, now))
    tx.save_account(refund(account, policy, now, amount))
    return True


def request_hash(method: str, path: str, canonical_body: str) -> str:
    """What "the same request" means for a key: method, path and the body's canonical JSON
    (so key order or white space do not make a retry look like another request)."""
    digest = hashlib.sha256()
    for part in (method.upper(), path, canonical_body):
        encoded = part.encode()
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return digest.hexdigest()


def export_id_for_key(owner: str, key: str) -> str:
    """The export id an idempotency key names (and, in Kubernetes mode, its CR's name)."""
    digest = hashlib.sha256(f"{owner}\x00{key}".encode()).hexdigest()
    return f"exp-{digest[:20]}"
