"""Search: type-level, system-level and compartment searches with paging, sorting and includes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import orjson
from sqlalchemy import and_, case, distinct, false, func, or_, select

from yilian.db import UnitOfWork
from yilian.fhir.access import READ, SEARCH, check_lookups, require
from yilian.fhir.interactions import writes
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.outcome import Resource
from yilian.fhir.model import load_definition, model
from yilian.fhir.search import params as sp
from yilian.fhir.search.compiler import Compiler, Lookup, base_select, order_by_selectivity, sort_expression
from yilian.fhir.search.registry import param as lookup_param
from yilian.fhir.search.registry import params_for
from yilian.fhir.store import repository as repo
from yilian.fhir.store import sealing
from yilian.fhir.store.tables import idx_reference, resource
from yilian.kernel.errors import Category, Issue, YilianError

MAX_INCLUDED = 2000
_R = resource.alias("r")  # made once: an alias builds its column collection on first use
MAX_ITERATE_DEPTH = 3


@dataclass
class SearchResult:
    matches: list[Resource]
    included: list[Resource]
    total: int | None
    next_cursor: str | None
    request: sp.SearchRequest
    warnings: list[str] = field(default_factory=list)


@cache
def _cursor_key() -> bytes:
    # Paging cursors are signed so a client cannot forge one to reach rows its query would not
    # return. The key lives for the process unless configured (then links survive restarts).
    configured = os.environ.get("YILIAN_CURSOR_KEY")
    return configured.encode() if configured else os.urandom(32)


def encode_cursor(values: list[Any], query_sig: str) -> str:
    payload = orjson.dumps({"v": values, "q": query_sig})
    mac = hmac.new(_cursor_key(), payload, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac + payload).decode().rstrip("=")


def decode_cursor(token: str, query_sig: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        mac, payload = raw[:12], raw[12:]
        if not hmac.compare_digest(mac, hmac.new(_cursor_key(), payload, hashlib.sha256).digest()[:12]):
            raise ValueError("bad signature")
        data = orjson.loads(payload)
        if data.get("q") != query_sig:
            raise ValueError("cursor belongs to another query")
        values: list[Any] = data["v"]
        return values
    except (ValueError, KeyError, orjson.JSONDecodeError):
        raise YilianError(
            Category.INVALID,
            "the paging cursor is invalid or expired; start the search again from its first page",
            issues=[Issue("invalid _cursor", code="processing")],
        ) from None


def _query_signature(req: sp.SearchRequest, compartment: tuple[str, str] | None, who: str = "") -> str:
    # The caller is part of the signature: a cursor handed to someone else does not work. The
    # cursor itself is not: every page of one query has the same signature.
    query = sorted(pair for pair in req.used if pair[0] != "_cursor")
    material = orjson.dumps([req.resource_types, query, compartment, who])
    return hashlib.sha256(material).hexdigest()[:16]


@cache
def compartment_params(compartment_type: str) -> dict[str, tuple[str, ...]]:
    raw: dict[str, dict[str, list[str]]] = load_definition("compartments")
    return {rt: tuple(ps) for rt, ps in raw.get(compartment_type, {}).items() if ps}


def compartment_condition(r: Any, res_type: str, compartment: tuple[str, str]) -> Any:
    ctype, cid = compartment
    params = compartment_params(ctype).get(res_type)
    conds = []
    if res_type == ctype:
        conds.append(r.c.res_id == cid)
    if params:
        conds.append(
            r.c.pk.in_(
                select(idx_reference.c.resource_pk).where(
                    idx_reference.c.res_type == res_type,
                    idx_reference.c.param.in_(params),
                    idx_reference.c.target_type == ctype,
                    idx_reference.c.target_id == cid,
                )
            )
        )
    if not conds:
        return None
    return or_(*conds)


def search(
    uow: UnitOfWork,
    ctx: FhirContext,
    resource_type: str | None,
    pairs: list[tuple[str, str]],
    *,
    strict: bool = False,
    compartment: tuple[str, str] | None = None,
) -> SearchResult:
    if resource_type is not None and not model().is_resource_type(resource_type):
        raise YilianError(Category.NOT_FOUND, f"unknown resource type {resource_type!r}")
    settings = ctx.settings
    req = sp.parse(
        resource_type,
        pairs,
        strict=strict,
        default_count=settings.default_page_size,
        max_count=settings.max_page_size,
    )
    return run(uow, ctx, req, compartment=compartment)


def _types_of(req: sp.SearchRequest, compartment: tuple[str, str] | None) -> list[str] | None:
    types = req.resource_types
    if compartment is not None:
        allowed = set(compartment_params(compartment[0])) | {compartment[0]}
        types = sorted(allowed if types is None else set(types) & allowed)
    return types


def run(
    uow: UnitOfWork,
    ctx: FhirContext,
    req: sp.SearchRequest,
    *,
    compartment: tuple[str, str] | None = None,
    everything: bool = False,
) -> SearchResult:
    writes.flush(uow)  # this unit of work's own writes must be searchable
    conn = uow.conn
    policy = ctx.policy
    guards = ctx.settings.lookup_guards
    compiler = Compiler(
        base_url=ctx.base_url,
        policy=policy,
        keyring=sealing.keyring_for(conn.engine),
        on_lookup=(lambda system, value: check_lookups(guards, uow, [(system, value)], ctx.policy))
        if guards
        else None,
    )
    r = _R
    types = _types_of(req, compartment) if not everything else req.resource_types
    if types is None:
        # A search over every type covers the types the caller may search.
        all_types = sorted(model().resource_types)
        allowed = [t for t in all_types if policy.allows(SEARCH, t)]
        types = None if len(allowed) == len(all_types) else allowed
    else:
        for t in types:
            require(policy, SEARCH, t)
    stmt = base_select(r, types)
    visible = policy.row_filter(r)
    if visible is not None:
        stmt = stmt.where(visible)
    lookups: list[Lookup] = []
    for f in req.filters:
        scope = types if types is not None else sorted(model().resource_types)
        if f.param is not None and f.param.code in ("_id", "_lastUpdated") and not f.chain:
            # Columns of the resource table: the same condition for every type.
            stmt = stmt.where(compiler.condition(r, f.param.resource_type, f))
        elif len(scope) == 1:
            lookup = compiler.lookup(scope[0], f)
            if lookup is None:
                stmt = stmt.where(compiler.condition(r, scope[0], f))
            else:
                lookups.append(lookup)
        else:
            per_type = []
            for t in scope:
                tf = sp.resolve_filter(t, f.name, f.values)
                if tf is not None:
                    per_type.append(and_(r.c.res_type == t, compiler.condition(r, t, tf)))
            stmt = stmt.where(or_(false(), *per_type))
    lookups = order_by_selectivity(conn, lookups)
    stmt = stmt.where(*compiler.matching(r, lookups))
    if compartment is not None and everything:
        stmt = stmt.where(_everything_condition(r, compartment))
    elif compartment is not None and types is not None:
        comp_conds = [
            and_(r.c.res_type == t, c)
            for t in types
            if (c := compartment_condition(r, t, compartment)) is not None
        ]
        stmt = stmt.where(or_(false(), *comp_conds))
    if compartment is not None and not everything and types is not None and len(types) == 1:
        # SQLite otherwise walks the type's (res_type, last_updated) index over every resource
        # of the type, testing each against the compartment's few: a patient's search slowed
        # with the size of the whole table. NOT INDEXED leaves it the rowid lookups of the
        # compartment's members (`pk IN (…)`), then a sort of those alone. (One type only: with
        # an OR over several types, or $everything's wider condition, it could not use them.)
        stmt = stmt.with_hint(r, "NOT INDEXED", "sqlite")

    total: int | None = None
    count_stmt: Any = None
    if req.total != "none" or req.summary == "count":
        if lookups and len(req.filters) == len(lookups) and visible is None and compartment is None:
            # Only index lookups, and every resource visible: the index rows alone answer, as
            # they exist exactly for the current, undeleted resources (writes.py replaces them
            # with each version and removes them on delete) and carry the resource's type.
            count_stmt = _count_from_index(lookups)
        else:
            count_stmt = select(func.count()).select_from(stmt.subquery())
    warnings = [f"search parameter {name!r} is unknown here and was ignored" for name in req.ignored]
    if req.summary == "count" or req.count == 0:
        if count_stmt is not None:
            total = int(conn.execute(count_stmt).scalar_one())
        return SearchResult([], [], total, None, req, warnings)

    keys = _sort_keys(r, req, types, bytewise=conn.dialect.name == "postgresql")

    labelled = [k.label(f"k{i}") for i, (k, _) in enumerate(keys)]
    # The page's rows carry the resources themselves (after the sort keys): no second query.
    n_keys = len(keys) - 1
    stored = repo.stored_columns(r)[1:]
    page = stmt.add_columns(*labelled[:-1], *stored)
    sig = _query_signature(req, compartment, getattr(policy, "identity", ""))
    if req.cursor:
        values = decode_cursor(req.cursor, sig)
        if len(values) != len(keys):
            raise YilianError(Category.INVALID, "the paging cursor does not fit this search")
        page = page.where(_after(keys, values))
    order = [k.desc() if desc else k.asc() for k, desc in keys]
    page = page.order_by(*order).limit(req.count + 1)
    rows = conn.execute(page).all()
    more = len(rows) > req.count
    rows = rows[: req.count]
    if count_stmt is not None:
        # A first page that holds the whole result is its own count (most patient-compartment
        # and demographic searches): no second statement, and the total agrees with the page.
        total = len(rows) if not req.cursor and not more else int(conn.execute(count_stmt).scalar_one())
    engine = conn.engine
    matches = [
        Resource(t, i, v, lu, sealing.open_content(engine, c), d, "", pk, pkey)
        for pk, (t, i, v, lu, d, c, pkey) in ((row[0], row[1 + n_keys :]) for row in rows)
    ]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        values = [last[i + 1] for i in range(n_keys)] + [last[0]]
        next_cursor = encode_cursor(values, sig)
    included = _includes(uow, req.includes, matches) if req.includes else []
    included = [
        inc
        for inc in included
        if policy.allows(READ, inc.res_type)
        and policy.can_see(uow, inc.res_type, inc.patient_key, inc.res_id)
    ]
    return SearchResult(matches, included, total, next_cursor, req, warnings)


def _count_from_index(lookups: list[Lookup]) -> Any:
    """How many resources all ``lookups`` find, counted on the driving lookup's index rows."""
    first, *rest = lookups
    probes = [lk.finds(first.pk) for lk in rest]
    return select(func.count(distinct(first.pk))).select_from(first.source).where(*first.conds, *probes)


def _sort_keys(
    r: Any, req: sp.SearchRequest, types: list[str] | None, *, bytewise: bool
) -> list[tuple[Any, bool]]:
    """(expression, descending) per key, ending with ``pk`` so that the order is total (keyset paging)."""
    keys: list[tuple[Any, bool]] = []
    for code, desc in req.sort:
        if code in ("_id", "_lastUpdated"):
            # Columns of every resource: also in system searches; never missing.
            column = (
                r.c.last_updated
                if code == "_lastUpdated"
                else (r.c.res_id.collate("C") if bytewise else r.c.res_id)
            )
            keys.append((column, desc))
            continue
        if types is None or len(types) != 1:
            raise YilianError(Category.INVALID, f"_sort by {code!r} needs a single resource type")
        p = lookup_param(types[0], code)
        if p is None:
            raise YilianError(Category.INVALID, f"cannot sort by {code!r}")
        expr = sort_expression(r, p, desc, bytewise=bytewise)
        # Resources without a value sort last, ascending or descending.
        keys.append((case((expr.is_(None), 1), else_=0), False))
        keys.append((expr, desc))
    keys.append((r.c.pk, False))
    return keys


def _everything_condition(r: Any, compartment: tuple[str, str]) -> Any:
    """In the compartment, or referred to by something in it (its organizations, practitioners…)."""
    members = resource.alias("members")
    comp_types = sorted(set(compartment_params(compartment[0])) | {compartment[0]})
    member_conds = [
        and_(members.c.res_type == t, c)
        for t in comp_types
        if (c := compartment_condition(members, t, compartment)) is not None
    ]
    member_pks = select(members.c.pk).where(members.c.deleted.is_(False), or_(false(), *member_conds))
    referred = resource.alias("referred")
    referred_pks = (
        select(referred.c.pk)
        .join(
            idx_reference,
            and_(
                idx_reference.c.target_type == referred.c.res_type,
                idx_reference.c.target_id == referred.c.res_id,
            ),
        )
        .where(idx_reference.c.resource_pk.in_(member_pks))
    )
    return or_(r.c.pk.in_(member_pks), r.c.pk.in_(referred_pks))


def _after(keys: list[tuple[Any, bool]], values: list[Any]) -> Any:
    """Keyset condition: rows strictly after ``values`` in the order ``keys`` (nulls handled)."""
    disjuncts = []
    for i, (expr, desc) in enumerate(keys):
        val = values[i]
        prefix = [
            (k.is_(None) if v is None else k == v) for (k, _), v in zip(keys[:i], values[:i], strict=True)
        ]
        if val is None:
            continue  # nothing sorts after a null within the null group except by later keys
        step = expr < val if desc else expr > val
        disjuncts.append(and_(*prefix, step) if prefix else step)
    return or_(*disjuncts)


def _includes(uow: UnitOfWork, includes: list[sp.Include], matches: list[Resource]) -> list[Resource]:
    conn = uow.conn
    seen: set[tuple[str, str]] = {(m.res_type, m.res_id) for m in matches}
    out: list[Resource] = []
    frontier = matches
    first = True
    for _depth in range(MAX_ITERATE_DEPTH + 1):
        active = [inc for inc in includes if first or inc.iterate]
        if not active or not frontier:
            break
        found: list[Resource] = []
        for inc in active:
            found.extend(_one_include(conn, inc, frontier))
        new = []
        for res in found:
            key = (res.res_type, res.res_id)
            if key not in seen:
                seen.add(key)
                new.append(res)
        out.extend(new)
        if len(out) >= MAX_INCLUDED:
            break
        frontier = new
        first = False
    return out[:MAX_INCLUDED]


def _one_include(conn: Any, inc: sp.Include, frontier: list[Resource]) -> list[Resource]:
    ir = idx_reference
    if not inc.reverse:
        pks = [m.pk for m in frontier if inc.source_type in ("*", m.res_type)]
        if not pks:
            return []
        stmt = select(ir.c.target_type, ir.c.target_id).where(
            ir.c.resource_pk.in_(pks), ir.c.target_id.is_not(None)
        )
        if inc.param != "*":
            stmt = stmt.where(ir.c.param == inc.param)
        if inc.target_type:
            stmt = stmt.where(ir.c.target_type == inc.target_type)
        keys = {(row.target_type, row.target_id) for row in conn.execute(stmt.distinct())}
        return [Resource.of(sv) for sv in repo.current_by_keys(conn, keys)]
    targets = [(m.res_type, m.res_id) for m in frontier]
    if inc.target_type:
        targets = [t for t in targets if t[0] == inc.target_type]
    if not targets:
        return []
    stmt = select(ir.c.resource_pk).where(
        or_(*(and_(ir.c.target_type == t, ir.c.target_id == i) for t, i in targets))
    )
    if inc.source_type != "*":
        stmt = stmt.where(ir.c.res_type == inc.source_type)
    if inc.param != "*":
        stmt = stmt.where(ir.c.param == inc.param)
    pks = [int(row.resource_pk) for row in conn.execute(stmt.distinct().limit(MAX_INCLUDED))]
    loaded = repo.current_by_pks(conn, pks)
    return [Resource.of(loaded[pk]) for pk in pks if pk in loaded and not loaded[pk].deleted]


def find(
    uow: UnitOfWork, ctx: FhirContext, resource_type: str, criteria: str, *, limit: int = 2
) -> list[Resource]:
    """Resources matching conditional-interaction criteria (``identifier=…``); at most ``limit``."""
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(criteria, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise YilianError(Category.INVALID, f"malformed search criteria {criteria!r}") from None
    if not pairs:
        raise YilianError(Category.INVALID, "conditional interaction without search criteria")
    req = sp.parse(resource_type, pairs, strict=True)
    req.count = limit
    req.total = "none"
    req.includes = []
    return run(uow, ctx, req).matches


def known_search_params(resource_type: str) -> list[str]:
    return sorted(params_for(resource_type))
