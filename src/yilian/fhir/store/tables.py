"""Tables of the shared health record.

``resource`` holds the current version of every resource (its JSON exactly as served),
``resource_version`` every version ever written (the history), and the ``idx_*`` tables one
row per search-parameter value of the current version, by search-parameter type. All three
are written in the same transaction.

Every row carries ``patient_key``-ready columns only on ``resource``; see
``docs/architecture.md`` for how the tables distribute by patient compartment on Citus.
Times are integer microseconds since the Unix epoch (UTC): portable, exact and fast to compare.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from yilian.db.schema import Document, SurrogateKey, metadata

CODE_POINT_TEXT = Text().with_variant(Text(collation="C"), "postgresql")

resource = Table(
    "resource",
    metadata,
    Column("pk", SurrogateKey, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    # The Patient whose compartment this resource belongs to (its own id for a Patient): the
    # distribution column when the record is sharded by patient.
    Column("patient_key", String(64), nullable=True),
    Column("content", Document, nullable=True),
    UniqueConstraint("res_type", "res_id"),
    Index("ix_resource_type_updated", "res_type", "last_updated"),
    Index("ix_resource_patient_key", "patient_key"),
)

resource_version = Table(
    "resource_version",
    metadata,
    Column("resource_pk", SurrogateKey, ForeignKey("resource.pk"), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False, default=False),
    # POST, PUT, PATCH or DELETE: what produced this version (Bundle.entry.request.method in history).
    Column("method", String(8), nullable=False),
    # The compartment this version was in: history is filtered by it like current reads are.
    Column("patient_key", String(64), nullable=True),
    Column("content", Document, nullable=True),
    Index("ix_resource_version_updated", "last_updated"),
    Index("ix_resource_version_type_updated", "res_type", "last_updated"),
)

# Claims made by conditional creates: the unique constraint is what makes 32 concurrent
# `If-None-Exist` creates of the same identifier produce exactly one resource.
conditional_claim = Table(
    "conditional_claim",
    metadata,
    Column("res_type", String(64), primary_key=True),
    Column("criteria_hash", String(64), primary_key=True),
    Column("criteria", Text, nullable=False),
    Column("resource_pk", SurrogateKey, nullable=False),
)


def _index_table(name: str, *columns: Column[object], indexes: tuple[tuple[str, ...], ...]) -> Table:
    cols: list[Column[object]] = [
        # No foreign key: index rows are derived data, replaced with every version.
        Column("resource_pk", SurrogateKey, nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(64), nullable=False),
        *columns,
    ]
    table = Table(name, metadata, *cols)
    Index(f"ix_{name}_resource", table.c.resource_pk)
    for i, index_cols in enumerate(indexes):
        Index(f"ix_{name}_{i}", *(table.c[c] for c in index_cols))
    return table


idx_string = _index_table(
    "idx_string",
    # Case- and accent-folded, for the default prefix match and :contains. Prefix matches are
    # index ranges in code-point order, so on PostgreSQL the column is "C" whatever the
    # database's collation (SQLite's BINARY already is code-point order for UTF-8).
    Column("value_norm", CODE_POINT_TEXT, nullable=False),
    Column("value_exact", Text, nullable=False),  # as written, for :exact
    indexes=(("res_type", "param", "value_norm"),),
)

idx_token = _index_table(
    "idx_token",
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("text_norm", Text, nullable=True),  # display / CodeableConcept.text for :text
    Column("type_system", Text, nullable=True),  # Identifier.type, for :of-type
    Column("type_code", Text, nullable=True),
    indexes=(("res_type", "param", "code"),),
)

idx_reference = _index_table(
    "idx_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("target_version", Text, nullable=True),
    Column("url", Text, nullable=True),  # absolute or canonical references that are not local
    Column("identifier_system", Text, nullable=True),  # Reference.identifier, for :identifier
    Column("identifier_value", Text, nullable=True),
    indexes=(("res_type", "param", "target_id"), ("target_type", "target_id")),
)

idx_date = _index_table(
    "idx_date",
    Column("low", BigInteger, nullable=False),
    Column("high", BigInteger, nullable=False),  # inclusive upper bound of the value's range
    indexes=(("res_type", "param", "low"), ("res_type", "param", "high")),
)

idx_number = _index_table(
    "idx_number",
    Column("value", Float, nullable=False),
    indexes=(("res_type", "param", "value"),),
)

idx_quantity = _index_table(
    "idx_quantity",
    Column("value", Float, nullable=False),
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("unit", Text, nullable=True),
    indexes=(("res_type", "param", "value"),),
)

idx_uri = _index_table(
    "idx_uri",
    Column("uri", Text, nullable=False),
    indexes=(("res_type", "param"),),
)

# Composite parameters (Observation code-value-quantity, …): one row per combination found on
# one element; component 1 is a token, components 2 and 3 typed by their definitions.
idx_composite = _index_table(
    "idx_composite",
    Column("c1_system", Text, nullable=True),
    Column("c1_code", Text, nullable=True),
    Column("c2_system", Text, nullable=True),
    Column("c2_code", Text, nullable=True),  # token code, normalized string, or reference Type/id
    Column("c2_num", Float, nullable=True),  # number / quantity value
    Column("c2_dlow", BigInteger, nullable=True),  # date range
    Column("c2_dhigh", BigInteger, nullable=True),
    Column("c2_unit", Text, nullable=True),
    Column("c3_num", Float, nullable=True),
    indexes=(("res_type", "param", "c1_code"),),
)

# `_text` (narrative) and `_content` (every string in the resource), folded for word search.
idx_text = _index_table(
    "idx_text",
    Column("content_norm", Text, nullable=False),
    indexes=(("res_type", "param"),),
)

INDEX_TABLES: dict[str, Table] = {
    "string": idx_string,
    "token": idx_token,
    "reference": idx_reference,
    "date": idx_date,
    "number": idx_number,
    "quantity": idx_quantity,
    "uri": idx_uri,
    "composite": idx_composite,
    "text": idx_text,
}
