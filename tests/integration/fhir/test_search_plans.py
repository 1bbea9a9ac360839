"""How searches reach their rows: prefix ranges, the driving lookup, counts from the index.

The search engine turns a string prefix into an index range, lets the most selective filter
drive and probes the others per candidate, and counts from the index rows when nothing else
limits the result. These tests hold the answers to what the plain reading of the spec gives
(whatever the order of the filters, at the edges of Unicode, after deletes), and check on
each database that the statements it runs use the indexes they were shaped for.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from tests.support.fhir_calls import call, ids
from yilian.db import UnitOfWork
from yilian.fhir import FhirContext
from yilian.fhir.search.compiler import prefix_successor
from yilian.fhir.search.values import fold

# Family names at the edges of code-point order: the last character before the surrogates,
# the first after them, the last code point there is, and a character with its successor.
EDGE_FAMILIES = {
    "p-ab": "ab",
    "p-abc": "abc",
    "p-ab-max": "ab\U0010ffff",
    "p-ab-max-x": "ab\U0010ffffx",
    "p-ac": "ac",
    "p-aa-max": "aa\U0010ffff",
    "p-max": "\U0010ffff",
    "p-max-max": "\U0010ffff\U0010ffff",
    "p-zhang": "张",
    "p-zhangsan": "张三",
    "p-zhang-next": "弡",  # U+5F21, the code point after 张 (U+5F20)
    "p-d7ff": "\ud7ffz",
    "p-e000": "\ue000",
}


def put(uow: UnitOfWork, ctx: FhirContext, resource: dict[str, Any]) -> None:
    r = call(uow, ctx, "PUT", f"{resource['resourceType']}/{resource['id']}", resource)
    assert r.status in (200, 201), r


def found(uow: UnitOfWork, ctx: FhirContext, url: str) -> set[str]:
    r = call(uow, ctx, "GET", url)
    assert r.status == 200, (url, r)
    return ids(r.json)


def total(uow: UnitOfWork, ctx: FhirContext, url: str) -> int:
    r = call(uow, ctx, "GET", url)
    assert r.status == 200, (url, r)
    value: int = r.json["total"]
    return value


@contextmanager
def statements(uow: UnitOfWork) -> Iterator[list[tuple[str, Any]]]:
    """The SQL (and parameters) the unit of work's connection runs inside the block."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, sql: str, params: Any, _context: Any, _many: bool) -> None:
        seen.append((sql, params))

    event.listen(uow.conn, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(uow.conn, "before_cursor_execute", record)


def test_prefix_successor_is_the_least_string_after_every_extension() -> None:
    assert prefix_successor("ab") == "ac"
    assert prefix_successor("张") == "弡"
    assert prefix_successor("a\U0010ffff") == "b"  # the last code point carries
    assert prefix_successor("\U0010ffff\U0010ffff") is None  # nothing sorts after every extension
    assert prefix_successor("\ud7ff") == "\ue000"  # surrogates are never stored
    for prefix in ("ab", "张", "a\U0010ffff", "\ud7ff"):
        upper = prefix_successor(prefix)
        assert upper is not None and upper > prefix + "\U0010ffff" * 3


@pytest.fixture
def edge_names(uow: UnitOfWork, ctx: FhirContext) -> None:
    for pid, family in EDGE_FAMILIES.items():
        put(uow, ctx, {"resourceType": "Patient", "id": pid, "name": [{"family": family}]})


@pytest.mark.parametrize(
    "prefix", ["ab", "a", "ab\U0010ffff", "\U0010ffff", "张", "弡", "\ud7ff", "\ue000", "aa"]
)
def test_prefix_search_finds_exactly_the_names_that_start_with_it(
    uow: UnitOfWork, ctx: FhirContext, edge_names: None, prefix: str
) -> None:
    expected = {pid for pid, family in EDGE_FAMILIES.items() if fold(family).startswith(fold(prefix))}
    assert expected  # every prefix here starts at least one name
    assert found(uow, ctx, f"Patient?family={prefix}&_count=100") == expected
    assert total(uow, ctx, f"Patient?family={prefix}&_summary=count") == len(expected)


@pytest.fixture
def residents(uow: UnitOfWork, ctx: FhirContext) -> None:
    """Two families that share a surname, a birthday and a gender in part: PDQ territory."""
    people = [
        ("r1", "司马", "娜", "1991-06-04", "female"),
        ("r2", "司马", "娜芝", "1991-06-04", "female"),
        ("r3", "司马", "娜芝", "1991-06-04", "male"),
        ("r4", "司马", "娜芝", "1992-06-04", "female"),
        ("r5", "司徒", "娜芝", "1991-06-04", "female"),
        ("r6", "司马", "芝", "1991-06-04", "female"),
    ]
    for pid, family, given, born, gender in people:
        put(
            uow,
            ctx,
            {
                "resourceType": "Patient",
                "id": pid,
                "gender": gender,
                "birthDate": born,
                "name": [{"family": family, "given": [given]}, {"family": family, "given": [given, "小名"]}],
            },
        )
    # Enough women for gender to be the least selective filter by far.
    for i in range(40):
        put(
            uow,
            ctx,
            {"resourceType": "Patient", "id": f"w{i}", "gender": "female", "name": [{"family": "王"}]},
        )


PDQ = ["family=司马", "given=娜", "birthdate=1991-06-04", "gender=female"]


@pytest.mark.parametrize("order", list(itertools.permutations(PDQ)))
def test_the_answer_does_not_depend_on_which_filter_drives(
    uow: UnitOfWork, ctx: FhirContext, residents: None, order: tuple[str, ...]
) -> None:
    query = "&".join(order)
    assert found(uow, ctx, f"Patient?{query}") == {"r1", "r2"}
    # Each patient has two matching names: counted once.
    assert total(uow, ctx, f"Patient?{query}&_summary=count") == 2


def test_counts_leave_out_deleted_and_updated_away_resources(
    uow: UnitOfWork, ctx: FhirContext, residents: None
) -> None:
    assert total(uow, ctx, "Patient?gender=female&_summary=count") == 45
    assert call(uow, ctx, "DELETE", "Patient/w0").status in (200, 204)
    put(uow, ctx, {"resourceType": "Patient", "id": "w1", "gender": "male", "name": [{"family": "王"}]})
    assert total(uow, ctx, "Patient?gender=female&_summary=count") == 43
    assert total(uow, ctx, "Patient?gender=female&family=王&_summary=count") == 38
    assert total(uow, ctx, "Patient?gender=female&family=王&_total=accurate&_count=5") == 38
    assert "w0" not in found(uow, ctx, "Patient?family=王&_count=100")


def test_a_period_that_ends_before_it_starts_is_searched_as_the_span_between(
    uow: UnitOfWork, ctx: FhirContext
) -> None:
    put(uow, ctx, {"resourceType": "Patient", "id": "pp"})
    put(
        uow,
        ctx,
        {
            "resourceType": "Encounter",
            "id": "backwards",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": "Patient/pp"},
            "period": {"start": "2024-03-20", "end": "2024-03-10"},
        },
    )
    for query, hit in (
        ("2024-03", True),
        ("ge2024-03-15", True),
        ("le2024-03-15", True),
        ("gt2024-04-01", False),
        ("lt2024-03-01", False),
        ("sa2024-03-05", True),
        ("eb2024-03-25", True),
    ):
        assert (found(uow, ctx, f"Encounter?date={query}") == {"backwards"}) is hit, query


def _explain(uow: UnitOfWork, sql: str, params: Any) -> str:
    conn = uow.conn.connection.driver_connection
    assert conn is not None
    cur = conn.cursor()
    if uow.conn.dialect.name == "sqlite":
        cur.execute("EXPLAIN QUERY PLAN " + sql, params)
        return "\n".join(str(row[-1]) for row in cur.fetchall())
    cur.execute("SET LOCAL enable_seqscan = off")  # a test table is small enough to read whole
    cur.execute("EXPLAIN " + sql, params)
    return "\n".join(str(row[0]) for row in cur.fetchall())


def test_statements_use_the_index_ranges_and_probes_they_were_shaped_for(
    uow: UnitOfWork, ctx: FhirContext, residents: None
) -> None:
    with statements(uow) as seen:
        assert found(uow, ctx, "Patient?gender=female&family=司马&given=娜芝&_total=none") == {"r2", "r4"}
    page = next(sql for sql, _ in seen if "ORDER BY" in sql)
    params = next(p for sql, p in seen if sql == page)
    plan = _explain(uow, page, params)
    if uow.conn.dialect.name == "sqlite":
        # The string prefix is a range on the (type, param, value) index…
        assert re.search(
            r"ix_idx_string_0 \(res_type=\? AND param=\? AND value_norm>\? AND value_norm<\?\)", plan
        ), plan
        # …and the other filters probe each candidate's own rows.
        assert "ix_idx_token_resource (resource_pk=?)" in plan, plan
        assert "ix_idx_token_0" not in plan, plan
    else:
        assert re.search(r"Index Cond: .*value_norm >= ", plan), plan


def test_a_first_page_holding_the_whole_result_is_its_own_count(
    uow: UnitOfWork, ctx: FhirContext, residents: None
) -> None:
    with statements(uow) as seen:
        r = call(uow, ctx, "GET", "Patient?family=司马&_count=50")
    assert r.status == 200 and r.json["total"] == len(r.json["entry"]) == 5  # r1 r2 r3 r4 r6
    assert not [sql for sql, _ in seen if "count(" in sql.lower()]  # one statement: the page
    paged = call(uow, ctx, "GET", "Patient?family=司马&_count=3")
    assert paged.json["total"] == 5 and len(paged.json["entry"]) == 3  # a longer result is counted
    next_url = next(link["url"] for link in paged.json["link"] if link["relation"] == "next")
    rest = call(uow, ctx, "GET", next_url.split("/fhir/", 1)[1])
    assert rest.json["total"] == 5 and len(rest.json["entry"]) == 2  # later pages count too


def test_a_compartment_search_reads_the_patients_resources_not_the_whole_type(
    uow: UnitOfWork, ctx: FhirContext
) -> None:
    for p in ("cp-1", "cp-2"):
        put(uow, ctx, {"resourceType": "Patient", "id": p})
        for k in range(4):
            put(
                uow,
                ctx,
                {
                    "resourceType": "Observation",
                    "id": f"{p}-o{k}",
                    "status": "final",
                    "code": {"text": "体温"},
                    "subject": {"reference": f"Patient/{p}"},
                    "effectiveDateTime": f"2024-05-0{k + 1}",
                },
            )
    with statements(uow) as seen:
        assert found(uow, ctx, "Patient/cp-1/Observation?_sort=-date") == {f"cp-1-o{k}" for k in range(4)}
    page = next(sql for sql, _ in seen if "ORDER BY" in sql)
    plan = _explain(uow, page, next(p for sql, p in seen if sql == page))
    if uow.conn.dialect.name == "sqlite":
        # The compartment's members by rowid, found through the reference index; never a walk
        # of every Observation in (type, lastUpdated) order testing each for membership.
        assert "USING INTEGER PRIMARY KEY (rowid=?)" in plan, plan
        assert "ix_idx_reference_1 (target_type=? AND target_id=?)" in plan, plan
        assert "ix_resource_type_updated" not in plan, plan
    else:
        assert "idx_reference" in plan, plan
    # Sorted and paged as before.
    first = call(uow, ctx, "GET", "Patient/cp-1/Observation?_sort=-date&_count=2")
    assert [e["resource"]["id"] for e in first.json["entry"]] == ["cp-1-o3", "cp-1-o2"]
