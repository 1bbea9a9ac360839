"""What an audit event says (:class:`AuditRecord`, written) and what the log holds (:class:`AuditRow`, read)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from yilian.fhir.search.values import us_to_instant
from yilian.kernel.errors import invalid
from yilian.kernel.nul import visible_nul
from yilian.security.audit.codes import ACTIONS, AGENT_KINDS, OUTCOMES
from yilian.security.audit.privacy import scrub
from yilian.security.principal import BREAK_GLASS_PURPOSES

RETENTION_DAYS = 183  # 等保三级: audit records are kept at least six months
_SUBTYPE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
# Patient keys are FHIR ids: no spaces, so a space-separated column can be searched with LIKE.
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
FLAGGED_SUBTYPES = frozenset({"access-denied", "break-glass"})


def _limit(name: str, value: str | None, size: int, *, required: bool = False) -> None:
    if value is None or value == "":
        if required:
            raise invalid(f"audit record: {name} is required", name)
        return
    if len(value) > size:
        raise invalid(f"audit record: {name} is longer than {size} characters", name)


@dataclass(frozen=True, kw_only=True)
class AuditRecord:
    """One access to record. Columns of the log plus the details only the AuditEvent JSON carries."""

    action: str  # C R U D E
    subtype: str  # read, vread, search-type, create, update, patch, delete, history, operation, login…
    agent_kind: str  # system | user | patient | operator
    agent_id: str  # client id or user name
    outcome: int = 0  # 0 success, 4 minor failure (incl. refused), 8 serious, 12 major
    org_id: str | None = None  # requesting institution; None = the platform operator
    patient_keys: tuple[str, ...] = ()  # every patient the access touched (a search: those returned)
    entity: str | None = None  # Type/id (or Type/id/_history/v) accessed
    query: str | None = None  # a search's query, e.g. "Observation?patient=123&code=…"
    resource_types: tuple[str, ...] = ()
    purpose: str | None = None  # purpose of use (v3 ActReason): BTG, ETREAT…
    flagged: bool | None = None  # None: flagged when the glass was broken or the access denied
    source_ip: str | None = None
    user_agent: str | None = None
    outcome_desc: str | None = None
    agent_name: str | None = None  # a display name for the agent
    # (type, value) details of the entity accessed beyond its resource types, e.g. an HL7 v2
    # message's MSH-9 and MSH-10; carried in the AuditEvent only, not in columns.
    details: tuple[tuple[str, str], ...] = ()
    recorded: dt.datetime | None = None  # None: now

    def __post_init__(self) -> None:
        # Sequences given as lists become tuples: records are values and may be hashed or queued.
        object.__setattr__(self, "patient_keys", tuple(dict.fromkeys(self.patient_keys)))
        object.__setattr__(self, "resource_types", tuple(self.resource_types))
        object.__setattr__(self, "details", tuple((str(k), scrub(str(v)) or "") for k, v in self.details))
        # Free text may quote an ID or phone number (a search by identifier): never stored plain.
        for name in ("entity", "query", "outcome_desc"):
            object.__setattr__(self, name, visible_nul(scrub(getattr(self, name))))
        for name in ("agent_id", "agent_name", "user_agent"):
            object.__setattr__(self, name, visible_nul(getattr(self, name)))
        if self.action not in ACTIONS:
            raise invalid(f"audit record: action {self.action!r} is not one of C R U D E", "action")
        if self.outcome not in OUTCOMES:
            raise invalid(f"audit record: outcome {self.outcome!r} is not 0, 4, 8 or 12", "outcome")
        if self.agent_kind not in AGENT_KINDS:
            raise invalid(
                f"audit record: agent kind {self.agent_kind!r} is not one of {sorted(AGENT_KINDS)}",
                "agent_kind",
            )
        if not _SUBTYPE.match(self.subtype):
            raise invalid(f"audit record: subtype {self.subtype!r} is not a code", "subtype")
        _limit("agent_id", self.agent_id, 128, required=True)
        _limit("org_id", self.org_id, 64)
        _limit("purpose", self.purpose, 32)
        _limit("source_ip", self.source_ip, 64)
        for key in self.patient_keys:
            if not _FHIR_ID.match(key):
                raise invalid(f"audit record: patient key {key!r} is not a FHIR id", "patient_keys")

    @property
    def is_flagged(self) -> bool:
        if self.flagged is not None:
            return self.flagged
        return self.purpose in BREAK_GLASS_PURPOSES or self.subtype in FLAGGED_SUBTYPES

    @property
    def entity_column(self) -> str | None:
        return self.entity if self.entity else self.query


@dataclass(frozen=True)
class AuditRow:
    """One row of the log, as stored."""

    id: int
    recorded: int  # µs since epoch
    action: str
    subtype: str
    outcome: int
    agent_kind: str
    agent_id: str
    org_id: str | None
    patient_keys: tuple[str, ...]
    entity: str | None
    purpose: str | None
    flagged: bool
    source_ip: str | None
    content: bytes
    seq: int | None
    prev_hash: str | None
    chain_hash: str | None

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> AuditRow:
        keys = row["patient_keys"]
        return cls(
            id=int(row["id"]),
            recorded=int(row["recorded"]),
            action=row["action"],
            subtype=row["subtype"],
            outcome=int(row["outcome"]),
            agent_kind=row["agent_kind"],
            agent_id=row["agent_id"],
            org_id=row["org_id"],
            patient_keys=tuple(keys.split()) if keys else (),
            entity=row["entity"],
            purpose=row["purpose"],
            flagged=bool(row["flagged"]),
            source_ip=row["source_ip"],
            content=bytes(row["content"]),
            seq=None if row["seq"] is None else int(row["seq"]),
            prev_hash=row["prev_hash"],
            chain_hash=row["chain_hash"],
        )

    def resource(self) -> dict[str, Any]:
        """The FHIR AuditEvent as served: the stored JSON with its id (the row's) and lastUpdated."""
        body: dict[str, Any] = orjson.loads(self.content)
        return {
            "resourceType": "AuditEvent",
            "id": str(self.id),
            "meta": {"lastUpdated": us_to_instant(self.recorded)},
            **{k: v for k, v in body.items() if k != "resourceType"},
        }
