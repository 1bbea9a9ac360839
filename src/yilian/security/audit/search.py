"""Searching the log, for auditors: the FHIR AuditEvent search parameters over the log's columns.

| parameter | matches |
|---|---|
| ``patient`` (``Patient/123`` or ``123``) | events that touched that patient |
| ``entity`` (``Type/id``) | events about that resource (``Patient/…``: also those that touched the patient) |
| ``agent`` | the acting client or user (``agent_id``); ``Organization/…``: the requesting institution; ``agent:identifier=system\\|value`` |
| ``altid`` | the acting client or user |
| ``org`` (custom) | the requesting institution; ``org:missing=true``: the platform operator's own accesses |
| ``date`` | when recorded, with the prefixes eq ne gt ge lt le sa eb |
| ``action``, ``subtype``, ``outcome`` | tokens (C R U D E; read, search-type…; 0 4 8 12) |
| ``address`` | the client's network address (prefix) |
| ``purpose`` (custom) | purpose of use (``BTG``, ``ETREAT``) |
| ``flagged`` (custom) | ``true``: break-the-glass accesses and denials, for review |
| ``_id``, ``_count``, ``_cursor`` | as in any FHIR search |

Values separated by commas are alternatives; repeated parameters must all match. Results come
newest first, paged by a signed keyset cursor (the FHIR search's ``encode_cursor``). An unknown
parameter is an error: an auditor must not get a wider answer than asked for without noticing.
"""

from __future__ import annotations

import hashlib

import orjson
from sqlalchemy import ColumnElement, and_, false, literal, or_, select, true

from yilian.db import UnitOfWork
from yilian.fhir.interactions.search import decode_cursor, encode_cursor
from yilian.fhir.search.params import DEFAULT_COUNT, MAX_COUNT, split_prefix, split_values, unescape
from yilian.fhir.search.values import date_range
from yilian.kernel.errors import Category, Issue, YilianError, not_found
from yilian.security.audit import codes as c
from yilian.security.audit.model import AuditRow
from yilian.security.audit.tables import audit_event as t

_IGNORED = frozenset({"_format", "_pretty"})
_PAGING = frozenset({"_count", "_cursor"})


class AuditPage(list[AuditRow]):
    """Rows of one page, newest first; ``next_cursor`` (for ``_cursor``) when there are more."""

    def __init__(self, rows: list[AuditRow], next_cursor: str | None = None) -> None:
        super().__init__(rows)
        self.next_cursor = next_cursor


def _bad(message: str) -> YilianError:
    return YilianError(Category.INVALID, message, issues=[Issue(message, code="processing")])


def _like_token(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _has_patient(patient_id: str) -> ColumnElement[bool]:
    # Spaces around both sides: "12" must not match a row that touched patient "123".
    padded = literal(" ") + t.c.patient_keys + literal(" ")
    return padded.like(f"% {_like_token(patient_id)} %", escape="\\")


def _reference_id(value: str, resource_type: str) -> str | None:
    """The id in ``Type/id`` or ``http://…/Type/id``; a bare id as is; None for another type."""
    if "/" not in value:
        return value
    parts = value.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == resource_type:
        return parts[-1]
    return None


def _token(value: str, system: str | None) -> str | None:
    """The code of a token search value, None when its system is not ``system``."""
    if "|" not in value:
        return value
    sys_part, code = value.split("|", 1)
    if sys_part and system is not None and sys_part != system:
        return None
    return code


def _date(value: str) -> ColumnElement[bool]:
    prefix, text = split_prefix(value)
    span = date_range(text)
    if span is None:
        raise _bad(f"date: {value!r} is not a FHIR date")
    low, high = span
    col = t.c.recorded
    match prefix:
        case "eq" | "ap":
            return and_(col >= low, col <= high)
        case "ne":
            return or_(col < low, col > high)
        case "gt" | "sa":
            return col > high
        case "ge":
            return col >= low
        case "lt" | "eb":
            return col < low
        case "le":
            return col <= high
    raise _bad(f"date: prefix {prefix!r} is not supported")


def _subtype(value: str) -> ColumnElement[bool]:
    if "|" in value:
        system, code = value.split("|", 1)
        if system:
            name = c.subtype_of({"system": system, "code": code})
            return t.c.subtype == name if name is not None else false()
        return t.c.subtype == code
    return t.c.subtype == value


def _agent(value: str, modifier: str) -> ColumnElement[bool]:
    if modifier == "identifier":
        system, _, code = value.rpartition("|")
        if system == c.CLIENT_SID:
            return and_(t.c.agent_id == code, t.c.agent_kind == "system")
        if system == c.USER_SID:
            return and_(t.c.agent_id == code, t.c.agent_kind != "system")
        return t.c.agent_id == code if system == "" else false()
    if modifier:
        raise _bad(f"agent:{modifier} is not supported")
    org = _reference_id(value, "Organization") if "/" in value else None
    if org is not None:
        return t.c.org_id == org
    return t.c.agent_id == value


def _one(name: str, modifier: str, value: str) -> ColumnElement[bool]:
    """The condition for one value of one parameter."""
    if name == "patient":
        pid = _reference_id(value, "Patient")
        return _has_patient(pid) if pid else false()
    if name == "entity":
        cond: ColumnElement[bool] = t.c.entity == value
        pid = _reference_id(value, "Patient") if "/" in value else None
        return or_(cond, _has_patient(pid)) if pid else cond
    if name == "agent":
        return _agent(value, modifier)
    if name == "altid":
        code = _token(value, None)
        return t.c.agent_id == code
    if name == "org":
        return t.c.org_id == value
    if name == "date":
        return _date(value)
    if name == "action":
        code = _token(value, c.AUDIT_EVENT_ACTION)
        return t.c.action == code if code is not None else false()
    if name == "subtype":
        return _subtype(value)
    if name == "outcome":
        code = _token(value, c.AUDIT_EVENT_OUTCOME)
        return t.c.outcome == int(code) if code is not None and code.isdigit() else false()
    if name == "purpose":
        code = _token(value, c.PURPOSE_OF_USE)
        return t.c.purpose == code if code is not None else false()
    if name == "address":
        return t.c.source_ip.like(_like_token(value) + "%", escape="\\")
    if name == "flagged":
        if value not in ("true", "false"):
            raise _bad(f"flagged: {value!r} is not true or false")
        return t.c.flagged == (value == "true")
    if name == "_id":
        return t.c.id == int(value) if value.isdigit() else false()
    raise _bad(f"unknown AuditEvent search parameter {name!r}")


_COLUMN_OF = {
    "org": t.c.org_id,
    "patient": t.c.patient_keys,
    "entity": t.c.entity,
    "purpose": t.c.purpose,
    "address": t.c.source_ip,
}


def _condition(key: str, raw: str) -> ColumnElement[bool]:
    name, _, modifier = key.partition(":")
    if modifier == "missing":
        column = _COLUMN_OF.get(name)
        if column is None or raw not in ("true", "false"):
            raise _bad(f"{key}={raw} is not supported")
        return column.is_(None) if raw == "true" else column.is_not(None)
    if modifier and name != "agent":
        raise _bad(f"{key}: the modifier :{modifier} is not supported")
    values = [unescape(v) for v in split_values(raw) if v != ""]
    if not values:
        raise _bad(f"{key}: a value is required")
    return or_(*(_one(name, modifier, v) for v in values))


def _signature(filters: list[tuple[str, str]], who: str) -> str:
    return hashlib.sha256(orjson.dumps(["AuditEvent", sorted(filters), who])).hexdigest()[:16]


def search_audit(uow: UnitOfWork, params: list[tuple[str, str]], *, who: str = "") -> AuditPage:
    """One page of the events matching ``params``; ``who`` (the auditor) binds the paging cursor."""
    count = DEFAULT_COUNT
    cursor: str | None = None
    filters: list[tuple[str, str]] = []
    conds: list[ColumnElement[bool]] = []
    for key, value in params:
        if key in _IGNORED:
            continue
        if key == "_count":
            if not value.isdigit():
                raise _bad(f"_count: {value!r} is not a number")
            count = min(int(value), MAX_COUNT)
        elif key == "_cursor":
            cursor = value
        else:
            conds.append(_condition(key, value))
            filters.append((key, value))
    sig = _signature(filters, who)
    stmt = select(t).where(and_(true(), *conds))
    if cursor:
        values = decode_cursor(cursor, sig)
        if len(values) != 2:
            raise _bad("the paging cursor does not fit this search")
        recorded, last_id = int(values[0]), int(values[1])
        stmt = stmt.where(or_(t.c.recorded < recorded, and_(t.c.recorded == recorded, t.c.id < last_id)))
    if count == 0:
        return AuditPage([])
    stmt = stmt.order_by(t.c.recorded.desc(), t.c.id.desc()).limit(count + 1)
    rows = [AuditRow.of(r) for r in uow.conn.execute(stmt).mappings()]
    more = len(rows) > count
    rows = rows[:count]
    next_cursor = encode_cursor([rows[-1].recorded, rows[-1].id], sig) if more and rows else None
    return AuditPage(rows, next_cursor)


def read_audit(uow: UnitOfWork, id: int | str) -> AuditRow:
    """One event by its id; ``NOT_FOUND`` when there is none."""
    key = str(id)
    if not key.isdigit():
        raise not_found(f"AuditEvent/{key} is not known")
    row = uow.conn.execute(select(t).where(t.c.id == int(key))).mappings().first()
    if row is None:
        raise not_found(f"AuditEvent/{key} is not known")
    return AuditRow.of(row)
