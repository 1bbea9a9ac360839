"""Parsing the search request: names, modifiers, prefixes and the result parameters.

Turns ``[(name, value), …]`` from a query string or a ``_search`` form into a :class:`SearchRequest`:
the filters to apply (each a parameter with its modifier, chain and OR-ed values) and the
result controls (``_sort``, ``_count``, ``_include``…). Unknown parameters are ignored (and
reported) unless the client asked for strict handling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from yilian.fhir.model import model
from yilian.fhir.search.registry import MODIFIERS, PREFIXES, SearchParam, param, params_for
from yilian.kernel.errors import Category, Issue, YilianError, invalid

RESULT_PARAMS = frozenset(
    {
        "_count",
        "_sort",
        "_total",
        "_summary",
        "_elements",
        "_include",
        "_revinclude",
        "_cursor",
        "_format",
        "_pretty",
        "_contained",
        "_containedType",
        "_type",
        "_since",
        "_at",
        "_page",
        "_offset",
    }
)
MAX_COUNT = 1000
DEFAULT_COUNT = 50


@dataclass
class Filter:
    """One search parameter occurrence: ``name[:modifier]=v1,v2`` (values OR-ed)."""

    name: str  # as given, e.g. "subject:Patient.name"
    param: SearchParam | None  # None for _has
    modifier: str | None
    values: list[str]
    chain: list[tuple[str, str | None]] = field(default_factory=list)  # [(param code, type or None)]
    target_type: str | None = None  # reference type modifier / chain type
    has: tuple[str, str, str] | None = None  # (_has type, reference param, remaining name)


@dataclass(frozen=True)
class Include:
    source_type: str  # "*" for any
    param: str  # "*" for all reference params
    target_type: str | None
    iterate: bool
    reverse: bool


@dataclass
class SearchRequest:
    resource_types: list[str] | None  # None = every type (system search without _type)
    filters: list[Filter] = field(default_factory=list)
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (param code, descending)
    count: int = DEFAULT_COUNT
    max_count: int = MAX_COUNT  # a larger _count is capped to this
    total: str = "accurate"  # none | estimate | accurate
    summary: str | None = None  # true | text | data | count | false
    elements: list[str] | None = None
    includes: list[Include] = field(default_factory=list)
    cursor: str | None = None
    ignored: list[str] = field(default_factory=list)
    used: list[tuple[str, str]] = field(
        default_factory=list
    )  # the parameters that took effect, for self links


def split_values(value: str) -> list[str]:
    """Split on commas not escaped with a backslash (``a\\,b`` is one value)."""
    out: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value) and value[i + 1] in ",$|\\":
            cur.append("\\" + value[i + 1])
            i += 2
            continue
        if ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    out.append("".join(cur))
    return out


def unescape(value: str) -> str:
    return value.replace("\\,", ",").replace("\\$", "$").replace("\\|", "|").replace("\\\\", "\\")


def split_unescaped(value: str, sep: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\" and i + 1 < len(value):
            cur.append(value[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def split_prefix(value: str) -> tuple[str, str]:
    if len(value) >= 2 and value[:2] in PREFIXES and (len(value) == 2 or not value[2].isalpha()):
        return value[:2], value[2:]
    return "eq", value


def _bad(message: str) -> YilianError:
    return YilianError(Category.INVALID, message, issues=[Issue(message, code="processing")])


def resolve_filter(resource_type: str, name: str, values: list[str]) -> Filter | None:
    """The filter for ``name`` on ``resource_type``, or None if the parameter is unknown there."""
    if name.startswith("_has:"):
        parts = name.split(":", 3)
        if len(parts) != 4 or not parts[1] or not parts[2] or not parts[3]:
            raise _bad(f"malformed _has parameter {name!r}: expected _has:Type:reference-param:search-param")
        has_type, ref_param, rest = parts[1], parts[2], parts[3]
        if not model().is_resource_type(has_type):
            raise _bad(f"_has names unknown resource type {has_type!r}")
        rp = param(has_type, ref_param)
        if rp is None or rp.type != "reference":
            raise _bad(f"_has: {has_type} has no reference search parameter {ref_param!r}")
        return Filter(name=name, param=None, modifier=None, values=values, has=(has_type, ref_param, rest))
    head, dot, chain_rest = name.partition(".")
    code, _, modifier = head.partition(":")
    p = param(resource_type, code)
    if p is None:
        return None
    f = Filter(name=name, param=p, modifier=modifier or None, values=values)
    if modifier and p.type == "reference" and modifier not in MODIFIERS["reference"]:
        if not model().is_resource_type(modifier):
            raise _bad(f"unknown modifier or resource type :{modifier} on reference parameter {code!r}")
        if p.targets and modifier not in p.targets:
            raise _bad(f"{resource_type}.{code} cannot refer to {modifier} (allowed: {', '.join(p.targets)})")
        f.target_type = modifier
        f.modifier = None
    elif modifier and modifier not in MODIFIERS.get(p.type, frozenset()):
        raise YilianError(
            Category.INVALID,
            f"modifier :{modifier} is not supported on {p.type} parameter {code!r}",
            issues=[
                Issue(
                    f"modifier :{modifier} is not supported on {p.type} parameter {code!r}",
                    code="not-supported",
                )
            ],
        )
    if dot:
        if p.type != "reference":
            raise _bad(f"cannot chain through {code!r}: it is a {p.type} parameter, not a reference")
        if f.modifier:
            raise _bad(
                f"{name!r}: a chained reference takes a resource type modifier only, not :{f.modifier}"
            )
        f.chain = [(chain_rest, None)]
    return f


def parse(
    resource_type: str | None,
    pairs: list[tuple[str, str]],
    *,
    strict: bool = False,
    default_count: int = DEFAULT_COUNT,
    max_count: int = MAX_COUNT,
) -> SearchRequest:
    """``default_count`` and ``max_count`` are the deployment's page sizes (FhirSettings)."""
    types: list[str] | None = [resource_type] if resource_type else None
    req = SearchRequest(resource_types=types, count=min(default_count, max_count), max_count=max_count)
    # _type first: it scopes every other parameter in a system-level search.
    if resource_type is None:
        for name, value in pairs:
            if name == "_type":
                names = [t.strip() for t in value.split(",") if t.strip()]
                for t in names:
                    if not model().is_resource_type(t):
                        raise _bad(f"_type names unknown resource type {t!r}")
                req.resource_types = sorted(set((req.resource_types or []) + names))
                req.used.append((name, value))
    for name, value in pairs:
        if name in RESULT_PARAMS:
            _result_param(req, name, value)
            continue
        if name.startswith("_include") or name.startswith("_revinclude"):
            _result_param(req, name, value)
            continue
        values = split_values(value)
        scope = req.resource_types or sorted(model().resource_types)
        resolved: Filter | None = None
        for t in scope:
            f = resolve_filter(t, name, values)
            if f is None:
                if req.resource_types is not None and len(scope) > 1:
                    raise _bad(
                        f"search parameter {name!r} is not defined for {t} (all types in _type must support it)"
                    )
                resolved = None
                break
            resolved = f
        if resolved is None:
            message = f"unknown search parameter {name!r} for {resource_type or 'system search'}"
            if strict:
                raise YilianError(Category.INVALID, message, issues=[Issue(message, code="not-supported")])
            req.ignored.append(name)
            continue
        if resolved.modifier == "missing" and any(v not in ("true", "false") for v in values):
            raise _bad(f"{name}: :missing takes true or false")
        if not any(values) and resolved.modifier != "missing":
            raise _bad(f"search parameter {name!r} has an empty value")
        req.filters.append(resolved)
        req.used.append((name, value))
    return req


def _result_param(req: SearchRequest, name: str, value: str) -> None:
    if name == "_count":
        try:
            n = int(value)
        except ValueError:
            raise _bad(f"_count must be a whole number, not {value!r}") from None
        if n < 0:
            raise _bad("_count must not be negative")
        req.count = min(n, req.max_count)
        req.used.append((name, str(req.count)))
    elif name == "_sort":
        for key in value.split(","):
            key = key.strip()
            if not key:
                continue
            desc = key.startswith("-")
            code = key[1:] if desc else key
            for t in req.resource_types or []:
                if param(t, code) is None:
                    raise _bad(f"cannot sort by {code!r}: not a search parameter of {t}")
            req.sort.append((code, desc))
        req.used.append((name, value))
    elif name == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise _bad("_total must be none, estimate or accurate")
        req.total = value
        req.used.append((name, value))
    elif name == "_summary":
        if value not in ("true", "text", "data", "count", "false"):
            raise _bad("_summary must be true, text, data, count or false")
        req.summary = value
        req.used.append((name, value))
    elif name == "_elements":
        req.elements = [e.strip() for e in value.split(",") if e.strip()]
        req.used.append((name, value))
    elif name.startswith("_include") or name.startswith("_revinclude"):
        base, _, mod = name.partition(":")
        if mod not in ("", "iterate", "recurse"):
            raise _bad(f"unknown modifier :{mod} on {base}")
        reverse = base == "_revinclude"
        if value == "*":
            req.includes.append(Include("*", "*", None, bool(mod), reverse))
        else:
            parts = value.split(":")
            if len(parts) not in (2, 3):
                raise _bad(f"{base} must be Type:parameter[:targetType], not {value!r}")
            src = parts[0]
            if not model().is_resource_type(src):
                raise _bad(f"{base} names unknown resource type {src!r}")
            if parts[1] != "*":
                p = param(src, parts[1])
                if p is None or p.type != "reference":
                    raise _bad(f"{base}: {src} has no reference search parameter {parts[1]!r}")
            tgt = parts[2] if len(parts) == 3 else None
            if tgt and not model().is_resource_type(tgt):
                raise _bad(f"{base} names unknown target type {tgt!r}")
            req.includes.append(Include(src, parts[1], tgt, bool(mod), reverse))
        req.used.append((name, value))
    elif name == "_cursor":
        req.cursor = value
        req.used.append((name, value))  # the page's self link names the page
    elif name in ("_format", "_pretty", "_type"):
        pass
    elif name in ("_contained", "_containedType"):
        if value not in ("false", "container"):
            raise YilianError(Category.UNSUPPORTED, f"{name}={value} is not supported")
    else:
        raise YilianError(Category.UNSUPPORTED, f"{name} is not supported in search")


def known_params(resource_type: str) -> list[SearchParam]:
    return list(params_for(resource_type).values())


__all__ = [
    "DEFAULT_COUNT",
    "Filter",
    "Include",
    "SearchRequest",
    "invalid",
    "parse",
    "split_prefix",
    "split_unescaped",
    "unescape",
]
