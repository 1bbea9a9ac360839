"""Python source for the structure validators, compiled once with ``exec``.

Dispatching each JSON property through a table to a closure costs a dictionary lookup
and a call per property; for the small data types that make up most of a resource
(Coding, Reference, Quantity, ...) that is most of the time spent. So each structure's
validator is generated as one function: a loop over the object's properties that finds
the property's branch (a chain of ``k == "system"`` tests, likeliest first, for a small
structure; one dict lookup and a binary search for a large one), each branch holding the
element's check inline: the primitive's ``fast`` expression, or the loop over an array
of data types. A small data type's own loop is pasted into its parent's branch instead
of being called (``CodeableConcept`` holds ``Coding``'s loop), to the depth
``_INLINE_DEPTH``. Properties outside the branches (``_name`` siblings, elements with
unusual cardinalities) go through a table of closures.

The generated code only decides "fine" or "look closer": every slow path, and so every
message, is an ordinary function bound into the validator's globals under a generated
name. Each validator has its own small globals dict; validators call each other by
name, and each is compiled at its first call (see :class:`Namespace`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from yilian.fhir.validation.context import StructValidator

# Up to this many properties a chain of key comparisons beats a lookup and a binary search.
_CHAIN = 8
# How deep data types are pasted into their parents: CodeableConcept into a resource,
# Coding into that.
_INLINE_DEPTH = 2
# A non-empty object; one holding only an id (no value, no children: ele-1) is caught
# by the structure's own id branch, so the common case costs no len().
_HAS_CONTENT = "{x}.__class__ is dict and {x}"


class Namespace:
    """Every validator by name: compiled at its first call, then called directly.

    Compiling every structure up front takes seconds (the pasted loops make the
    functions long), so a validator's source is compiled the first time it is called.
    Until then the places that call it (other validators' globals, the table of
    resource types) hold a stub that compiles it and puts the real function in their
    place.
    """

    def __init__(self) -> None:
        self.sources: dict[str, StructSource] = {}
        self.validators: dict[str, StructValidator] = {}
        self._holders: dict[str, list[tuple[dict[str, Any], str]]] = {}
        self._lock = threading.RLock()

    def add(self, source: StructSource) -> None:
        self.sources[source.function_name] = source

    def get(self, name: str) -> StructValidator:
        """The compiled validator ``name``, compiling it now if need be."""
        validator = self.validators.get(name)
        if validator is None:
            with self._lock:
                validator = self.validators.get(name)
                if validator is None:
                    validator = self.sources[name].compile(self)
                    self.validators[name] = validator
                    for holder, key in self._holders.pop(name, ()):
                        holder[key] = validator
        return validator

    def refer(self, name: str, holder: dict[str, Any], key: str) -> None:
        """Make ``holder[key]`` the validator ``name`` (or, until it is compiled, its stub)."""
        validator = self.validators.get(name)
        if validator is not None:
            holder[key] = validator
            return
        with self._lock:
            self._holders.setdefault(name, []).append((holder, key))
            holder[key] = self._stub(name)

    def _stub(self, name: str) -> StructValidator:
        def compile_then_validate(d: dict[str, Any], p: Any, ctx: Any) -> None:
            self.get(name)(d, p, ctx)

        return compile_then_validate


class _Binder:
    """The globals of one generated function: a name per object it uses."""

    def __init__(self) -> None:
        self.globals: dict[str, Any] = {"__builtins__": __builtins__}
        self.calls: set[str] = set()
        self._names: dict[int, str] = {}

    def __call__(self, obj: Any, hint: str) -> str:
        name = self._names.get(id(obj))
        if name is None:
            name = f"{hint}_{len(self._names)}"
            self._names[id(obj)] = name
            self.globals[name] = obj
        return name


@dataclass(frozen=True)
class _Names:
    """The variables of one loop: the object, its path expression, and the loop's own (suffixed)."""

    d: str
    p: str
    level: int

    def __getattr__(self, name: str) -> str:
        # k, x, y, i, m, dup, f, b: suffixed by nesting level so pasted loops do not clash.
        return name if self.level == 0 else f"{name}{self.level}"


@dataclass
class _Branch:
    key: str
    kind: str  # primitive | complex | call | pass
    bit: int = 0
    fast: str = ""
    slow: Any = None
    aux: Any = None
    repeats: bool = False
    seg: str = ""
    child: StructSource | None = None
    rest: Any = None
    then: list[tuple[Any, str]] = field(default_factory=list)
    shortcut: tuple[str, str, dict[str, Any]] | None = None


class StructSource:
    """What one structure's validator checks, rendered as a function or pasted into a parent."""

    def __init__(self, function_name: str) -> None:
        self.function_name = function_name
        self.branches: list[_Branch] = []
        self.uses_choices = False
        self._table: dict[str, Any] = {}
        self._unknown: Any = None
        self._fallback_bits: dict[str, int] | None = None
        self._required: list[tuple[str, ...]] = []
        self._missing: Any = None
        self._conflict: Any = None
        self._post: Any = None
        self._post_condition = "True"

    # -- what to check ------------------------------------------------------------------

    def primitive(
        self,
        key: str,
        fast: str,
        slow: Any,
        aux: Any,
        *,
        repeats: bool,
        bit: int = 0,
        shortcut: tuple[str, str, dict[str, Any]] | None = None,
    ) -> None:
        """``shortcut``: (condition, a parse that raises ValueError, its objects), tried before ``fast``."""
        self.uses_choices |= bool(bit)
        self.branches.append(
            _Branch(key, "primitive", bit, fast=fast, slow=slow, aux=aux, repeats=repeats, shortcut=shortcut)
        )

    def complex(
        self, key: str, seg: str, child: StructSource, slow: Any, rest: Any, *, repeats: bool, bit: int = 0
    ) -> None:
        """``child`` is the source of the element type's validator (pasted here or called)."""
        self.uses_choices |= bool(bit)
        self.branches.append(
            _Branch(key, "complex", bit, slow=slow, rest=rest, repeats=repeats, seg=seg, child=child)
        )

    def call(self, key: str, checker: Any, *, bit: int = 0) -> None:
        self.uses_choices |= bool(bit)
        self.branches.append(_Branch(key, "call", bit, slow=checker))

    def skip(self, key: str) -> None:
        self.branches.append(_Branch(key, "pass"))

    def then(self, key: str, extra: Any, guard: str = "True") -> None:
        """After ``key``'s own (single, primitive) check passed, run ``extra(x, d, p, C)`` when ``guard`` holds."""
        branch = next(b for b in self.branches if b.key == key)
        branch.then.append((extra, guard))

    def fallback(self, table: dict[str, Any], unknown: Any, bits: dict[str, int] | None) -> None:
        self._table = table
        self._unknown = unknown
        if bits:
            self.uses_choices = True
            self._fallback_bits = bits

    def required(self, carriers: list[tuple[str, ...]], missing: Any) -> None:
        """Each tuple: the JSON properties any of which makes one required element present."""
        self._required = carriers
        self._missing = missing

    def choices(self, conflict: Any) -> None:
        self._conflict = conflict

    def post(self, check: Any, condition: str = "True") -> None:
        """Run ``check(d, p, C)`` after the loop when ``condition`` ({d}, {m}) holds."""
        self._post = check
        self._post_condition = condition

    @property
    def pasteable(self) -> bool:
        return len(self.branches) <= _CHAIN

    # -- source -------------------------------------------------------------------------

    def render(self) -> tuple[str, _Binder]:
        bind = _Binder()
        lines = [f"def {self.function_name}(d, p, C):"]
        lines += [f"    {line}" for line in self._loop(_Names("d", "p", 0), bind, 0)]
        return "\n".join(lines) + "\n", bind

    def compile(self, ns: Namespace) -> StructValidator:
        source, bind = self.render()
        exec(compile(source, f"<validator {self.function_name}>", "exec"), bind.globals)
        validator: StructValidator = bind.globals[self.function_name]
        for name in bind.calls - {self.function_name}:
            ns.refer(name, bind.globals, name)
        return validator

    def _loop(self, n: _Names, bind: _Binder, depth: int) -> list[str]:
        """The loop over the object ``n.d`` and the whole-object rules after it."""
        out: list[str] = []
        if self.uses_choices:
            out.append(f"{n.m} = {n.dup} = 0")
        out.append(f"for {n.k}, {n.x} in {n.d}.items():")
        fallback = [
            f"{n.f} = {bind(self._table.get, 'table')}({n.k})",
            f"if {n.f} is None:",
            f"    {bind(self._unknown, 'unknown')}({n.k}, {n.d}, {n.p}, C)",
            "else:",
            f"    {n.f}({n.x}, {n.d}, {n.p}, C)",
        ]
        if self._fallback_bits:
            fallback += [
                f"{n.b} = {bind(self._fallback_bits.get, 'bits')}({n.k}, 0)",
                f"{n.dup} |= {n.m} & {n.b}",
                f"{n.m} |= {n.b}",
            ]
        bodies = [self._branch(b, n, bind, depth) for b in self.branches]
        if len(bodies) <= _CHAIN:
            out += _indent(_chain(n, [b.key for b in self.branches], bodies, fallback))
        else:
            index = bind({b.key: i for i, b in enumerate(self.branches)}, "index")
            out += _indent(
                [
                    "try:",
                    f"    {n.i} = {index}[{n.k}]",
                    "except KeyError:",
                    *_indent(fallback),
                    "    continue",
                ]
            )
            out += _indent(_halve(n.i, bodies, 0, len(bodies)))
        if self._required:
            conditions = " or ".join(
                "(" + " and ".join(f"{key!r} not in {n.d}" for key in carriers) + ")"
                for carriers in self._required
            )
            out += [f"if {conditions}:", f"    {bind(self._missing, 'missing')}({n.d}, {n.p}, C)"]
        if self.uses_choices and self._conflict is not None:
            out += [f"if {n.dup}:", f"    {bind(self._conflict, 'conflict')}({n.d}, {n.p}, C)"]
        if self._post is not None:
            condition = self._post_condition.format(d=n.d, m=n.m)
            out += [f"if {condition}:", f"    {bind(self._post, 'post')}({n.d}, {n.p}, C)"]
        return out

    def _branch(self, b: _Branch, n: _Names, bind: _Binder, depth: int) -> list[str]:
        x = n.x
        out = [f"{n.dup} |= {n.m} & {b.bit}", f"{n.m} |= {b.bit}"] if b.bit else []
        if b.kind == "pass":
            return ["pass"]
        if b.kind == "call":
            return [*out, f"{bind(b.slow, 'check')}({x}, {n.d}, {n.p}, C)"]
        slow = bind(b.slow, "slow")
        if b.kind == "primitive":
            aux = bind(b.aux, "aux") if b.aux is not None else "None"
            if not b.repeats:
                if b.shortcut is not None:
                    condition, parse, objects = b.shortcut
                    names = {hint: bind(obj, hint) for hint, obj in objects.items()}
                    out += [
                        f"if {condition.format(x=x, **names)}:",
                        "    try:",
                        f"        {parse.format(x=x, **names)}",
                        "    except ValueError:",
                        f"        {slow}({x}, {n.d}, {n.p}, C)",
                        f"elif not ({b.fast.format(x=x, aux=aux)}):",
                        f"    {slow}({x}, {n.d}, {n.p}, C)",
                    ]
                    return out
                out += [f"if not ({b.fast.format(x=x, aux=aux)}):", f"    {slow}({x}, {n.d}, {n.p}, C)"]
                for extra, guard in b.then:
                    out += [f"elif {guard.format(x=x)}:", f"    {bind(extra, 'then')}({x}, {n.d}, {n.p}, C)"]
                return out
            return [
                *out,
                f"if {x}.__class__ is list and {x}:",
                f"    for {n.y} in {x}:",
                f"        if not ({b.fast.format(x=n.y, aux=aux)}):",
                f"            {slow}({x}, {n.d}, {n.p}, C)",
                "            break",
                "else:",
                f"    {slow}({x}, {n.d}, {n.p}, C)",
            ]
        assert b.child is not None
        paste = depth < _INLINE_DEPTH and b.child.pasteable
        if not b.repeats:
            path = f"({n.p}, {b.seg!r}, -1)"
            if paste:
                inner = b.child._loop(_Names(x, path, n.level + 1), bind, depth + 1)
            else:
                bind.calls.add(b.child.function_name)
                inner = [f"{b.child.function_name}({x}, {path}, C)"]
            return [
                *out,
                f"if {_HAS_CONTENT.format(x=x)}:",
                *_indent(inner),
                "else:",
                f"    {slow}({x}, {n.d}, {n.p}, C)",
            ]
        path = f"({n.p}, {b.seg!r}, {n.i})"
        if paste:
            inner = b.child._loop(_Names(n.y, path, n.level + 1), bind, depth + 1)
        else:
            bind.calls.add(b.child.function_name)
            inner = [f"{b.child.function_name}({n.y}, {path}, C)"]
        return [
            *out,
            f"if {x}.__class__ is list and {x}:",
            f"    {n.i} = 0",
            f"    for {n.y} in {x}:",
            f"        if {_HAS_CONTENT.format(x=n.y)}:",
            *_indent(inner, 3),
            "        else:",
            f"            {bind(b.rest, 'rest')}({x}, {n.i}, {n.p}, C)",
            "            break",
            f"        {n.i} += 1",
            "else:",
            f"    {slow}({x}, {n.d}, {n.p}, C)",
        ]


def _indent(lines: list[str], levels: int = 1) -> list[str]:
    pad = "    " * levels
    return [pad + line for line in lines]


def _chain(n: _Names, keys: list[str], bodies: list[list[str]], fallback: list[str]) -> list[str]:
    """Few properties: compare the key with each name, likeliest first."""
    out: list[str] = []
    keyword = "if"
    for key, body in zip(keys, bodies, strict=True):
        out += [f"{keyword} {n.k} == {key!r}:", *_indent(body or ["pass"])]
        keyword = "elif"
    if not keys:
        return fallback
    return [*out, "else:", *_indent(fallback)]


def _halve(index: str, bodies: list[list[str]], low: int, high: int) -> list[str]:
    """Many properties: find the numbered branch by halving."""
    if high - low == 1:
        return bodies[low] or ["pass"]
    mid = (low + high) // 2
    return [
        f"if {index} < {mid}:",
        *_indent(_halve(index, bodies, low, mid)),
        "else:",
        *_indent(_halve(index, bodies, mid, high)),
    ]
