"""The ``$export`` writer: what a job exports, streamed from the resource table into NDJSON files.

The rows are read in keyset pages (``pk > last ORDER BY pk LIMIT n``), each page on a
connection of its own, and written straight to one file per type: memory stays the size of
a page whatever the size of the export, and no transaction stays open for the hours a large
export may take. Every page is filtered by the caller's access policy (the very condition a
search applies), so an export holds exactly what the same caller could find by searching.

Levels (HL7 Bulk Data Access IG v2): ``system`` exports everything the caller may see;
``patient`` the resources in any patient's compartment (``patient_key`` is set from the
official patient CompartmentDefinition on every write, as ``$everything`` uses it); ``group``
the compartments of the Group's member patients.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from sqlalchemy import ColumnElement, select

from yilian.db import Database, UnitOfWork
from yilian.fhir.access import SEARCH, AccessPolicy
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.read import read
from yilian.fhir.model import model
from yilian.fhir.search.indexer import parse_reference
from yilian.fhir.search.values import date_range
from yilian.fhir.store.sealing import open_content
from yilian.fhir.store.tables import resource
from yilian.kernel.errors import Category, YilianError

SYSTEM, PATIENT, GROUP = "system", "patient", "group"
NDJSON_FORMATS = frozenset({"application/fhir+ndjson", "application/ndjson", "ndjson"})
PAGE = 1000
# Whose data a file carries, for the audit record of its download: the first this many
# distinct patients (a search page's most, as a search records the patients it returned) and
# whether there were more. A region-wide export can carry millions; listing them all in one
# AuditEvent (or in the job's row) is not possible, the level and query say the rest.
AUDIT_PATIENTS = 1000


@dataclass
class ExportRequest:
    """A checked kick-off: every parameter is understood before a job exists."""

    level: str
    types: list[str] | None = None
    since: int | None = None  # µs since epoch
    since_text: str | None = None
    group_id: str | None = None
    members: list[str] = field(default_factory=list)  # Patient ids of the group

    def as_params(self) -> dict[str, Any]:
        return {
            "level": self.level,
            "types": self.types,
            "since": self.since,
            "since_text": self.since_text,
            "group": self.group_id,
            "members": self.members,
        }

    @classmethod
    def from_params(cls, p: dict[str, Any]) -> ExportRequest:
        return cls(
            p["level"],
            p.get("types"),
            p.get("since"),
            p.get("since_text"),
            p.get("group"),
            p.get("members") or [],
        )


def parse_request(level: str, pairs: list[tuple[str, str]], *, lenient: bool = False) -> ExportRequest:
    """Kick-off parameters (query or Parameters): ``_outputFormat``, ``_type``, ``_since``.

    Anything else is refused (400) unless the client asked for ``Prefer: handling=lenient``:
    an export silently missing a filter the client believes applied would hand out more
    data than asked for.
    """
    req = ExportRequest(level)
    for name, value in pairs:
        if name == "_outputFormat":
            if value.strip() not in NDJSON_FORMATS:
                raise YilianError(
                    Category.INVALID,
                    f"_outputFormat {value!r} is not supported: use application/fhir+ndjson",
                )
        elif name == "_type":
            wanted = [t.strip() for t in value.split(",") if t.strip()]
            if not wanted:
                raise YilianError(Category.INVALID, "_type is empty: name one or more resource types")
            for t in wanted:
                if not model().is_resource_type(t):
                    raise YilianError(Category.INVALID, f"_type names an unknown resource type {t!r}")
            req.types = sorted(set(req.types or []) | set(wanted))
        elif name == "_since":
            # An unencoded "+08:00" arrives as " 08:00" (form decoding): read it as meant.
            value = value.strip().replace(" ", "+")
            r = date_range(value) if "T" in value or len(value) == 10 else None
            if r is None:
                raise YilianError(
                    Category.INVALID,
                    f"_since must be a FHIR instant (2024-01-31T08:00:00+08:00), not {value!r}",
                )
            req.since, req.since_text = r[0], value
        elif name in ("_format", "_pretty"):
            continue
        elif not lenient:
            raise YilianError(
                Category.INVALID,
                f"$export does not support the parameter {name!r} (supported: _outputFormat, _type, _since)",
            )
    return req


def allowed_types(policy: AccessPolicy, req: ExportRequest) -> list[str]:
    """The types this caller may export: those named (each must be in its scopes), else all its scopes cover."""
    if req.types is not None:
        refused = [t for t in req.types if not policy.allows(SEARCH, t) or not policy.allows("r", t)]
        if refused:
            raise YilianError(
                Category.FORBIDDEN,
                f"the access token does not allow reading {', '.join(refused)} (needs system/{refused[0]}.rs)",
            )
        return req.types
    types = [t for t in sorted(model().resource_types) if policy.allows(SEARCH, t) and policy.allows("r", t)]
    if not types:
        raise YilianError(
            Category.FORBIDDEN, "the access token allows reading no resource type (system/*.rs)"
        )
    return types


def group_members(uow: UnitOfWork, ctx: FhirContext, group_id: str) -> list[str]:
    """The Patient ids of a Group the caller may read (404 when it may not or it does not exist)."""
    found = read(uow, ctx, "Group", group_id)
    assert found.content is not None
    doc = orjson.loads(found.content)
    members: set[str] = set()
    for m in doc.get("member") or []:
        ref = (m.get("entity") or {}).get("reference") if isinstance(m, dict) else None
        if isinstance(ref, str):
            parsed = parse_reference(ref)
            if parsed.type == "Patient" and parsed.id:
                members.add(parsed.id)
    return sorted(members)


def _conditions(req: ExportRequest, policy: AccessPolicy, types: list[str]) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [resource.c.deleted.is_(False)]
    all_types = req.types is None and len(types) == len(model().resource_types)
    if not all_types:
        conds.append(resource.c.res_type.in_(types))
    if req.since is not None:
        conds.append(resource.c.last_updated >= req.since)
    if req.level == PATIENT:
        conds.append(resource.c.patient_key.is_not(None))
    elif req.level == GROUP:
        conds.append(resource.c.patient_key.in_(req.members))
    visible = policy.row_filter(resource)
    if visible is not None:
        conds.append(visible)
    return conds


@dataclass
class ExportResult:
    files: list[dict[str, Any]]  # [{type, file, count, patients, more_patients}] in type order
    exported: int


def write_export(
    db: Database,
    req: ExportRequest,
    policy: AccessPolicy,
    directory: Path,
    *,
    keep_going: Callable[[int], bool],
    page: int = PAGE,
) -> ExportResult | None:
    """Write the export into ``directory`` (one ``Type.ndjson`` per type); None if stopped.

    ``keep_going(exported so far)`` is asked after every page: it records progress and says
    whether the job is still wanted (its owner may have cancelled it).
    """
    types = allowed_types(policy, req)
    conds = _conditions(req, policy, types)
    directory.mkdir(parents=True, exist_ok=True)
    handles: dict[str, IO[bytes]] = {}
    counts: dict[str, int] = {}
    patients: dict[str, dict[str, None]] = {}  # per type, in order of appearance
    more: set[str] = set()
    exported = 0
    last = 0
    base = select(resource.c.pk, resource.c.res_type, resource.c.content, resource.c.patient_key).where(
        *conds
    )
    try:
        while True:
            stmt = base.where(resource.c.pk > last).order_by(resource.c.pk).limit(page)
            with db.connect_autocommit() as conn:  # each page its own statement, as before
                rows = conn.execute(stmt).all()
            for pk, rtype, content, patient_key in rows:
                fh = handles.get(rtype)
                if fh is None:
                    fh = handles[rtype] = (directory / f"{rtype}.ndjson").open("wb")
                    counts[rtype] = 0
                    patients[rtype] = {}
                if patient_key is not None and patient_key not in patients[rtype]:
                    if len(patients[rtype]) < AUDIT_PATIENTS:
                        patients[rtype][patient_key] = None
                    else:
                        more.add(rtype)
                opened = open_content(db.engine, bytes(content))
                assert opened is not None
                fh.write(opened)
                fh.write(b"\n")
                counts[rtype] += 1
                last = pk
            exported += len(rows)
            if not keep_going(exported):
                return None
            if len(rows) < page:
                break
        for fh in handles.values():
            fh.flush()
            os.fsync(fh.fileno())  # the manifest is only published for files that are on disk
    finally:
        for fh in handles.values():
            fh.close()
    files = [
        {
            "type": t,
            "file": f"{t}.ndjson",
            "count": counts[t],
            "patients": list(patients[t]),
            "more_patients": t in more,
        }
        for t in sorted(counts)
    ]
    return ExportResult(files, exported)
