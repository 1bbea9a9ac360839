"""One CSV row to one FHIR resource, as a table's plan says; pure (no database).

References to other tables are resolved through a function the runner gives (source key →
resource id), so the transform can be tested without storage and the runner decides where ids
come from (this run's writes, or the database for rows loaded by an earlier run).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from yilian.exchange.migrate.plan import ElementPlan, GroupPlan, RulePlan, Step, TablePlan
from yilian.exchange.migrate.values import convert

Resolver = Callable[[str, str], str | None]  # (table, source key) -> resource id, None if unknown

KEY_SEPARATOR = "|"
_INDEX = re.compile(r"\[\d+\]")


class _Slots(dict[int, Any]):
    """A repeating element while it is built: positions as the mapping numbers them.

    Positions are compacted in order when the resource is finished, so that ``identifier[2]``
    filled while ``identifier[1]`` is empty (a patient with a passport but no driving licence)
    gives two identifiers, not a hole.
    """


@dataclass(frozen=True, slots=True)
class RowProblem:
    column: str  # the column(s) at fault; "" when it is the row as a whole
    reason: str


@dataclass
class Transformed:
    resource: dict[str, Any] | None  # None when the row is rejected
    problems: list[RowProblem] = field(default_factory=list)


def source_key(table: TablePlan, row: dict[str, str]) -> str | RowProblem:
    """The row's key: its key columns' values joined by ``|``. A composite key may have empty
    parts (an observation recorded outside a visit); a key with no value at all names nothing."""
    parts = [(row.get(column) or "").strip() for column in table.key_columns]
    if not any(parts):
        names = ", ".join(table.key_columns)
        return RowProblem(names, f"the key ({names}) is empty")
    return KEY_SEPARATOR.join(parts)


def transform(
    table: TablePlan, row: dict[str, str], key: str, *, resolve: Resolver, tz: dt.tzinfo
) -> Transformed:
    """The resource for ``row`` (with the source key as its last identifier), or why not."""
    doc: dict[str, Any] = {}
    problems: list[RowProblem] = []
    _apply(table.rules, row, doc, problems, resolve, tz)
    if problems:
        return Transformed(None, problems)
    resource: dict[str, Any] = {"resourceType": table.resource, **_finish(doc)}
    resource.setdefault("identifier", []).append({"system": table.identifier_system, "value": key})
    return Transformed(resource)


def _apply(
    rules: Iterable[RulePlan],
    row: dict[str, str],
    doc: dict[str, Any],
    problems: list[RowProblem],
    resolve: Resolver,
    tz: dt.tzinfo,
) -> None:
    for rule in rules:
        if isinstance(rule, GroupPlan):
            chosen = rule.elements if all(c.holds(row) for c in rule.when) else rule.otherwise
            _apply(chosen, row, doc, problems, resolve, tz)
            continue
        if rule.when and not all(c.holds(row) for c in rule.when):
            continue
        value = _value(rule, row, resolve, tz, problems)
        if value is not None:
            _set(doc, rule.steps, value)


def _columns_of(el: ElementPlan) -> str:
    if el.column:
        return el.column
    return ",".join(col for _t, col in el.template if col)


def _value(
    el: ElementPlan, row: dict[str, str], resolve: Resolver, tz: dt.tzinfo, problems: list[RowProblem]
) -> Any:
    if el.constant is not None:
        return el.constant
    column = _columns_of(el)
    if el.template:
        raw = "".join(text if col is None else (row.get(col) or "").strip() for text, col in el.template)
        if not any((row.get(col) or "").strip() for _t, col in el.template if col):
            raw = ""
    else:
        raw = (row.get(el.column or "") or "").strip()
    if el.reference is not None:
        if not raw:
            if el.required:
                problems.append(RowProblem(column, f"{column} is empty (a {el.target_type} is required)"))
            return None
        target = resolve(el.reference, raw)
        if target is None:
            problems.append(
                RowProblem(
                    column,
                    f"refers to {el.target_type} {raw!r} of table {el.reference}, which was not loaded "
                    f"(no such row, or the row was rejected)",
                )
            )
            return None
        return {"reference": f"{el.target_type}/{target}"}
    for pattern, replacement in el.replace:
        raw = pattern.sub(replacement, raw)
    raw = raw.strip()
    if not raw:
        if el.required:
            problems.append(RowProblem(column, f"{column} is empty ({el.path} is required)"))
        return None
    if el.value_map is not None:
        if raw in el.value_map:
            mapped = el.value_map[raw]
            if mapped is None:
                return None
            raw = mapped if isinstance(mapped, str) else _scalar_text(mapped)
        elif el.unmapped == "omit":
            return None
        elif el.unmapped == "reject":
            known = ", ".join(sorted(el.value_map)[:12])
            problems.append(RowProblem(column, f"{raw!r} is not in the value map for {el.path} ({known})"))
            return None
    try:
        return convert(raw, el.fhir_type, el.format, tz)
    except ValueError as exc:
        problems.append(RowProblem(column, f"{exc} ({el.path} is a {el.fhir_type})"))
        return None


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _set(doc: dict[str, Any], steps: tuple[Step, ...], value: Any) -> None:
    node: Any = doc
    last = len(steps) - 1
    for i, step in enumerate(steps):
        if step.index is None:
            if i == last:
                node[step.key] = value  # a later element of the mapping wins
                return
            node = node.setdefault(step.key, {})
        else:
            slots = node.setdefault(step.key, _Slots())
            if i == last:
                slots[step.index] = value
                return
            node = slots.setdefault(step.index, {})


def _finish(node: Any) -> Any:
    """Lists from positions, and nothing empty (an element whose parts were all blank goes)."""
    if isinstance(node, _Slots):
        items = [_finish(node[k]) for k in sorted(node)]
        return [x for x in items if x not in (None, {}, [])]
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            done = _finish(v)
            if done not in (None, {}, []):
                out[k] = done
        return out
    return node


def column_for(table: TablePlan, expression: str) -> str:
    """The column behind a FHIR path the server complained about (best effort, "" if none).

    ``Observation.valueQuantity.value`` → ``VALUE``: positions are ignored, since the finished
    resource has its lists compacted.
    """
    wanted = _INDEX.sub("", expression).removeprefix(f"{table.resource}.")
    best, best_len = "", -1
    for el in _elements(table.rules):
        path = _INDEX.sub("", el.path)
        if (wanted == path or wanted.startswith(path + ".") or path.startswith(wanted + ".")) and len(
            path
        ) > best_len:
            col = _columns_of(el)
            if col:
                best, best_len = col, len(path)
    return best


def _elements(rules: Iterable[RulePlan]) -> Iterable[ElementPlan]:
    for r in rules:
        if isinstance(r, GroupPlan):
            yield from _elements(r.elements)
            yield from _elements(r.otherwise)
        else:
            yield r
