"""Error categories.

Domain code raises :class:`YilianError` with a :class:`Category`; it never knows about
HTTP. The API maps each category to a status code and a FHIR issue code in one table
(``yilian.api.problems``), the CLI to a readable message and exit code.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class Category(enum.Enum):
    INVALID = "invalid"  # the request or the data in it is malformed or breaks a rule
    UNPROCESSABLE = "unprocessable"  # well formed, but fails validation of its content
    NOT_FOUND = "not-found"
    GONE = "gone"  # existed, now deleted
    CONFLICT = "conflict"  # clashes with the current state (duplicate, still referenced)
    PRECONDITION_FAILED = "precondition-failed"  # If-Match on a stale version, ambiguous conditional
    MULTIPLE_MATCHES = "multiple-matches"  # a conditional interaction matched more than one resource
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    UNSUPPORTED = "unsupported"  # an interaction, parameter or feature the server does not do
    NOT_ALLOWED = "not-allowed"  # method not allowed on this resource/route
    TOO_LARGE = "too-large"
    UNAVAILABLE = "unavailable"  # a dependency is down; retry later
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem, with the element path(s) it concerns (FHIRPath-style: ``Patient.name[0].given``)."""

    message: str
    expression: tuple[str, ...] = ()
    severity: str = "error"  # fatal | error | warning | information
    code: str | None = None  # a FHIR issue-type code when the category's default does not fit
    # A machine-readable reason as (code system, code), for clients that act on it without
    # parsing the message (a lost health card: the card system's refusal codes).
    details: tuple[str, str] | None = None


class YilianError(Exception):
    """A failure the caller can act on. ``issues`` say exactly what is wrong and where."""

    def __init__(
        self,
        category: Category,
        message: str,
        *,
        issues: Sequence[Issue] = (),
    ) -> None:
        super().__init__(message)
        self.category = category
        self.message = message
        self.issues: tuple[Issue, ...] = tuple(issues) or (Issue(message),)

    def __repr__(self) -> str:
        return f"YilianError({self.category.value}, {self.message!r})"


def invalid(message: str, *expression: str) -> YilianError:
    return YilianError(Category.INVALID, message, issues=[Issue(message, tuple(expression))])


def not_found(message: str) -> YilianError:
    return YilianError(Category.NOT_FOUND, message)


def conflict(message: str) -> YilianError:
    return YilianError(Category.CONFLICT, message)


def unsupported(message: str) -> YilianError:
    return YilianError(Category.UNSUPPORTED, message)
