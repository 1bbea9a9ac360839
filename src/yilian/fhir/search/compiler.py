"""Compiling parsed search filters to SQL (SQLAlchemy Core, portable to SQLite and PostgreSQL).

Every filter becomes a condition on the ``pk`` (or ``res_id``) of a ``resource`` alias:
``pk IN (SELECT resource_pk FROM idx_… WHERE …)``. Index lookups drive the query, so a
selective parameter touches only its index rows on both databases. Chains and ``_has`` add
one subquery per hop: the next hop's index rows joined to the resources they belong to
(``SELECT r2.res_id FROM idx_… JOIN resource r2 ON r2.pk = resource_pk WHERE …``).
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    Table,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.sql.expression import Alias, FromClause

from yilian.db.dialect import with_index
from yilian.fhir.access import ALLOW_ALL, SEARCH, AccessPolicy, require
from yilian.fhir.model import model
from yilian.fhir.search.params import Filter, resolve_filter, split_prefix, split_unescaped, unescape
from yilian.fhir.search.registry import SearchParam, params_for
from yilian.fhir.search.values import MAX_US, MIN_US, date_range, fold, instant_to_us, parse_number
from yilian.fhir.store import sealing
from yilian.fhir.store.tables import (
    INDEX_TABLES,
    idx_reference,
    resource,
)
from yilian.kernel import clock
from yilian.kernel.crypto import Keyring
from yilian.kernel.errors import Category, Issue, YilianError

MAX_CHAIN_DEPTH = 4
ESTIMATE_CAP = 1000  # rows counted per lookup when choosing which one drives a search
INDEXES_BY_RESOURCE = {t.name: f"ix_{t.name}_resource" for t in INDEX_TABLES.values()}
# "…T08:30:00+08:00" written into a URL without encoding the '+' arrives as "…T08:30:00 08:00".
_SPACED_OFFSET = re.compile(r"(T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$")


def _bad(message: str) -> YilianError:
    return YilianError(Category.INVALID, message, issues=[Issue(message, code="processing")])


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def prefix_successor(prefix: str) -> str | None:
    """The least string greater than every string that starts with ``prefix`` (code-point order).

    None when there is none (the prefix is all U+10FFFF). Surrogates are skipped: they cannot be
    encoded, so no stored value holds one.
    """
    chars = list(prefix)
    while chars:
        nxt = ord(chars[-1]) + 1
        if nxt == 0xD800:
            nxt = 0xE000
        if nxt <= 0x10FFFF:
            chars[-1] = chr(nxt)
            return "".join(chars)
        chars.pop()
    return None


def starts_with(col: Any, prefix: str) -> ColumnElement[bool]:
    """``col`` starts with ``prefix``, as a range that a B-tree index on ``col`` answers.

    ``LIKE 'p%'`` uses no index on SQLite (its LIKE is case-insensitive over a BINARY column)
    nor on PostgreSQL unless the column's collation is "C". The range is exact only where the
    column compares in code-point order: SQLite's BINARY collation, and the "C" collation that
    ``idx_string.value_norm`` has on PostgreSQL whatever the database's default.
    """
    if prefix == "":
        return true()
    upper = prefix_successor(prefix)
    if upper is None:
        return col >= prefix  # type: ignore[no-any-return]
    return and_(col >= prefix, col < upper)


class Compiler:
    """Builds conditions for one search; ``base_url`` lets absolute references to this server match."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        policy: AccessPolicy = ALLOW_ALL,
        keyring: Keyring | None = None,
        on_lookup: Callable[[str | None, str], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        # Told of every identifier searched by, at any depth of a chain or _has (the settings'
        # lookup guards: a lost card's number is refused, not searched).
        self.on_lookup = on_lookup
        # Sensitive identifiers and phone numbers are indexed as keyed blind tokens: searched
        # values are blinded the same way (sealing.blind_token).
        self.keyring = keyring
        # Applied to every resource a chain or _has looks into, not only to the results: what
        # the caller may not see must not decide what it gets either.
        self.policy = policy
        self._aliases_used: Counter[str] = Counter()

    def _visible(self, alias: FromClause) -> ColumnElement[bool]:
        cond = self.policy.row_filter(alias)
        return cond if cond is not None else true()

    # --- entry -------------------------------------------------------------------------------

    def condition(self, r: FromClause, resource_type: str, f: Filter, depth: int = 0) -> ColumnElement[bool]:
        if depth > MAX_CHAIN_DEPTH:
            raise _bad(f"chain too deep in {f.name!r} (at most {MAX_CHAIN_DEPTH} levels)")
        if f.has is not None:
            return self._has(r, resource_type, f, depth)
        p = f.param
        assert p is not None
        rows = self._rows(resource_type, f, depth)
        if rows is not None:
            source, pk, conds = rows
            return r.c.pk.in_(select(pk).select_from(source).where(*conds))
        if f.modifier == "missing":
            return self._missing(r, resource_type, p, f.values[0] == "true")
        if p.code == "_id":
            ids = [unescape(v) for v in f.values if v]
            cond: ColumnElement[bool] = r.c.res_id.in_(ids)
            return not_(cond) if f.modifier == "not" else cond
        if p.code == "_lastUpdated":
            return or_(*(self._date_cond(r.c.last_updated, r.c.last_updated, v) for v in f.values))
        # :not — the resources without a matching index row, including those without the element.
        table, pk, conds = self._index_rows(resource_type, p, f)
        return r.c.pk.not_in(select(pk).select_from(table).where(*conds))

    def lookup(self, resource_type: str, f: Filter) -> Lookup | None:
        """``f`` as index rows to look up, or None when it is not a positive index lookup."""
        rows = self._rows(resource_type, f, 0)
        return None if rows is None else Lookup(*rows)

    def matching(self, r: FromClause, lookups: Sequence[Lookup]) -> list[ColumnElement[bool]]:
        """Conditions keeping the resources of ``r`` that every lookup finds, the first driving.

        The first lookup's rows are the candidates (``pk IN``); each other one is a probe of the
        candidate's own rows through the ``resource_pk`` index (``EXISTS``). Testing every
        lookup with ``IN`` instead makes SQLite build each lookup's full list of rows, 250,000
        of them for ``gender=female`` in a city, before it can keep the one patient a PDQ
        wants. Callers put the most selective lookup first (``order_by_selectivity``).
        """
        if not lookups:
            return []
        first, *rest = lookups
        return [first.contains(r.c.pk), *(lk.finds(r.c.pk) for lk in rest)]

    def _index_rows(self, resource_type: str, p: SearchParam, f: Filter) -> tuple[FromClause, Any, list[Any]]:
        # Each lookup reads its own alias, so two lookups in one table (family and given) can be
        # correlated with each other; the aliases are made once per process and reused (SQLAlchemy
        # builds an alias's column collection on first use, and equal aliases share cached SQL).
        table = _index_alias(p.type, self._aliases_used[p.type])
        self._aliases_used[p.type] += 1
        value_conds = [self._value_cond(table, p, f, v) for v in f.values]
        return (
            table,
            table.c.resource_pk,
            [table.c.res_type == resource_type, table.c.param == p.code, or_(*value_conds)],
        )

    def _rows(self, resource_type: str, f: Filter, depth: int) -> tuple[FromClause, Any, list[Any]] | None:
        """``f`` as "resources with index rows like these": (from clause, its resource_pk, conditions).

        For a plain index lookup or a chain; None for what is not a positive index lookup
        (``_has``, ``:missing``, ``:not``, ``_id``, ``_lastUpdated``). Chains and ``_has`` join
        these rows to the resources they belong to instead of nesting another ``IN``: one
        subquery per hop keeps a four-level chain within SQLite's parser limits, and the rows,
        being the most constrained table of each subquery, drive the plan on both databases.
        """
        if depth > MAX_CHAIN_DEPTH:
            raise _bad(f"chain too deep in {f.name!r} (at most {MAX_CHAIN_DEPTH} levels)")
        p = f.param
        if (
            f.has is not None
            or p is None
            or f.modifier in ("missing", "not")
            or p.code in ("_id", "_lastUpdated")
        ):
            return None
        if f.chain:
            return self._chain_rows(resource_type, f, depth)
        return self._index_rows(resource_type, p, f)

    def _missing(
        self, r: FromClause, resource_type: str, p: SearchParam, missing: bool
    ) -> ColumnElement[bool]:
        if p.code in ("_id", "_lastUpdated"):
            return false() if missing else true()
        table = INDEX_TABLES[p.type]
        sub = select(table.c.resource_pk).where(table.c.res_type == resource_type, table.c.param == p.code)
        return r.c.pk.not_in(sub) if missing else r.c.pk.in_(sub)

    # --- per type ------------------------------------------------------------------------------

    def _value_cond(self, t: FromClause, p: SearchParam, f: Filter, raw: str) -> ColumnElement[bool]:
        kind = p.type
        if kind == "string":
            return self._string(t, f.modifier, unescape(raw))
        if kind == "token":
            return self._token(t, f.modifier, raw, p)
        if kind == "reference":
            return self._reference(t, p, f, raw)
        if kind == "date":
            return self._date_cond(t.c.low, t.c.high, raw)
        if kind == "number":
            return self._number(t.c.value, raw)
        if kind == "quantity":
            return self._quantity(t, raw)
        if kind == "uri":
            return self._uri(t, f.modifier, unescape(raw))
        if kind == "composite":
            return self._composite(t, p, raw)
        if kind == "text":
            return self._text(t, raw)
        raise YilianError(Category.UNSUPPORTED, f"search parameter type {kind} is not supported")

    def _string(self, t: FromClause, modifier: str | None, value: str) -> ColumnElement[bool]:
        if modifier == "exact":
            return t.c.value_exact == value  # type: ignore[no-any-return]
        norm = fold(value)
        if modifier == "contains":
            return t.c.value_norm.like(f"%{_like_escape(norm)}%", escape="\\")  # type: ignore[no-any-return]
        return starts_with(t.c.value_norm, norm)

    def _token(self, t: FromClause, modifier: str | None, raw: str, p: SearchParam) -> ColumnElement[bool]:
        if modifier == "text":
            norm = fold(unescape(raw))
            return t.c.text_norm.like(f"{_like_escape(norm)}%", escape="\\")  # type: ignore[no-any-return]
        if modifier in ("in", "not-in", "above", "below"):
            raise YilianError(
                Category.UNSUPPORTED,
                f":{modifier} on token parameter {p.code!r} needs terminology services, which this server does not provide",
                issues=[Issue(f":{modifier} is not supported on token parameters", code="not-supported")],
            )
        if modifier == "of-type":
            parts = split_unescaped(raw, "|")
            if len(parts) != 3 or not all(parts):
                raise _bad(f"{p.code}:of-type needs system|code|value, not {raw!r}")
            ts, tc, value = (unescape(x) for x in parts)
            self._looked_up(None, value, modifier)
            return and_(t.c.type_system == ts, t.c.type_code == tc, t.c.code.in_(self._any_form(value)))
        parts = split_unescaped(raw, "|")
        if len(parts) == 1:
            value = unescape(parts[0])
            self._looked_up(None, value, modifier)
            return t.c.code.in_(self._any_form(value))  # type: ignore[no-any-return]
        if len(parts) != 2:
            raise _bad(f"token {raw!r} has more than one '|'")
        system, code = unescape(parts[0]), unescape(parts[1])
        if system == "":
            return and_(t.c.system.is_(None), t.c.code == code)
        if code == "":
            return t.c.system == system  # type: ignore[no-any-return]
        self._looked_up(system, code, modifier)
        return and_(t.c.system == system, t.c.code == self._stored_form(system, code))

    def _looked_up(self, system: str | None, value: str, modifier: str | None) -> None:
        # ":not" finds everyone but the holder: it resolves nobody by the number.
        if self.on_lookup is not None and modifier != "not":
            self.on_lookup(system, value)

    def _stored_form(self, system: str, value: str) -> str:
        """How the index holds a value of this system: its blind token if the value is sensitive."""
        if self.keyring is None:
            return value
        return sealing.blind_token(system, value, self.keyring) or value

    def _any_form(self, value: str) -> list[str]:
        """A value searched without a system may be stored plain or blinded (any sensitive kind)."""
        if self.keyring is None:
            return [value]
        return [value, *sealing.blind_candidates(value, self.keyring)]

    def _reference_target(
        self, raw: str, p: SearchParam, f: Filter
    ) -> tuple[str | None, str | None, str | None]:
        """(type, id, url) a reference search value names."""
        value = unescape(raw)
        if self.base_url and value.startswith(self.base_url + "/"):
            value = value[len(self.base_url) + 1 :]
        if "/" in value and not value.startswith(("http://", "https://", "urn:")):
            parts = value.split("/")
            if len(parts) >= 2 and model().is_resource_type(parts[0]):
                rtype, rid = parts[0], parts[1]
                if f.target_type and f.target_type != rtype:
                    raise _bad(
                        f"{f.name}={raw}: the type modifier says {f.target_type} but the value names {rtype}"
                    )
                return rtype, rid, None
        if value.startswith(("http://", "https://", "urn:")):
            return None, None, value
        return f.target_type, value, None

    def _reference(self, t: FromClause, p: SearchParam, f: Filter, raw: str) -> ColumnElement[bool]:
        if f.modifier == "identifier":
            parts = split_unescaped(raw, "|")
            if len(parts) == 1:
                self._looked_up(None, unescape(parts[0]), None)
                return t.c.identifier_value.in_(self._any_form(unescape(parts[0])))  # type: ignore[no-any-return]
            system, value = unescape(parts[0]), unescape(parts[1])
            if value:
                self._looked_up(system or None, value, None)
            conds = [t.c.identifier_value == self._stored_form(system, value)] if value else []
            if system:
                conds.append(t.c.identifier_system == system)
            return and_(*conds) if conds else true()
        rtype, rid, url = self._reference_target(raw, p, f)
        if url is not None:
            base, _, version = url.partition("|")
            cond = t.c.url == base
            return and_(cond, t.c.target_version == version) if version else cond  # type: ignore[no-any-return]
        conds2: list[ColumnElement[bool]] = [t.c.target_id == rid]
        if rtype:
            conds2.append(t.c.target_type == rtype)
        return and_(*conds2)

    def _date_cond(self, low_col: Any, high_col: Any, raw: str) -> ColumnElement[bool]:
        prefix, text = split_prefix(raw)
        r = date_range(_SPACED_OFFSET.sub(r"\1+\2", text))
        if r is None:
            raise _bad(
                f"{text!r} is not a valid date/time (use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.sss](Z|±hh:mm))"
            )
        ps, pe = r
        lo, hi = low_col, high_col
        # Every stored range has low <= high, so the bounds added below ("low <= pe" for eq and
        # le, "high >= ps" for ge) change no answer: they give the (param, low) and (param, high)
        # indexes a range to scan instead of every value on one side of the date.
        if prefix == "eq":
            return and_(lo >= ps, lo <= pe, hi <= pe)
        if prefix == "ne":
            return or_(lo < ps, hi > pe)
        if prefix == "gt":
            return hi > pe  # type: ignore[no-any-return]
        if prefix == "lt":
            return lo < ps  # type: ignore[no-any-return]
        if prefix == "ge":
            return and_(hi >= ps, or_(hi > pe, and_(lo >= ps, hi <= pe)))
        if prefix == "le":
            return and_(lo <= pe, or_(lo < ps, and_(lo >= ps, hi <= pe)))
        if prefix == "sa":
            return lo > pe  # type: ignore[no-any-return]
        if prefix == "eb":
            return hi < ps  # type: ignore[no-any-return]
        # ap: overlaps the value widened by 10% of its distance from now (at least a day).
        now = instant_to_us(clock.now())
        slack = max(abs(now - ps) // 10, 86_400 * 1_000_000)
        return and_(lo <= min(pe + slack, MAX_US), hi >= max(ps - slack, MIN_US))

    def _number(self, col: Any, raw: str) -> ColumnElement[bool]:
        prefix, text = split_prefix(raw)
        value, low, high = parse_number(text)
        # Values are stored as binary floats, so the range is closed: a value whose decimal
        # lies just inside the upper bound may round to the bound itself.
        if prefix == "eq":
            return and_(col >= low, col <= high)
        if prefix == "ne":
            return or_(col < low, col > high)
        if prefix in ("gt", "sa"):
            return col > value  # type: ignore[no-any-return]
        if prefix in ("lt", "eb"):
            return col < value  # type: ignore[no-any-return]
        if prefix == "ge":
            return col >= value  # type: ignore[no-any-return]
        if prefix == "le":
            return col <= value  # type: ignore[no-any-return]
        slack = abs(value) * 0.1
        return and_(col >= value - slack, col <= value + slack)

    def _quantity(self, t: FromClause, raw: str) -> ColumnElement[bool]:
        parts = split_unescaped(raw, "|")
        if len(parts) not in (1, 3):
            raise _bad(f"quantity {raw!r} must be [prefix]number or [prefix]number|system|code")
        cond = self._number(t.c.value, parts[0])
        if len(parts) == 3:
            cond = and_(
                cond, *_unit_conds(unescape(parts[1]), unescape(parts[2]), t.c.system, t.c.code, t.c.unit)
            )
        return cond

    def _uri(self, t: FromClause, modifier: str | None, value: str) -> ColumnElement[bool]:
        if modifier == "below":
            # Below on path segments: http://hl7.org/fhir is above http://hl7.org/fhir/ValueSet/x
            # but not above http://hl7.org/fhirx.
            stem = value.rstrip("/")
            return or_(
                t.c.uri == value, t.c.uri == stem, t.c.uri.like(f"{_like_escape(stem)}/%", escape="\\")
            )
        if modifier == "above":
            # The stored URIs that are path prefixes of the value: a short IN list the index serves,
            # where "value LIKE uri || '%'" would scan every row and treat '_' in URIs as a wildcard.
            return t.c.uri.in_(_path_prefixes(value))
        return t.c.uri == value  # type: ignore[no-any-return]

    def _text(self, t: FromClause, raw: str) -> ColumnElement[bool]:
        words = fold(unescape(raw)).split()
        if not words:
            raise _bad("text search needs at least one word")
        return and_(*(t.c.content_norm.like(f"%{_like_escape(w)}%", escape="\\") for w in words))

    def _composite(self, t: FromClause, p: SearchParam, raw: str) -> ColumnElement[bool]:
        parts = split_unescaped(raw, "$")
        if len(parts) != len(p.components):
            raise _bad(f"{p.code} takes {len(p.components)} components separated by '$', got {raw!r}")
        conds: list[ColumnElement[bool]] = []
        first = p.components[0].param_type
        conds.extend(self._key_component(first, parts[0], t.c.c1_system, t.c.c1_code))
        for idx, (comp, value) in enumerate(zip(p.components[1:], parts[1:], strict=True), start=2):
            if comp.param_type in ("token", "reference", "string", "uri"):
                conds.extend(self._key_component(comp.param_type, value, t.c.c2_system, t.c.c2_code))
            elif comp.param_type == "quantity":
                q = split_unescaped(value, "|")
                if len(q) not in (1, 3):
                    raise _bad(
                        f"{p.code}: quantity component {value!r} must be [prefix]number or [prefix]number|system|code"
                    )
                conds.append(self._number(t.c.c2_num, q[0]))
                if len(q) == 3:
                    # c2_code holds the unit code (or the unit text when there is no code).
                    conds.extend(
                        _unit_conds(unescape(q[1]), unescape(q[2]), t.c.c2_system, t.c.c2_code, t.c.c2_unit)
                    )
            elif comp.param_type == "number":
                conds.append(self._number(t.c.c2_num if idx == 2 else t.c.c3_num, value))
            elif comp.param_type == "date":
                conds.append(self._date_cond(t.c.c2_dlow, t.c.c2_dhigh, value))
        return and_(*conds)

    def _key_component(
        self, kind: str, value: str, system_col: Any, code_col: Any
    ) -> list[ColumnElement[bool]]:
        """A composite component stored as (system, code): token, reference (Type/id), string, uri."""
        if kind == "token":
            tk = split_unescaped(value, "|")
            if len(tk) == 1:
                return [code_col == unescape(tk[0])]
            out: list[ColumnElement[bool]] = []
            if tk[0]:
                out.append(system_col == unescape(tk[0]))
            if tk[1]:
                out.append(code_col == unescape(tk[1]))
            return out
        if kind == "string":
            return [code_col.like(f"{_like_escape(fold(unescape(value)))}%", escape="\\")]
        if kind == "reference":
            ref = unescape(value)
            if self.base_url and ref.startswith(self.base_url + "/"):
                ref = ref[len(self.base_url) + 1 :]
            if "/" in ref:
                return [code_col == ref]
            return [code_col.like(f"%/{_like_escape(ref)}", escape="\\")]
        return [code_col == unescape(value)]

    # --- chains and reverse chains -------------------------------------------------------------

    def _chain_rows(self, resource_type: str, f: Filter, depth: int) -> tuple[FromClause, Any, list[Any]]:
        p = f.param
        assert p is not None
        rest = f.chain[0][0]
        chained_code = rest.split(".", 1)[0].split(":", 1)[0]
        targets = [f.target_type] if f.target_type else list(p.targets)
        if not targets:
            targets = sorted(model().resource_types)
        usable = [t for t in targets if chained_code in params_for(t)]
        if not usable:
            raise _bad(
                f"cannot chain {f.name!r}: none of the types {p.code!r} refers to "
                f"({', '.join(targets)}) has a search parameter {chained_code!r}"
            )
        kinds = {params_for(t)[chained_code].type for t in usable}
        if len(kinds) > 1:
            # The same code means different things on the candidate types (a token here, a uri
            # there): the spec asks servers to refuse rather than guess which was meant.
            raise _bad(
                f"ambiguous chain {f.name!r}: {chained_code!r} is a {' / '.join(sorted(kinds))} parameter "
                f"depending on the type {p.code!r} refers to; name the type, e.g. {p.code}:{usable[0]}.{rest}"
            )
        # Only into types the caller may search: a chain that can lead nowhere else is refused.
        searchable = [t for t in usable if self.policy.allows(SEARCH, t)]
        if not searchable:
            require(self.policy, SEARCH, usable[0])
        ir = idx_reference.alias()
        per_target: list[ColumnElement[bool]] = []
        for target in searchable:
            inner = resolve_filter(target, rest, f.values)
            if inner is not None:
                ids = self._ids_matching(target, inner, depth + 1)
                per_target.append(and_(ir.c.target_type == target, ir.c.target_id.in_(ids)))
        return (
            ir,
            ir.c.resource_pk,
            [ir.c.res_type == resource_type, ir.c.param == p.code, or_(false(), *per_target)],
        )

    def _ids_matching(self, resource_type: str, f: Filter, depth: int) -> Select[Any]:
        """The ids of the current, visible resources of ``resource_type`` that ``f`` matches."""
        # A chain searches the type it leads to: the caller's scopes must cover searching it, or
        # whether results come back would tell what it may not ask (a birth date, a diagnosis).
        require(self.policy, SEARCH, resource_type)
        r2 = resource.alias()
        own = [r2.c.res_type == resource_type, r2.c.deleted.is_(False), self._visible(r2)]
        rows = self._rows(resource_type, f, depth)
        if rows is None:
            return select(r2.c.res_id).where(*own, self.condition(r2, resource_type, f, depth))
        source, pk, conds = rows
        return select(r2.c.res_id).select_from(source).join(r2, r2.c.pk == pk).where(*conds, *own)

    def _has(self, r: FromClause, resource_type: str, f: Filter, depth: int) -> ColumnElement[bool]:
        assert f.has is not None
        has_type, ref_param, rest = f.has
        inner = resolve_filter(has_type, rest, f.values)
        if inner is None:
            raise _bad(f"_has: {has_type} has no search parameter {rest.split(':')[0]!r}")
        require(self.policy, SEARCH, has_type)  # as a chain: _has searches the referring type
        ir = idx_reference.alias()
        r2 = resource.alias()
        own = [
            ir.c.res_type == has_type,
            ir.c.param == ref_param,
            ir.c.target_type == resource_type,
            r2.c.deleted.is_(False),
            self._visible(r2),
        ]
        rows = self._rows(has_type, inner, depth + 1)
        if rows is None:
            sub = (
                select(ir.c.target_id)
                .select_from(ir)
                .join(r2, r2.c.pk == ir.c.resource_pk)
                .where(*own, self.condition(r2, has_type, inner, depth + 1))
            )
        else:
            # The referring resources' own index rows drive: rows -> resource -> its references.
            source, pk, conds = rows
            sub = (
                select(ir.c.target_id)
                .select_from(source)
                .join(r2, r2.c.pk == pk)
                .join(ir, ir.c.resource_pk == r2.c.pk)
                .where(*conds, *own)
            )
        return r.c.res_id.in_(sub)


@dataclass(frozen=True)
class Lookup:
    """Index rows a filter asks for: the table (or join) they are in, its resource key, conditions."""

    source: FromClause
    pk: Any
    conds: list[Any]

    def contains(self, key: Any) -> ColumnElement[bool]:
        """``key IN`` the resources these rows belong to."""
        return key.in_(select(self.pk).select_from(self.source).where(*self.conds))  # type: ignore[no-any-return]

    def finds(self, key: Any) -> ColumnElement[bool]:
        """EXISTS a row of the resource ``key``, read through the ``resource_pk`` index."""
        probe = select(literal(1)).select_from(self.source).where(self.pk == key, *self.conds)
        return exists(_by_resource(probe, self.source))

    def estimate(self, cap: int) -> Any:
        """How many rows match, counted up to ``cap`` (a bounded scan of the lookup's index range)."""
        first = select(self.pk).select_from(self.source).where(*self.conds).limit(cap).subquery()
        return select(func.count()).select_from(first).scalar_subquery()


@functools.cache
def _index_alias(kind: str, n: int) -> FromClause:
    """The ``n``-th alias of the index table of ``kind`` in a query (``idx_token_0``, …)."""
    table = INDEX_TABLES[kind]
    return table.alias(f"{table.name}_{n}")


def _by_resource(probe: Select[Any], source: FromClause) -> Select[Any]:
    """``probe`` reading its index table by ``resource_pk`` (SQLite picks the value index otherwise)."""
    table = source.element if isinstance(source, Alias) else source
    if isinstance(table, Table) and table.name in INDEXES_BY_RESOURCE:
        return with_index(probe, source, INDEXES_BY_RESOURCE[table.name])
    return probe


def order_by_selectivity(conn: Connection, lookups: list[Lookup], cap: int = ESTIMATE_CAP) -> list[Lookup]:
    """``lookups`` with the fewest matching rows first (ties keep the request's order).

    Each estimate is a count of at most ``cap`` rows from the lookup's own index range, all of
    them in one statement, a fraction of a millisecond: cheaper and surer than the planners' statistics, which treat
    (type, parameter, value) as independent and take ``gender=female`` for a rare value.
    """
    if len(lookups) < 2:
        return lookups
    sizes = list(conn.execute(select(*(lk.estimate(cap) for lk in lookups))).one())
    return [
        lk for _, _, lk in sorted(zip(sizes, range(len(lookups)), lookups, strict=True), key=lambda t: t[:2])
    ]


def _unit_conds(
    system: str, code: str, system_col: Any, code_col: Any, unit_col: Any
) -> list[ColumnElement[bool]]:
    """``value|system|code``: with a system the code is a coded unit; ``value||unit`` matches code or unit text."""
    conds: list[ColumnElement[bool]] = []
    if system:
        conds.append(system_col == system)
        if code:
            conds.append(code_col == code)
    elif code:
        conds.append(or_(code_col == code, unit_col == code))
    return conds


def _path_prefixes(uri: str) -> list[str]:
    """``http://a.org/fhir/ValueSet/x`` -> itself and ``http://a.org/fhir/ValueSet``, ``…/fhir``, ``http://a.org``
    (each also with a trailing slash). Only the path is cut: never the scheme or the host."""
    start = uri.find("://")
    first_cut = uri.find("/", start + 3) if start >= 0 else -1
    out = {uri}
    if first_cut < 0:
        return sorted(out)
    cut = first_cut
    while cut >= 0:
        out.update((uri[:cut], uri[: cut + 1]))
        cut = uri.find("/", cut + 1)
    return sorted(out)


# --- sorting ------------------------------------------------------------------------------------

SORT_COLUMNS: dict[str, tuple[str, str]] = {
    # kind -> (column for ascending, column for descending)
    "string": ("value_norm", "value_norm"),
    "token": ("code", "code"),
    "reference": ("target_id", "target_id"),
    "date": ("low", "high"),
    "number": ("value", "value"),
    "quantity": ("value", "value"),
    "uri": ("uri", "uri"),
}


TEXT_SORTS = frozenset({"string", "token", "reference", "uri"})


def sort_expression(r: FromClause, p: SearchParam, descending: bool, *, bytewise: bool = False) -> Any:
    """The value a resource sorts by for ``p``: the smallest value ascending, the largest descending.

    ``bytewise`` (PostgreSQL) compares text in code-point order, as SQLite always does: with the
    database's locale collation (en_US, zh_CN…) "de la cruz" and "dean" would swap places and the
    two backends would page through the same data in different orders.
    """
    from sqlalchemy import func

    if p.code == "_id":
        return r.c.res_id.collate("C") if bytewise else r.c.res_id
    if p.code == "_lastUpdated":
        return r.c.last_updated
    if p.type not in SORT_COLUMNS:
        raise _bad(f"cannot sort by {p.code!r} ({p.type} parameter)")
    table = INDEX_TABLES[p.type]
    col: Any = table.c[SORT_COLUMNS[p.type][1 if descending else 0]]
    text = bytewise and p.type in TEXT_SORTS
    if text:
        col = col.collate("C")
    agg = func.max(col) if descending else func.min(col)
    expr = select(agg).where(table.c.resource_pk == r.c.pk, table.c.param == p.code).scalar_subquery()
    return expr.collate("C") if text else expr


def base_select(r: FromClause, resource_types: list[str] | None) -> Select[Any]:
    stmt = select(r.c.pk).where(r.c.deleted.is_(False))
    if resource_types is not None:
        if len(resource_types) == 1:
            stmt = stmt.where(r.c.res_type == resource_types[0])
        else:
            stmt = stmt.where(r.c.res_type.in_(resource_types))
    return stmt


__all__ = ["Compiler", "Lookup", "base_select", "order_by_selectivity", "sort_expression"]
