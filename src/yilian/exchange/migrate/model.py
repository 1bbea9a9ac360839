"""The mapping file as data: what a user may write in ``MAPPING.yaml`` (docs/migrate.md).

These pydantic models check the *shape* of the file (known keys, right kinds of values, one
source per element). What needs the FHIR model or the other tables — paths, reference targets,
the load order — is checked when the mapping is compiled (:mod:`yilian.exchange.migrate.plan`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator

Scalar = str | int | float | bool


class _Strict(BaseModel):
    # A misspelt key ("colum:") must be an error, not a silently ignored line.
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Test(_Strict):
    """One condition on a column's value (after surrounding whitespace is stripped)."""

    column: str
    present: bool | None = None  # true: has a value; false: empty
    equals: str | None = None
    in_: list[str] | None = Field(None, alias="in")
    matches: str | None = None  # a regular expression the whole value must match
    is_: Literal["number", "integer", "date"] | None = Field(None, alias="is")
    not_: bool = Field(False, alias="not")  # negate the test

    @model_validator(mode="after")
    def _one_test(self) -> Test:
        given = [
            k
            for k, v in (
                ("present", self.present),
                ("equals", self.equals),
                ("in", self.in_),
                ("matches", self.matches),
                ("is", self.is_),
            )
            if v is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "a condition needs exactly one of present, equals, in, matches, is"
                + (f" (got {', '.join(given)})" if given else "")
            )
        if self.matches is not None:
            try:
                re.compile(self.matches)
            except re.error as exc:
                raise ValueError(f"matches: not a regular expression: {exc}") from None
        return self


When = Test | list[Test]


class Replace(_Strict):
    pattern: str
    with_: str = Field("", alias="with")

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


class Element(_Strict):
    """One FHIR element filled from a row."""

    path: str
    # Where the value comes from: exactly one of these.
    column: str | None = None
    constant: Scalar | None = None
    template: str | None = None  # "{FIRST} {LAST}": columns in braces
    reference: str | None = None  # a table of this mapping; with ``column`` holding its key
    # How the value is shaped before it is converted to the element's FHIR type.
    replace: list[Replace] = Field(default_factory=list)
    map: dict[str, Scalar | None] | None = None
    unmapped: Literal["reject", "keep", "omit"] = "reject"
    format: str | None = None  # dates: strptime pattern, or "iso"
    required: bool = False
    when: When | None = None

    @field_validator("map", mode="before")
    @classmethod
    def _map_keys_are_text(cls, value: Any) -> Any:
        # YAML reads `1: male` with an integer key; CSV cells are always text.
        if isinstance(value, dict):
            return {_key_text(k): v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Element:
        sources = [
            k
            for k, v in (
                ("column", self.column),
                ("constant", self.constant),
                ("template", self.template),
            )
            if v is not None
        ]
        if self.reference is not None:
            if self.column is None or self.constant is not None or self.template is not None:
                raise ValueError("a reference takes its key from exactly one `column`")
            return self
        if len(sources) != 1:
            raise ValueError(
                "an element needs exactly one of column, constant, template, reference"
                + (f" (got {', '.join(sources)})" if sources else "")
            )
        if self.constant is not None and (self.map is not None or self.replace or self.required):
            raise ValueError("a constant takes no map, replace or required")
        return self


def _key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


class Group(_Strict):
    """Elements that apply only when a condition holds (and, optionally, others when it does not)."""

    when: When
    elements: list[Rule]
    otherwise: list[Rule] = Field(default_factory=list)


def _rule_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "group" if "elements" in value or "otherwise" in value else "element"
    return "group" if isinstance(value, Group) else "element"


Rule = Annotated[
    Annotated[Element, Tag("element")] | Annotated[Group, Tag("group")],
    Discriminator(_rule_kind),
]
Group.model_rebuild()


class Key(_Strict):
    """The source key: the column(s) that name a row in the legacy system."""

    columns: list[str] = Field(min_length=1)
    # Rows sharing a key: "reject" them (a key column is expected to be unique) or "number"
    # them in file order (``key#2``, ``key#3``) for tables whose best key is not unique.
    duplicates: Literal["reject", "number"] = "reject"


class Table(_Strict):
    resource: str
    file: str | None = None  # default: <table name>.csv
    key: Key
    identifier_system: str | None = None  # default: the mapping's, with {source} and {table} filled in
    encoding: str | None = None
    delimiter: str | None = None
    elements: list[Rule] = Field(default_factory=list)

    @field_validator("key", mode="before")
    @classmethod
    def _short_key(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"columns": [value]}
        if isinstance(value, list):
            return {"columns": value}
        return value


SOURCE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class MappingFile(_Strict):
    version: Literal[1] = 1
    source: str = Field(pattern=SOURCE_NAME)
    description: str | None = None
    # Applied to date-times written without an offset (legacy systems write local time).
    timezone: str = "+08:00"
    encoding: str = "utf-8-sig"
    delimiter: str = Field(",", min_length=1, max_length=1)
    identifier_system: str = "urn:yilian:source:{source}:{table}"
    tables: dict[str, Table] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _offset(cls, value: str) -> str:
        if value not in ("Z", "UTC") and not re.fullmatch(r"[+-](0\d|1[0-4]):[0-5]\d", value):
            raise ValueError("write the offset as +08:00, -05:00, Z or UTC")
        return value
