"""The CSV migration's mapping language without a database: checking, compiling, transforming rows."""

from __future__ import annotations

import csv
import datetime as dt
import textwrap
from pathlib import Path

import orjson
import pytest

from yilian.exchange.migrate import (
    MigrationReport,
    Plan,
    Problem,
    TablePlan,
    TableReport,
    compile_text,
    load_mapping,
)
from yilian.exchange.migrate.transform import Transformed, source_key, transform
from yilian.kernel.errors import YilianError

BASE = """
version: 1
source: his
timezone: "+08:00"
tables:
"""


def plan_of(tables: str) -> Plan:
    return compile_text(BASE + textwrap.indent(textwrap.dedent(tables), "  "))


def mapping_error(tables: str) -> str:
    with pytest.raises(YilianError) as info:
        plan_of(tables)
    return " | ".join(i.message for i in info.value.issues) or info.value.message


def table(plan: Plan, name: str) -> TablePlan:
    return next(t for t in plan.tables if t.name == name)


def run(
    plan: Plan, name: str, row: dict[str, str], known: dict[tuple[str, str], str] | None = None
) -> Transformed:
    t = table(plan, name)
    key = source_key(t, row)
    assert isinstance(key, str), key
    return transform(t, row, key, resolve=lambda tb, k: (known or {}).get((tb, k)), tz=plan.timezone)


PATIENTS = """
patients:
  resource: Patient
  key: PID
  elements:
    - {path: "name[0].family", column: SURNAME, replace: [{pattern: "[0-9]+", with: ""}], required: true}
    - {path: "name[0].given[0]", column: GIVEN}
    - {path: gender, column: SEX, map: {"1": male, "2": female, "9": ~}, unmapped: reject}
    - {path: birthDate, column: DOB, format: "%d/%m/%Y"}
    - {path: deceasedDateTime, column: DIED, format: "%Y%m%d %H%M"}
    - {path: active, column: ACTIVE, map: {Y: true, N: false}}
    - when: {column: PHONE, present: true}
      elements:
        - {path: "telecom[0].system", constant: phone}
        - {path: "telecom[0].value", column: PHONE}
    - when: {column: INS, present: true}
      elements:
        - {path: "identifier[1].system", constant: "https://example.org/sid/insurance"}
        - {path: "identifier[1].value", column: INS}
    - when: {column: MRN, present: true}
      elements:
        - {path: "identifier[0].system", constant: "https://example.org/sid/mrn"}
        - {path: "identifier[0].value", column: MRN}
"""

ROW = {
    "PID": "p1",
    "SURNAME": "Zhang42",
    "GIVEN": "Wei",
    "SEX": "1",
    "DOB": "03/02/2001",
    "DIED": "",
    "ACTIVE": "Y",
    "PHONE": "",
    "INS": "INS-9",
    "MRN": "",
}


def test_a_row_becomes_a_resource_with_its_source_key_as_identifier() -> None:
    plan = plan_of(PATIENTS)
    done = run(plan, "patients", ROW)
    assert done.problems == []
    assert done.resource == {
        "resourceType": "Patient",
        "name": [{"family": "Zhang", "given": ["Wei"]}],
        "gender": "male",
        "birthDate": "2001-02-03",
        "active": True,
        # identifier[0] (MRN) was empty: the insurance number moves up, the source key comes last
        "identifier": [
            {"system": "https://example.org/sid/insurance", "value": "INS-9"},
            {"system": "urn:yilian:source:his:patients", "value": "p1"},
        ],
    }


def test_value_maps_map_omit_and_reject() -> None:
    plan = plan_of(PATIENTS)
    assert run(plan, "patients", {**ROW, "SEX": "2"}).resource["gender"] == "female"  # type: ignore[index]
    assert "gender" not in run(plan, "patients", {**ROW, "SEX": "9"}).resource  # type: ignore[operator]
    bad = run(plan, "patients", {**ROW, "SEX": "X"})
    assert bad.resource is None
    assert [(p.column, "'X' is not in the value map" in p.reason) for p in bad.problems] == [("SEX", True)]


def test_booleans_stay_text_in_value_maps() -> None:
    # YAML 1.1 would read N as False and `no` as False; the mapping's codes are text.
    plan = plan_of(PATIENTS)
    assert run(plan, "patients", {**ROW, "ACTIVE": "N"}).resource["active"] is False  # type: ignore[index]


def test_dates_and_date_times_in_legacy_formats() -> None:
    plan = plan_of(PATIENTS)
    done = run(plan, "patients", {**ROW, "DIED": "20240105 1730"})
    # A local time without an offset takes the mapping's timezone.
    assert done.resource["deceasedDateTime"] == "2024-01-05T17:30:00+08:00"  # type: ignore[index]
    bad = run(plan, "patients", {**ROW, "DOB": "2001-02-03"})
    assert bad.resource is None
    assert bad.problems[0].column == "DOB"
    assert "does not have the format %d/%m/%Y" in bad.problems[0].reason


def test_iso_date_times_keep_their_offset_and_dates_stay_dates() -> None:
    plan = plan_of("""
        visits:
          resource: Encounter
          key: V
          elements:
            - {path: status, constant: finished}
            - {path: class.code, constant: AMB}
            - {path: period.start, column: START}
            - {path: period.end, column: END}
        """)
    done = run(plan, "visits", {"V": "1", "START": "2023-01-27T16:17:47Z", "END": "2023-01-28"})
    assert done.resource["period"] == {"start": "2023-01-27T16:17:47Z", "end": "2023-01-28"}  # type: ignore[index]


def test_required_column_empty_rejects_the_row() -> None:
    plan = plan_of(PATIENTS)
    bad = run(plan, "patients", {**ROW, "SURNAME": "  "})
    assert bad.resource is None
    assert bad.problems[0].column == "SURNAME"
    assert "is empty" in bad.problems[0].reason


OBSERVATIONS = """
patients:
  resource: Patient
  key: PID
visits:
  resource: Encounter
  key: VID
  elements:
    - {path: status, constant: finished}
    - {path: class.code, constant: AMB}
    - {path: subject, reference: patients, column: PID, required: true}
results:
  resource: Observation
  key: {columns: [VID, CODE], duplicates: number}
  elements:
    - {path: status, constant: final}
    - {path: "code.coding[0].code", column: CODE}
    - {path: subject, reference: patients, column: PID, required: true}
    - {path: encounter, reference: visits, column: VID}
    - when: {column: VALUE, is: number}
      elements:
        - {path: valueQuantity.value, column: VALUE}
        - {path: valueQuantity.unit, column: UNITS}
      otherwise:
        - {path: valueString, column: VALUE}
"""


def test_conditional_elements_number_to_quantity_else_string() -> None:
    plan = plan_of(OBSERVATIONS)
    known = {("patients", "p1"): "abc", ("visits", "v1"): "enc1"}
    row = {"VID": "v1", "PID": "p1", "CODE": "8302-2", "VALUE": "127.9", "UNITS": "cm"}
    numeric = run(plan, "results", row, known).resource
    assert numeric is not None
    assert numeric["valueQuantity"] == {"value": 127.9, "unit": "cm"}
    assert "valueString" not in numeric
    text = run(plan, "results", {**row, "VALUE": "Never smoker", "UNITS": ""}, known).resource
    assert text is not None
    assert text["valueString"] == "Never smoker"
    assert "valueQuantity" not in text


def test_joins_resolve_source_keys_to_resource_ids() -> None:
    plan = plan_of(OBSERVATIONS)
    known = {("patients", "p1"): "abc", ("visits", "v1"): "enc1"}
    row = {"VID": "v1", "PID": "p1", "CODE": "x", "VALUE": "1", "UNITS": ""}
    done = run(plan, "results", row, known).resource
    assert done is not None
    assert done["subject"] == {"reference": "Patient/abc"}
    assert done["encounter"] == {"reference": "Encounter/enc1"}


def test_a_row_referring_to_a_missing_parent_is_rejected_with_the_column() -> None:
    plan = plan_of(OBSERVATIONS)
    row = {"VID": "v1", "PID": "nobody", "CODE": "x", "VALUE": "1", "UNITS": ""}
    done = run(plan, "results", row, {("visits", "v1"): "enc1"})
    assert done.resource is None
    assert [p.column for p in done.problems] == ["PID"]
    assert "'nobody'" in done.problems[0].reason
    assert "patients" in done.problems[0].reason


def test_tables_load_after_the_tables_they_refer_to() -> None:
    plan = plan_of(
        """
        results:
          resource: Observation
          key: ID
          elements:
            - {path: status, constant: final}
            - {path: code.text, constant: x}
            - {path: encounter, reference: visits, column: VID}
        visits:
          resource: Encounter
          key: VID
          elements:
            - {path: status, constant: finished}
            - {path: class.code, constant: AMB}
            - {path: subject, reference: patients, column: PID}
        patients:
          resource: Patient
          key: PID
        """
    )
    assert [t.name for t in plan.tables] == ["patients", "visits", "results"]


def test_the_shipped_synthea_mapping_loads_in_dependency_order() -> None:
    plan = load_mapping("synthea")
    order = [t.name for t in plan.tables]
    assert order[:4] == ["organizations", "providers", "patients", "encounters"]
    assert set(order[4:]) == {
        "conditions",
        "observations",
        "immunizations",
        "allergies",
        "procedures",
        "medications",
    }


@pytest.mark.parametrize(
    "tables,says",
    [
        (
            "p:\n  resource: Patient\n  key: ID\n  elements:\n    - {path: nmae.family, column: X}\n",
            "Patient has no element 'nmae' (did you mean name?)",
        ),
        (
            "p:\n  resource: Patient\n  key: ID\n  elements:\n    - {path: name.family, column: X}\n",
            "name repeats, so say which one: name[0]",
        ),
        (
            'p:\n  resource: Patient\n  key: ID\n  elements:\n    - {path: "gender[0]", column: X}\n',
            "gender does not repeat",
        ),
        (
            "p:\n  resource: Patient\n  key: ID\n  elements:\n    - {path: maritalStatus, column: X}\n",
            "maritalStatus is a CodeableConcept: map its parts",
        ),
        (
            "p:\n  resource: Patient\n  key: ID\n  elements:\n    - {path: gender, colum: X}\n",
            "tables.p.elements[0].colum: unknown key",
        ),
        (
            "p:\n  resource: Patient\n  key: ID\n  elements:\n    - {path: gender, column: X, constant: male}\n",
            "exactly one of column, constant, template, reference",
        ),
        (
            "p:\n  resource: Patient\n  key: ID\n  elements:\n    - {path: birthDate, constant: yesterday}\n",
            "constant: not a date",
        ),
        (
            "p:\n  resource: Patient\n  key: ID\n  elements:\n    - {path: birthDate, column: D, format: '%Q'}\n",
            "is not a usable date format",
        ),
        (
            "p:\n  resource: Patient\n  key: ID\n  elements:\n    - {path: gender, column: D, format: '%Y'}\n",
            "format is for dates and times",
        ),
        (
            "o:\n  resource: Observation\n  key: ID\n  elements:\n    - {path: subject, reference: people, column: P}\n",
            "there is no table 'people' in this mapping",
        ),
        (
            "o:\n  resource: Observation\n  key: ID\n  elements:\n    - {path: subject, reference: o2, column: P}\n"
            "o2:\n  resource: Organization\n  key: ID\n",
            "Observation.subject may refer to Device, Group, Location, Patient, not Organization",
        ),
        ("p:\n  resource: Patiant\n  key: ID\n", "did you mean Patient?"),
        (
            "a:\n  resource: Organization\n  key: ID\n  elements:\n    - {path: partOf, reference: b, column: B}\n"
            "b:\n  resource: Organization\n  key: ID\n  elements:\n    - {path: partOf, reference: a, column: A}\n",
            "cycle (a → b → a)",
        ),
        (
            "p:\n  resource: Patient\n  key: ID\n  elements:\n    - when: {column: X, present: true, equals: y}\n"
            "      elements: []\n",
            "exactly one of present, equals, in, matches, is",
        ),
    ],
    ids=[
        "unknown element",
        "repeating without index",
        "index on a single element",
        "column to a complex type",
        "misspelt key",
        "two sources",
        "constant of the wrong type",
        "bad date format",
        "format on a non-date",
        "reference to an unknown table",
        "reference to a wrong target type",
        "unknown resource type",
        "cycle",
        "condition with two tests",
    ],
)
def test_mapping_errors_are_reported_up_front(tables: str, says: str) -> None:
    assert says in mapping_error(tables)


def test_every_mapping_error_is_listed_at_once() -> None:
    with pytest.raises(YilianError) as info:
        plan_of(
            "p:\n  resource: Patient\n  key: ID\n  elements:\n"
            '    - {path: nmae.family, column: X}\n    - {path: "gender[0]", column: X}\n'
        )
    assert len(info.value.issues) == 2
    assert "and 1 more" in info.value.message


def test_not_yaml_says_where() -> None:
    with pytest.raises(YilianError, match=r"not valid YAML \(line 2"):
        compile_text("source: x\ntables: {a: [}\n")


def test_duplicate_keys_are_numbered_or_rejected_by_the_runner_contract() -> None:
    # The key of a row is its key columns joined; a composite key may have empty parts.
    plan = plan_of(OBSERVATIONS)
    results = table(plan, "results")
    assert source_key(results, {"VID": "", "CODE": "x"}) == "|x"
    empty = source_key(results, {"VID": "", "CODE": ""})
    assert not isinstance(empty, str)
    assert "VID, CODE" in empty.column


def test_time_zone_offsets_are_checked() -> None:
    with pytest.raises(YilianError, match="timezone"):
        compile_text("source: x\ntimezone: Asia/Shanghai\ntables: {p: {resource: Patient, key: ID}}\n")
    plan = compile_text("source: x\ntimezone: '-05:00'\ntables: {p: {resource: Patient, key: ID}}\n")
    assert plan.timezone.utcoffset(None) == dt.timedelta(hours=-5)


def test_the_report_is_written_as_csv_or_json(tmp_path: Path) -> None:
    report = MigrationReport("his", "m.yaml", "/data")
    report.tables.append(TableReport("visits", "visits.csv", "Encounter", read=3, written=2, rejected=1))
    report.problems.append(Problem("visits.csv", 4, 3, "visits", "v3", "PID", "refers to Patient 'x'"))
    report.write(tmp_path / "r.csv")
    with (tmp_path / "r.csv").open(newline="", encoding="utf-8") as fh:
        assert list(csv.DictReader(fh)) == [
            {
                "file": "visits.csv",
                "line": "4",
                "row": "3",
                "table": "visits",
                "key": "v3",
                "column": "PID",
                "reason": "refers to Patient 'x'",
            }
        ]
    report.write(tmp_path / "sub" / "r.json")
    doc = orjson.loads((tmp_path / "sub" / "r.json").read_bytes())
    assert doc["tables"][0]["rejected"] == 1
    assert doc["problems"][0]["column"] == "PID"
