"""Reading and compiling a mapping file into a :class:`Plan` the transform runs.

Everything that can be known before a row is read is checked here, and every problem is
reported at once with where it is in the file (``tables.encounters.elements[3].path``):
paths against the FHIR R4 model (unknown elements, a repeating element without an index,
a column aimed at a complex type), references (the table exists, its resource type is an
allowed target), date formats, regular expressions, and the load order, which follows the
references between tables (a cycle is an error).
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from yilian.exchange.migrate import model as m
from yilian.exchange.migrate import values
from yilian.fhir.model import model as fhir_model
from yilian.kernel.errors import Category, Issue, YilianError

_SEGMENT = re.compile(r"([A-Za-z][A-Za-z0-9_]*)(?:\[(\d+)\])?")
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


@dataclass(frozen=True, slots=True)
class Step:
    key: str
    index: int | None  # None: a single element; n: position n of a list


@dataclass(frozen=True, slots=True)
class Condition:
    column: str
    kind: str  # present | equals | in | matches | is
    arg: Any
    negate: bool

    def holds(self, row: dict[str, str]) -> bool:
        value = (row.get(self.column) or "").strip()
        ok: bool
        if self.kind == "present":
            ok = bool(value) == self.arg
        elif self.kind == "equals":
            ok = value == self.arg
        elif self.kind == "in":
            ok = value in self.arg
        elif self.kind == "matches":
            ok = bool(self.arg.fullmatch(value))
        elif self.arg == "number":
            ok = values.is_number(value)
        elif self.arg == "integer":
            ok = values.is_integer(value)
        else:
            ok = values.is_iso_date(value)
        return ok != self.negate


@dataclass(frozen=True, slots=True)
class ElementPlan:
    where: str  # its place in the mapping file, for messages
    path: str
    steps: tuple[Step, ...]
    fhir_type: str  # a primitive type, or "Reference"
    column: str | None = None
    constant: Any = None
    template: tuple[tuple[str, str | None], ...] = ()  # (literal text, column or None)
    reference: str | None = None  # target table
    target_type: str | None = None  # its resource type
    replace: tuple[tuple[re.Pattern[str], str], ...] = ()
    value_map: dict[str, Any] | None = None
    unmapped: str = "reject"
    format: str | None = None
    required: bool = False
    when: tuple[Condition, ...] = ()

    @property
    def columns(self) -> set[str]:
        out = {c.column for c in self.when}
        if self.column:
            out.add(self.column)
        out.update(col for _text, col in self.template if col)
        return out


@dataclass(frozen=True, slots=True)
class GroupPlan:
    where: str
    when: tuple[Condition, ...]
    elements: tuple[RulePlan, ...]
    otherwise: tuple[RulePlan, ...]


RulePlan = ElementPlan | GroupPlan


@dataclass(frozen=True)
class TablePlan:
    name: str
    resource: str
    file: str
    key_columns: tuple[str, ...]
    duplicates: str
    identifier_system: str
    encoding: str
    delimiter: str
    rules: tuple[RulePlan, ...]
    references: frozenset[str]  # tables this one refers to
    columns: frozenset[str]  # every column the table's rules and key read


@dataclass(frozen=True)
class Plan:
    source: str
    timezone: dt.tzinfo
    tables: tuple[TablePlan, ...]  # in load order: every table after those it refers to
    description: str | None = None
    origin: str = "<mapping>"


# --------------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """YAML 1.2-style booleans: only true/false. Codes such as ``Y``, ``N``, ``on`` or ``no``
    in a value map stay text (PyYAML's YAML 1.1 default would turn ``no`` into False)."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def shipped_mappings() -> list[str]:
    folder = resources.files("yilian.exchange") / "mappings"
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve(spec: str) -> Path:
    """A mapping file, or the bare name of one shipped with Yilian (``synthea``)."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.suffix.lower() not in (".yaml", ".yml") and "/" not in spec and "\\" not in spec:
        shipped = Path(str(resources.files("yilian.exchange") / "mappings" / f"{spec}.yaml"))
        if shipped.is_file():
            return shipped
        raise YilianError(
            Category.NOT_FOUND,
            f"there is no mapping file {spec} and no shipped mapping of that name "
            f"(shipped: {', '.join(shipped_mappings())})",
        )
    raise YilianError(Category.NOT_FOUND, f"there is no mapping file {spec}")


def load(spec: str | Path) -> Plan:
    """Read, check and compile a mapping file (a path, or a shipped mapping's name)."""
    path = resolve(str(spec))
    text = path.read_text(encoding="utf-8-sig")
    return compile_text(text, origin=str(path))


def compile_text(text: str, *, origin: str = "<mapping>") -> Plan:
    try:
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise YilianError(Category.INVALID, f"{origin}: not valid YAML{where}: {problem}") from None
    if not isinstance(raw, dict):
        raise YilianError(Category.INVALID, f"{origin}: a mapping file is a YAML mapping (source:, tables:)")
    try:
        parsed = m.MappingFile.model_validate(raw)
    except ValidationError as exc:
        issues = [Issue(f"{_loc(e['loc'])}: {_pydantic_message(e)}", (_loc(e["loc"]),)) for e in exc.errors()]
        raise _mapping_error(origin, issues) from None
    return compile_mapping(parsed, origin=origin)


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("element", "group"):
            continue  # pydantic's name for the branch of a union: not a key of the file
        else:
            out += f".{part}" if out else str(part)
    return out or "(top)"


def _pydantic_message(err: Any) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return "unknown key (see docs/migrate.md for the keys a mapping has)"
    return msg


def _mapping_error(origin: str, issues: list[Issue]) -> YilianError:
    first = issues[0].message
    more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
    return YilianError(Category.INVALID, f"{origin}: the mapping is wrong: {first}{more}", issues=issues)


# ------------------------------------------------------------------------------- compiling


@dataclass
class _Compiler:
    mapping: m.MappingFile
    issues: list[Issue] = field(default_factory=list)

    def fail(self, where: str, message: str) -> None:
        self.issues.append(Issue(f"{where}: {message}", (where,)))

    def table(self, name: str, table: m.Table) -> TablePlan | None:
        where = f"tables.{name}"
        fm = fhir_model()
        if not fm.is_resource_type(table.resource):
            close = difflib.get_close_matches(table.resource, sorted(fm.resource_types), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            self.fail(f"{where}.resource", f"{table.resource!r} is not a FHIR R4 resource type{hint}")
            return None
        ident = fm.property(table.resource, "identifier")
        if ident is None or not ident[0].repeating:
            self.fail(
                f"{where}.resource",
                f"{table.resource} has no repeating identifier to carry the source key",
            )
            return None
        system = (table.identifier_system or self.mapping.identifier_system).replace(
            "{source}", self.mapping.source
        )
        system = system.replace("{table}", name)
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S+", system):
            self.fail(f"{where}.identifier_system", f"{system!r} is not an absolute URI")
        rules = tuple(self.rules(table.resource, table.elements, f"{where}.elements"))
        refs = frozenset(_references(rules))
        columns = frozenset(table.key.columns) | frozenset().union(*(_columns(r) for r in rules))
        delimiter = table.delimiter or self.mapping.delimiter
        if len(delimiter) != 1:
            self.fail(f"{where}.delimiter", "a delimiter is one character")
        encoding = table.encoding or self.mapping.encoding
        try:
            "".encode(encoding)
        except LookupError:
            self.fail(f"{where}.encoding", f"unknown encoding {encoding!r}")
        return TablePlan(
            name=name,
            resource=table.resource,
            file=table.file or f"{name}.csv",
            key_columns=tuple(table.key.columns),
            duplicates=table.key.duplicates,
            identifier_system=system,
            encoding=encoding,
            delimiter=delimiter,
            rules=rules,
            references=refs,
            columns=columns,
        )

    def rules(self, resource: str, rules: Iterable[m.Element | m.Group], where: str) -> Iterable[RulePlan]:
        for i, rule in enumerate(rules):
            here = f"{where}[{i}]"
            if isinstance(rule, m.Group):
                yield GroupPlan(
                    here,
                    _conditions(rule.when),
                    tuple(self.rules(resource, rule.elements, f"{here}.elements")),
                    tuple(self.rules(resource, rule.otherwise, f"{here}.otherwise")),
                )
            else:
                plan = self.element(resource, rule, here)
                if plan is not None:
                    yield plan

    def element(self, resource: str, el: m.Element, where: str) -> ElementPlan | None:
        walked = self.path(resource, el.path, f"{where}.path")
        if walked is None:
            return None
        steps, fhir_type, targets = walked
        if steps[0].key in ("id", "meta", "resourceType"):
            self.fail(f"{where}.path", f"{steps[0].key} is the server's to set")
            return None
        target_type = None
        if el.reference is not None:
            if fhir_type != "Reference":
                self.fail(
                    f"{where}.path", f"{el.path} is a {fhir_type}; a reference fills a Reference element"
                )
                return None
            target = self.mapping.tables.get(el.reference)
            if target is None:
                self.fail(
                    f"{where}.reference",
                    f"there is no table {el.reference!r} in this mapping (tables: {', '.join(self.mapping.tables)})",
                )
                return None
            target_type = target.resource
            if targets and target_type not in targets and "Resource" not in targets:
                self.fail(
                    f"{where}.reference",
                    f"{resource}.{el.path} may refer to {', '.join(targets)}, not {target_type}",
                )
                return None
        elif fhir_type not in values.PRIMITIVES:
            parts = _properties(fhir_type)
            shown = ", ".join(p for p in parts if p not in ("id", "extension", "modifierExtension"))
            self.fail(
                f"{where}.path",
                f"{el.path} is a {fhir_type}: map its parts ({el.path}.{{{shown}}})"
                if fhir_type != "Reference"
                else f"{el.path} is a Reference: use `reference: <table>` with the key column",
            )
            return None
        fmt = el.format
        if fmt is not None:
            if fhir_type not in values.DATE_TYPES:
                self.fail(f"{where}.format", f"format is for dates and times; {el.path} is a {fhir_type}")
            elif (why := values.check_format(fmt)) is not None:
                self.fail(f"{where}.format", f"{fmt!r} is not a usable date format: {why}")
        constant = None
        if el.constant is not None:
            try:
                constant = values.convert(
                    _text(el.constant), fhir_type, fmt, values.parse_offset(self.mapping.timezone)
                )
            except ValueError as exc:
                self.fail(f"{where}.constant", f"not a {fhir_type}: {exc}")
        template: tuple[tuple[str, str | None], ...] = ()
        if el.template is not None:
            template = _template(el.template)
            if not any(col for _t, col in template):
                self.fail(f"{where}.template", "names no column ({COLUMN}); use constant for fixed text")
        return ElementPlan(
            where=where,
            path=el.path,
            steps=steps,
            fhir_type=fhir_type,
            column=el.column,
            constant=constant,
            template=template,
            reference=el.reference,
            target_type=target_type,
            replace=tuple((re.compile(r.pattern), r.with_) for r in el.replace),
            value_map=el.map,
            unmapped=el.unmapped,
            format=fmt,
            required=el.required,
            when=_conditions(el.when),
        )

    def path(
        self, resource: str, path: str, where: str
    ) -> tuple[tuple[Step, ...], str, tuple[str, ...]] | None:
        fm = fhir_model()
        steps: list[Step] = []
        type_name = resource
        targets: tuple[str, ...] = ()
        segments = path.split(".")
        for n, segment in enumerate(segments):
            found = _SEGMENT.fullmatch(segment)
            if found is None:
                self.fail(where, f"{path!r}: {segment!r} is not an element name (name or name[0])")
                return None
            name, index = found.group(1), found.group(2)
            if type_name in values.PRIMITIVES:
                self.fail(where, f"{path!r}: {'.'.join(segments[:n])} is a {type_name} and has no parts")
                return None
            prop = fm.property(type_name, name)
            if prop is None:
                known = _properties(type_name)
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.fail(where, f"{path!r}: {type_name} has no element {name!r}{hint}")
                return None
            spec, type_name = prop
            if spec.repeating and index is None:
                self.fail(where, f"{path!r}: {name} repeats, so say which one: {name}[0]")
                return None
            if not spec.repeating and index is not None:
                self.fail(where, f"{path!r}: {name} does not repeat; write it without [{index}]")
                return None
            steps.append(Step(name, int(index) if index is not None else None))
            targets = spec.targets
        return tuple(steps), type_name, targets


def _properties(type_name: str) -> list[str]:
    spec = fhir_model().structure(type_name)
    return sorted(spec.properties) if spec is not None else []


def _text(value: m.Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _template(text: str) -> tuple[tuple[str, str | None], ...]:
    parts: list[tuple[str, str | None]] = []
    pos = 0
    for found in _PLACEHOLDER.finditer(text):
        if found.start() > pos:
            parts.append((text[pos : found.start()], None))
        parts.append(("", found.group(1)))
        pos = found.end()
    if pos < len(text):
        parts.append((text[pos:], None))
    return tuple(parts)


def _conditions(when: m.When | None) -> tuple[Condition, ...]:
    if when is None:
        return ()
    tests = when if isinstance(when, list) else [when]
    out = []
    for t in tests:
        if t.present is not None:
            out.append(Condition(t.column, "present", t.present, t.not_))
        elif t.equals is not None:
            out.append(Condition(t.column, "equals", t.equals, t.not_))
        elif t.in_ is not None:
            out.append(Condition(t.column, "in", frozenset(t.in_), t.not_))
        elif t.matches is not None:
            out.append(Condition(t.column, "matches", re.compile(t.matches), t.not_))
        else:
            out.append(Condition(t.column, "is", t.is_, t.not_))
    return tuple(out)


def _references(rules: Iterable[RulePlan]) -> Iterable[str]:
    for r in rules:
        if isinstance(r, GroupPlan):
            yield from _references(r.elements)
            yield from _references(r.otherwise)
        elif r.reference is not None:
            yield r.reference


def _columns(rule: RulePlan) -> set[str]:
    if isinstance(rule, GroupPlan):
        out = {c.column for c in rule.when}
        for r in (*rule.elements, *rule.otherwise):
            out |= _columns(r)
        return out
    return rule.columns


def load_order(tables: dict[str, TablePlan]) -> tuple[list[str], list[str] | None]:
    """Tables after those they refer to, in file order otherwise; or the first cycle found."""
    order: list[str] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        if state.get(name) == 2:
            return None
        if state.get(name) == 1:
            return [*stack[stack.index(name) :], name]
        state[name] = 1
        stack.append(name)
        for ref in sorted(tables[name].references, key=list(tables).index):
            if ref in tables:
                cycle = visit(ref)
                if cycle is not None:
                    return cycle
        stack.pop()
        state[name] = 2
        order.append(name)
        return None

    for name in tables:
        cycle = visit(name)
        if cycle is not None:
            return order, cycle
    return order, None


def compile_mapping(mapping: m.MappingFile, *, origin: str = "<mapping>") -> Plan:
    c = _Compiler(mapping)
    compiled: dict[str, TablePlan] = {}
    for name, table in mapping.tables.items():
        plan = c.table(name, table)
        if plan is not None:
            compiled[name] = plan
    files: dict[str, str] = {}
    for plan in compiled.values():
        if plan.file in files:
            c.fail(f"tables.{plan.name}.file", f"{plan.file} is already the file of table {files[plan.file]}")
        files[plan.file] = plan.name
    order, cycle = load_order(compiled)
    if cycle is not None:
        c.fail(
            "tables",
            "the tables refer to each other in a cycle ("
            + " → ".join(cycle)
            + "): no load order puts every table after the ones it refers to",
        )
    if c.issues:
        raise _mapping_error(origin, c.issues)
    return Plan(
        source=mapping.source,
        timezone=values.parse_offset(mapping.timezone),
        tables=tuple(compiled[n] for n in order),
        description=mapping.description,
        origin=origin,
    )
