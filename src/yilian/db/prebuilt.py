"""A condition built once and placed in many statements, its cache key worked out once.

SQLAlchemy finds a statement's compiled SQL in its cache by a key it computes on every execution,
walking every element of the statement. A condition that is kept and reused as it is (the access
policy's row filter: four correlated ``EXISTS`` probes and an ``IN`` over owned types) costs that
walk on every search even though it never changes: measured on a patient-compartment search
(SQLite, in process), the row filter's share of the key was ~0.08 ms of a ~1.1 ms search, half
of what the access decision added to it.

:class:`Prebuilt` wraps such a condition. Its own part of the key is the condition's key,
computed once when it is wrapped, plus the key of the table or alias it is anchored to, computed
in the enclosing statement (so two statements that apply the same condition to different
aliases never share compiled SQL). The condition's bound values are handed to SQLAlchemy in the
same order every time, which is how a cached compiled statement receives the values of another
statement with the same key. It renders as the condition in parentheses.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.sql.expression import FromClause
from sqlalchemy.sql.visitors import InternalTraversal


class Prebuilt(ColumnElement[bool]):
    """``condition`` (over columns of ``anchor``) with its cache key computed once."""

    __visit_name__ = "yilian_prebuilt"
    # Children, for SQLAlchemy's traversals (FROM inference, correlation, cloning). The cache
    # key does not come from them: _gen_cache_key below.
    _traverse_internals = [
        ("condition", InternalTraversal.dp_clauseelement),
        ("anchor", InternalTraversal.dp_clauseelement),
    ]
    inherit_cache = False
    type = Boolean()

    def __init__(self, condition: ColumnElement[bool], anchor: FromClause) -> None:
        key = condition._generate_cache_key()
        if key is None or key.params:
            # Not cacheable, or carrying .params() values: nothing to gain, and no shortcut taken.
            raise ValueError("Prebuilt needs a cacheable condition without .params()")
        self.condition = condition
        self.anchor = anchor
        self._key = key.key
        self._binds: tuple[BindParameter[Any], ...] = tuple(key.bindparams)

    @property
    def _from_objects(self) -> list[FromClause]:
        return self.condition._from_objects

    def self_group(self, against: Any = None) -> ColumnElement[Any]:
        return self  # already parenthesised when rendered

    def _gen_cache_key(self, anon_map: Any, bindparams: list[BindParameter[Any]]) -> tuple[Any, ...]:
        # As SQLAlchemy's own elements do: an element met again in the same statement is named by
        # its first occurrence, and its values are not extracted twice.
        id_, found = anon_map.get_anon(self)
        if found:
            return (id_, self.__class__)
        bindparams.extend(self._binds)
        return (id_, self.__class__, self.anchor._gen_cache_key(anon_map, bindparams), self._key)


@compiles(Prebuilt)
def _render(element: Prebuilt, compiler: SQLCompiler, **kw: Any) -> str:
    return "(" + compiler.process(element.condition, **kw) + ")"


__all__ = ["Prebuilt"]
