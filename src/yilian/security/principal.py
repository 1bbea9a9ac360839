"""Who is asking: a system client, a member of staff, a resident, or the platform operator."""

from __future__ import annotations

from dataclasses import dataclass, replace

from yilian.security.scopes import Scopes

SYSTEM, STAFF, RESIDENT = "system", "staff", "resident"
OPERATOR_OWNER = "operator"  # owner of what the platform operator (or a trusted in-process caller) creates
# Purpose-of-use codes (HL7 v3 ActReason) that open a record in an emergency.
BREAK_GLASS_PURPOSES = frozenset({"BTG", "ETREAT"})


@dataclass(frozen=True)
class Principal:
    kind: str  # system | staff | resident
    subject: str  # client id, or user name for people
    scopes: Scopes
    org_id: str | None  # the institution acting; None = the platform operator (region-wide, audited)
    client_id: str | None = None
    user_id: str | None = None
    patient_keys: frozenset[str] | None = None  # residents: their own record and their children's
    purpose: str | None = None  # break-the-glass purpose of use
    reason: str | None = None  # the stated reason for break-the-glass

    @property
    def is_operator(self) -> bool:
        return self.org_id is None and self.kind != RESIDENT

    @property
    def break_glass(self) -> bool:
        return self.purpose in BREAK_GLASS_PURPOSES

    @property
    def identity(self) -> str:
        return f"{self.kind}:{self.subject}"

    @property
    def owner_key(self) -> str:
        """Who owns what this principal creates (:data:`yilian.security.tables.OWNED_TYPES`)."""
        if self.org_id is not None:
            return f"org:{self.org_id}"
        return f"who:{self.identity}" if self.kind == RESIDENT else OPERATOR_OWNER

    def with_purpose(self, purpose: str, reason: str) -> Principal:
        return replace(self, purpose=purpose, reason=reason)
