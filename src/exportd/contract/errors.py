"""The small error taxonomy of exportd, translated at each edge.

Every failure inside exportd is one of these. The API turns them into RFC 9457 problem details,
the operator into kopf's TemporaryError or PermanentError, and the exporter into its exit code:

=====  ==========================================================================
code   meaning
=====  ==========================================================================
0      the export succeeded; the last stdout line is the JSON result
2      usage error (bad command line); not retried
3      permanent failure (bad spec, unknown type, invalid variable, query error,
       authentication refused, limits exceeded); retrying cannot help
75     transient failure (connection refused, storage or SMTP unavailable, SIGTERM);
       retrying may help, within the retry budget
=====  ==========================================================================

Any other non-zero code (an unexpected crash) is treated as transient, bounded by the retry budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    USAGE = 2
    PERMANENT = 3
    TRANSIENT = 75


@dataclass(frozen=True)
class FieldError:
    """One invalid input field: a dotted path (``variables.x``) and what is wrong with it."""

    field: str
    message: str


@dataclass
class ExportdError(Exception):
    """Base of all expected failures; ``reason`` is a stable CamelCase word for machines."""

    message: str
    reason: str = "Error"
    retriable: bool = False
    status: int = 500

    def __str__(self) -> str:
        return self.message

    def described(self) -> str:
        """The message with whatever details the error carries (see :class:`InvalidInput`)."""
        return self.message

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.TRANSIENT if self.retriable else ExitCode.PERMANENT


@dataclass
class InvalidInput(ExportdError):
    """The request cannot be served as written (422); names the offending fields."""

    reason: str = "InvalidInput"
    status: int = 422
    errors: list[FieldError] = field(default_factory=list)

    def described(self) -> str:
        """The message with every offending field and its rule, for a one-line status."""
        if not self.errors:
            return self.message
        return f"{self.message}: " + "; ".join(f"{e.field}: {e.message}" for e in self.errors)


@dataclass
class NotFound(ExportdError):
    reason: str = "NotFound"
    status: int = 404


@dataclass
class Forbidden(ExportdError):
    reason: str = "Forbidden"
    status: int = 403


@dataclass
class Conflict(ExportdError):
    reason: str = "Conflict"
    status: int = 409


@dataclass
class PermanentFailure(ExportdError):
    """The export ran and failed in a way a retry cannot fix (bad query, denied access)."""

    reason: str = "PermanentFailure"


@dataclass
class TransientFailure(ExportdError):
    """A dependency was unavailable; the same work may succeed later."""

    reason: str = "TransientFailure"
    retriable: bool = True
    status: int = 503


@dataclass
class Cancelled(ExportdError):
    """Stopped on request or by a signal; retriable, so a Job or runner may run it again."""

    reason: str = "Cancelled"
    retriable: bool = True
    status: int = 409
