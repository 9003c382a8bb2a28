"""The exporter's last step for ``returnType: email``: send the stored file, once.

:func:`exportd.delivery.by_email.deliver` does the work and its claim marker keeps it to one e-mail
per
export. Here its outcome becomes part of the export's result (``delivered`` and the
``Delivered`` condition), and its failures keep their meaning for the retry policy:

- a transient failure before the server could have accepted the message (connection refused,
  4xx) released the claim: it propagates (exit 75) and the next attempt finds the file stored
  (``created`` False) and sends the e-mail;
- a failure after the body went out (``SmtpOutcomeUnknown``) kept the claim, so a retry could
  only report "already claimed" and never send: it becomes permanent, and the export fails with
  that reason instead of pretending the e-mail arrived;
- permanent failures (refused recipient, untrusted certificate) propagate as they are.
"""

from __future__ import annotations

import logging

from exportd.contract.errors import PermanentFailure, TransientFailure
from exportd.contract.spec import Condition, ExportSpec, ReturnType
from exportd.settings import CommonSettings
from exportd.storage.base import Storage, StoredObject

log = logging.getLogger(__name__)


def deliver_export(
    spec: ExportSpec, stored: StoredObject, storage: Storage, settings: CommonSettings
) -> tuple[bool | None, list[Condition]]:
    """``(delivered, [Delivered condition])`` for an e-mail export; ``(None, [])`` otherwise."""
    if spec.return_type is not ReturnType.EMAIL:
        return None, []
    from exportd.delivery import mail  # imported only for e-mail exports (email_validator, smtplib)
    from exportd.delivery.by_email import deliver

    try:
        outcome = deliver(spec, stored, storage, settings)
    except TransientFailure as exc:
        if exc.reason == mail.OUTCOME_UNKNOWN:
            raise PermanentFailure(exc.message, reason=exc.reason) from exc
        raise
    log.info("e-mail delivery of %s: %s (%s)", spec.id, outcome.reason, outcome.message)
    return outcome.delivered, [Condition.model_validate(outcome.condition())]
