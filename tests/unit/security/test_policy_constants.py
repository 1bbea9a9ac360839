"""The access policy writes its own constants (owned resource types, a consent rule's effect, the
"every institution" marker) into its SQL instead of binding them: a bound value costs SQLAlchemy
work on every search. Nothing else may get in that way."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from yilian.security.policy import _constant
from yilian.security.tables import ALL_ORGS, OWNED_TYPES


@pytest.mark.parametrize("value", [*sorted(OWNED_TYPES), "deny", "permit", ALL_ORGS])
def test_the_platforms_constants_are_written_as_quoted_literals(value: str) -> None:
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        assert str(_constant(value).compile(dialect=dialect)) == f"'{value}'"


@pytest.mark.parametrize(
    "value", ["", "x' OR '1'='1", "deny'; DROP TABLE audit_event; --", "a b", "Patient/1", "org:1", "医院"]
)
def test_anything_else_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="not a constant"):
        _constant(value)
