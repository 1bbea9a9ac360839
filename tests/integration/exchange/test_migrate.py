"""The CSV migration on the shared Synthea CSV export, on SQLite and PostgreSQL.

What ``synthea-csv/SOURCE.md`` says a passing migration does: one resource per CSV row of each
mapped table, Patients with names, gender, dates and identifiers, Encounters linked to the right
Patient, Organization and Practitioner, CVX vaccine codes, numbers as Quantities — and a second
run creates nothing, while a row whose parent is missing is reported, not dropped.
"""

from __future__ import annotations

import csv
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from tests.integration.cli.test_cli import yilian
from tests.support.audit import audits, by_the_operator
from tests.support.databases import BACKENDS, drop_database, new_database
from tests.support.paths import SHARED
from tests.support.server import database_url
from yilian.api.wiring import platform_settings
from yilian.db import Database
from yilian.exchange.migrate import MigrationReport, compile_text, load_mapping, migrate
from yilian.fhir.store.sealing import open_content
from yilian.fhir.store.tables import resource
from yilian.mpi.tables import record_link

DATA = SHARED / "synthea-csv"
SOURCE = "urn:yilian:source:synthea:"
SCT = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SYSTEMS = {"RxNorm": RXNORM, "SNOMED-CT": SCT}  # allergies.csv SYSTEM
TABLES = {
    "organizations": "Organization",
    "providers": "Practitioner",
    "patients": "Patient",
    "encounters": "Encounter",
    "conditions": "Condition",
    "observations": "Observation",
    "immunizations": "Immunization",
    "allergies": "AllergyIntolerance",
    "procedures": "Procedure",
    "medications": "MedicationRequest",
}


def csv_rows(folder: Path, table: str) -> list[dict[str, str]]:
    with (folder / f"{table}.csv").open(newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def stored(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every current resource, opened (sealed fields decrypted), by type."""
    out: dict[str, list[dict[str, Any]]] = {}
    stmt = select(resource.c.res_type, resource.c.content).where(resource.c.deleted.is_(False))
    with db.engine.connect() as conn:
        for rtype, content in conn.execute(stmt):
            out.setdefault(rtype, []).append(orjson.loads(open_content(db.engine, bytes(content)) or b"{}"))
    return out


def source_key(res: dict[str, Any], table: str) -> str:
    keys = [i["value"] for i in res.get("identifier", []) if i.get("system") == SOURCE + table]
    assert len(keys) == 1, res
    return str(keys[0])


def by_key(resources: list[dict[str, Any]], table: str) -> dict[str, dict[str, Any]]:
    return {source_key(r, table): r for r in resources}


@pytest.fixture(scope="module")
def first(db: Database) -> MigrationReport:
    return migrate(db, load_mapping("synthea"), DATA, settings=platform_settings())


@pytest.fixture(scope="module")
def everything(db: Database, first: MigrationReport) -> dict[str, list[dict[str, Any]]]:
    return stored(db)


def test_every_row_lands_one_resource_per_row(
    first: MigrationReport, everything: dict[str, list[dict[str, Any]]]
) -> None:
    assert first.problems == []
    for table, rtype in TABLES.items():
        rows = len(csv_rows(DATA, table))
        assert len(everything.get(rtype, [])) == rows, f"{rtype}: {len(everything.get(rtype, []))} != {rows}"
        report = next(t for t in first.tables if t.table == table)
        assert (report.read, report.written, report.rejected) == (rows, rows, 0)
    assert len(everything["Patient"]) == len(csv_rows(DATA, "patients"))
    assert "claims.csv" in first.unmapped_files


def test_patients_carry_names_gender_dates_identifiers_and_address(
    everything: dict[str, list[dict[str, Any]]],
) -> None:
    patients = by_key(everything["Patient"], "patients")
    for row in csv_rows(DATA, "patients"):
        p = patients[row["Id"]]
        official = p["name"][0]
        # Synthea's numeric suffixes are stripped from every name, the same way each time.
        assert official["family"] == re.sub(r"\d+", "", row["LAST"])
        assert official["given"] == [re.sub(r"\d+", "", row["FIRST"])]
        assert not re.search(r"\d", orjson.dumps(p["name"]).decode())
        assert p["gender"] == {"M": "male", "F": "female"}[row["GENDER"]]
        assert p["birthDate"] == row["BIRTHDATE"]
        if row["DEATHDATE"]:
            assert p["deceasedDateTime"] == row["DEATHDATE"]
        else:
            assert "deceasedDateTime" not in p
        idents = {i["system"]: i["value"] for i in p["identifier"]}
        assert idents.get("http://hl7.org/fhir/sid/us-ssn") == row["SSN"]
        assert idents.get("urn:oid:2.16.840.1.113883.4.3.25") == (row["DRIVERS"] or None)
        assert idents.get("https://yilian.example.cn/fhir/sid/passport/USA") == (row["PASSPORT"] or None)
        assert p["address"][0]["line"] == [row["ADDRESS"]]
        assert p["address"][0]["city"] == row["CITY"]
        assert p["address"][0].get("postalCode") == (row["ZIP"] or None)
    assert any(r["DEATHDATE"] for r in csv_rows(DATA, "patients")), "the data has a deceased patient"


def test_encounters_refer_to_the_right_patient_organization_and_practitioner(
    everything: dict[str, list[dict[str, Any]]],
) -> None:
    ids = {
        table: {r["id"]: source_key(r, table) for r in everything[rtype]}
        for table, rtype in TABLES.items()
        if table in ("patients", "organizations", "providers")
    }
    encounters = by_key(everything["Encounter"], "encounters")
    for row in csv_rows(DATA, "encounters"):
        e = encounters[row["Id"]]
        kind, pid = e["subject"]["reference"].split("/")
        assert kind == "Patient" and ids["patients"][pid] == row["PATIENT"]
        kind, oid = e["serviceProvider"]["reference"].split("/")
        assert kind == "Organization" and ids["organizations"][oid] == row["ORGANIZATION"]
        kind, prid = e["participant"][0]["individual"]["reference"].split("/")
        assert kind == "Practitioner" and ids["providers"][prid] == row["PROVIDER"]
        assert e["period"]["start"] == row["START"]


def test_immunizations_use_cvx(everything: dict[str, list[dict[str, Any]]]) -> None:
    codes = sorted(
        (c["system"], c["code"]) for i in everything["Immunization"] for c in i["vaccineCode"]["coding"]
    )
    assert codes == sorted(
        ("http://hl7.org/fhir/sid/cvx", r["CODE"]) for r in csv_rows(DATA, "immunizations")
    )


def test_numeric_observations_are_quantities_and_the_rest_strings(
    everything: dict[str, list[dict[str, Any]]],
) -> None:
    # Observations have no Id: their source key is DATE|PATIENT|ENCOUNTER|CODE (#n if repeated).
    seen: dict[str, list[dict[str, Any]]] = {}
    for o in everything["Observation"]:
        seen.setdefault(source_key(o, "observations").split("#")[0], []).append(o)
    numeric = text = 0
    for row in csv_rows(DATA, "observations"):
        found = seen["|".join((row["DATE"], row["PATIENT"], row["ENCOUNTER"], row["CODE"]))]
        if re.fullmatch(r"-?\d+(\.\d+)?", row["VALUE"]):
            numeric += 1
            assert any(
                o.get("valueQuantity", {}).get("value") == float(row["VALUE"])
                and o["valueQuantity"].get("unit") == (row["UNITS"] or None)
                for o in found
            ), row
        else:
            text += 1
            assert any(o.get("valueString") == row["VALUE"] for o in found), row
    assert numeric and text


def keyed_rows(table: str) -> dict[str, dict[str, str]]:
    """The rows of a table keyed START|PATIENT|ENCOUNTER|CODE, as the mapping keys them: a
    repeated key numbered in file order (``#2``, ``#3``)."""
    out: dict[str, dict[str, str]] = {}
    seen: dict[str, int] = {}
    for row in csv_rows(DATA, table):
        key = "|".join(row[c] for c in ("START", "PATIENT", "ENCOUNTER", "CODE"))
        seen[key] = seen.get(key, 0) + 1
        out[key if seen[key] == 1 else f"{key}#{seen[key]}"] = row
    return out


def test_conditions_allergies_procedures_and_medications_carry_codes_dates_and_links(
    everything: dict[str, list[dict[str, Any]]],
) -> None:
    patients = {r["id"]: source_key(r, "patients") for r in everything["Patient"]}
    encounters = {r["id"]: source_key(r, "encounters") for r in everything["Encounter"]}

    def checked(table: str, concept: str, system: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
        """Each row with its resource: one for one, coded and linked to its patient and visit."""
        resources = by_key(everything[TABLES[table]], table)
        rows = keyed_rows(table)
        assert set(resources) == set(rows)
        for key, row in rows.items():
            res = resources[key]
            assert res[concept]["coding"] == [
                {
                    "system": SYSTEMS.get(row.get("SYSTEM", ""), system),
                    "code": row["CODE"],
                    "display": row["DESCRIPTION"],
                }
            ]
            assert res[concept]["text"] == row["DESCRIPTION"]
            kind, pid = res["patient" if table == "allergies" else "subject"]["reference"].split("/")
            assert kind == "Patient" and patients[pid] == row["PATIENT"]
            kind, eid = res["encounter"]["reference"].split("/")
            assert kind == "Encounter" and encounters[eid] == row["ENCOUNTER"]
        return [(resources[key], row) for key, row in rows.items()]

    def reason(res: dict[str, Any], row: dict[str, str]) -> None:
        if row["REASONCODE"]:
            assert res["reasonCode"][0]["coding"][0] == {
                "system": SCT, "code": row["REASONCODE"], "display": row["REASONDESCRIPTION"],
            }  # fmt: skip
        else:
            assert "reasonCode" not in res

    conditions = checked("conditions", "code", SCT)
    for c, row in conditions:
        assert c["onsetDateTime"] == c["recordedDate"] == row["START"]
        assert c.get("abatementDateTime") == (row["STOP"] or None)
        assert c["clinicalStatus"]["coding"][0]["code"] == ("resolved" if row["STOP"] else "active")
        assert c["verificationStatus"]["coding"][0]["code"] == "confirmed"
    assert {bool(row["STOP"]) for _, row in conditions} == {True, False}

    allergies = checked("allergies", "code", "")
    for a, row in allergies:
        assert a["onsetDateTime"] == row["START"]
        assert (a["type"], a["category"]) == (row["TYPE"], [row["CATEGORY"]])
        assert a["clinicalStatus"]["coding"][0]["code"] == ("resolved" if row["STOP"] else "active")
        reactions = [(n, row[f"REACTION{n}"]) for n in (1, 2) if row[f"REACTION{n}"]]
        assert len(a.get("reaction", [])) == len(reactions)
        for (n, code), reaction in zip(reactions, a.get("reaction", []), strict=True):
            assert reaction["manifestation"][0]["coding"][0]["code"] == code
            assert reaction.get("severity") == (row[f"SEVERITY{n}"].lower() or None)
    assert {row["SYSTEM"] for _, row in allergies} == {"RxNorm", "SNOMED-CT"}

    for p, row in checked("procedures", "code", SCT):
        assert p["status"] == "completed"
        assert p["performedPeriod"] == {"start": row["START"], "end": row["STOP"]}
        reason(p, row)

    medications = checked("medications", "medicationCodeableConcept", RXNORM)
    for m, row in medications:
        assert (m["status"], m["intent"]) == ("completed" if row["STOP"] else "active", "order")
        assert m["authoredOn"] == row["START"]
        reason(m, row)
    # The same drug twice in one visit: two requests.
    assert len(medications) == len(csv_rows(DATA, "medications"))
    assert len({(r["START"], r["ENCOUNTER"], r["CODE"]) for _, r in medications}) < len(medications)


def test_running_again_creates_nothing(db: Database, first: MigrationReport) -> None:
    before = {k: len(v) for k, v in stored(db).items()}
    again = migrate(db, load_mapping("synthea"), DATA, settings=platform_settings())
    assert again.total("written") == 0
    assert again.total("unchanged") == first.total("read")
    assert again.problems == []
    assert {k: len(v) for k, v in stored(db).items()} == before


def small_copy(tmp: Path, broken_patient: str) -> tuple[Path, int]:
    """One patient's rows of every mapped table, plus an immunization of a patient who is not
    there; returns the folder and the file line of that orphan row."""
    folder = tmp / "legacy"
    folder.mkdir()
    for name in ("organizations", "providers"):
        shutil.copy(DATA / f"{name}.csv", folder / f"{name}.csv")
    keep = csv_rows(DATA, "patients")[0]["Id"]
    line = 0
    for table in TABLES:
        if table in ("organizations", "providers"):
            continue
        rows = csv_rows(DATA, table)
        column = "Id" if table == "patients" else "PATIENT"
        chosen = [r for r in rows if r[column] == keep]
        if table == "immunizations":
            chosen.append({**rows[0], "PATIENT": broken_patient})
            line = len(chosen) + 1  # after the header
        with (folder / f"{table}.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(chosen)
    return folder, line


def test_a_row_whose_patient_is_missing_is_reported_not_dropped(db: Database, tmp_path: Path) -> None:
    folder, line = small_copy(tmp_path, "00000000-no-such-patient")
    done = migrate(db, load_mapping("synthea"), folder, settings=platform_settings())
    immunizations = next(t for t in done.tables if t.table == "immunizations")
    assert immunizations.rejected == 1
    assert immunizations.read == immunizations.unchanged + immunizations.rejected
    [problem] = done.problems
    assert (problem.file, problem.line, problem.column) == ("immunizations.csv", line, "PATIENT")
    assert "00000000-no-such-patient" in problem.reason


def test_the_same_people_from_another_source_become_the_same_persons(db: Database, tmp_path: Path) -> None:
    """Another legacy system's export of the same patient: a record of its own (its own source
    key), which the patient index links to the person already there."""
    folder, _ = small_copy(tmp_path, "x")
    text = (Path(load_mapping("synthea").origin)).read_text(encoding="utf-8")
    other = compile_text(text.replace("\nsource: synthea\n", "\nsource: other-his\n"), origin="other.yaml")
    done = migrate(db, other, folder, settings=platform_settings())
    patients = next(t for t in done.tables if t.table == "patients")
    assert (patients.read, patients.written, patients.merged) == (1, 1, 1)
    kept = csv_rows(folder, "patients")[0]["Id"]
    records = [p for p in stored(db)["Patient"] if any(i["value"] == kept for i in p["identifier"])]
    assert len(records) == 2
    with db.engine.connect() as conn:
        persons = {
            r[0]
            for r in conn.execute(
                select(record_link.c.person_id).where(
                    record_link.c.patient_id.in_([p["id"] for p in records])
                )
            )
        }
    assert len(persons) == 1


LEGACY_MAPPING = """
source: legacy
encoding: gb18030
tables:
  people:
    resource: Patient
    file: people.csv
    key: PID
    elements:
      - {path: "name[0].text", column: NAME}
      - {path: gender, column: SEX, map: {"1": male, "2": female}, unmapped: keep}
      - {path: birthDate, column: DOB, format: "%Y%m%d"}
"""


def test_rows_the_server_refuses_or_that_do_not_read_are_reported(db: Database, tmp_path: Path) -> None:
    folder = tmp_path / "his"
    folder.mkdir()
    (folder / "people.csv").write_bytes(
        "PID,NAME,SEX,DOB\n"
        "a1,张伟,1,19800101\n"
        "a2,李娜,X,19810202\n"  # kept unmapped: not a FHIR gender, the server refuses it
        "a1,王芳,2,19820303\n"  # the key again
        "a3,刘洋,1\n"  # a field short
        "a4,陈静,2,1983-04-04\n".encode("gb18030")  # not %Y%m%d
    )
    done = migrate(db, compile_text(LEGACY_MAPPING), folder, settings=platform_settings())
    [people] = done.tables
    assert (people.read, people.written, people.rejected) == (5, 1, 4)
    by_line = {p.line: p for p in done.problems}
    assert sorted(by_line) == [3, 4, 5, 6]
    assert by_line[3].column == "SEX" and "refused by the server" in by_line[3].reason
    assert by_line[4].column == "PID" and "already used" in by_line[4].reason
    assert "3 fields; the header has 4" in by_line[5].reason
    assert by_line[6].column == "DOB" and "%Y%m%d" in by_line[6].reason
    [zhang] = [
        p for p in stored(db)["Patient"] if p["identifier"][-1]["system"] == "urn:yilian:source:legacy:people"
    ]
    assert zhang["name"] == [{"text": "张伟"}]
    assert zhang["birthDate"] == "1980-01-01"


@pytest.fixture(params=BACKENDS)
def fresh(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    database, token = new_database(request.param, tmp_path_factory.mktemp(request.param))
    yield database
    drop_database(request.param, database, token)


def test_the_command_prints_a_summary_and_writes_the_report(fresh: Database, tmp_path: Path) -> None:
    folder, line = small_copy(tmp_path, "no-such-patient")
    report = tmp_path / "out" / "problems.csv"
    run = yilian(
        "migrate", "synthea", folder, "--report", report, "--database", database_url(fresh),
        cwd=tmp_path, env={"COLUMNS": "200"},
    )  # fmt: skip
    assert run.code == 1, run.err  # some rows failed, the rest loaded
    assert "Migration summary" in run.out
    patients = next(line for line in run.out.splitlines() if "│ patients" in line)
    assert [c.strip() for c in patients.split("│")[1:-1]] == ["patients", "Patient", "1", "1", "0", "0", "0"]
    assert "immunizations.csv line" in run.err and "PATIENT" in run.err
    with report.open(newline="", encoding="utf-8") as fh:
        problems = list(csv.DictReader(fh))
    assert [(p["file"], p["line"], p["column"]) for p in problems] == [
        ("immunizations.csv", str(line), "PATIENT")
    ]
    assert "no-such-patient" in problems[0]["reason"]
    # One AuditEvent for the run, as the operator at the console: what was read, written, refused.
    [event] = audits(fresh, "migrate")
    assert re.fullmatch(
        rf"migrated \d+ rows of .+ from {re.escape(str(folder))}: \d+ resources written, 1 rows rejected",
        by_the_operator(event, "C"),
    )
    again = yilian(
        "migrate", "synthea", folder, "--database", database_url(fresh), cwd=tmp_path, env={"COLUMNS": "200"}
    )
    total = next(line for line in again.out.splitlines() if "total" in line)
    written = [c.strip() for c in total.split("│")[1:-1]][3]
    assert written == "0"
    assert len(audits(fresh, "migrate")) == 1  # the run that wrote nothing changed nothing to record


def test_a_mapping_that_does_not_fit_the_files_stops_before_writing(fresh: Database, tmp_path: Path) -> None:
    folder, _ = small_copy(tmp_path, "x")
    rows = csv_rows(folder, "encounters")
    with (folder / "encounters.csv").open("w", newline="", encoding="utf-8") as fh:
        renamed = [c if c != "PATIENT" else "PATIENTID" for c in rows[0]]
        writer = csv.writer(fh)
        writer.writerow(renamed)
        writer.writerows([list(r.values()) for r in rows])
    run = yilian("migrate", "synthea", folder, "--database", database_url(fresh), cwd=tmp_path)
    assert run.code == 2
    assert "encounters.csv has no column PATIENT" in " ".join(run.err.split())
    assert stored(fresh) == {}


def test_a_mapping_file_by_path_takes_a_changed_layout_and_the_progress_is_drawn(
    fresh: Database, tmp_path: Path
) -> None:
    """``yilian migrate PATH/TO/MAPPING.yaml DATA_DIR``: a legacy system whose encounters table
    names its columns otherwise needs a changed mapping file, not a code change."""
    folder, _ = small_copy(tmp_path, "x")
    immunizations = csv_rows(folder, "immunizations")[:-1]  # without small_copy's orphan row
    with (folder / "immunizations.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(immunizations[0]))
        writer.writeheader()
        writer.writerows(immunizations)
    rows = csv_rows(folder, "encounters")
    for table, column in (("organizations", "ORGANIZATION"), ("providers", "PROVIDER")):
        needed = [r for r in csv_rows(folder, table) if r["Id"] in {e[column] for e in rows}]
        with (folder / f"{table}.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(needed[0]))
            writer.writeheader()
            writer.writerows(needed)  # only the ones this patient's visits name: a quicker run
    renamed = {"PATIENT": "PATIENT_ID", "START": "BEGIN"}
    with (folder / "encounters.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([renamed.get(c, c) for c in rows[0]])
        writer.writerows([list(r.values()) for r in rows])
    text = Path(load_mapping("synthea").origin).read_text(encoding="utf-8")
    head, rest = text.split("\n  encounters:\n")
    block, tail = rest.split("\n  conditions:\n")
    block = block.replace("column: PATIENT,", "column: PATIENT_ID,").replace(
        "column: START,", "column: BEGIN,"
    )
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "his.yaml").write_text(
        f"{head}\n  encounters:\n{block}\n  conditions:\n{tail}", encoding="utf-8"
    )
    run = yilian(
        "migrate", "mappings/his.yaml", folder, "--database", database_url(fresh),
        cwd=tmp_path, env={"COLUMNS": "160"},
    )  # fmt: skip
    assert run.code == 0, run.err
    summary = {
        cells[0]: cells[1:] for line in run.out.splitlines() if (cells := re.findall(r"[^│┃\s]+", line))
    }
    assert summary["encounters"] == ["Encounter", str(len(rows)), str(len(rows)), "0", "0", "0"]
    # The progress on stderr: a finished bar per table, rows done of rows read.
    bars = {m[1]: m for m in re.finditer(r"^(\w+) → (\w+)\s+━+\s+(\d+)/(\d+)\s", run.err, re.MULTILINE)}
    assert set(bars) == set(TABLES)
    for table, rtype in TABLES.items():
        read = len(csv_rows(folder, table))
        assert (bars[table][2], bars[table][3], bars[table][4]) == (rtype, str(read), str(read)), table
    found = stored(fresh)
    patients = {p["id"]: source_key(p, "patients") for p in found["Patient"]}
    encounters = by_key(found["Encounter"], "encounters")
    for row in rows:
        e = encounters[row["Id"]]
        assert patients[e["subject"]["reference"].split("/")[1]] == row["PATIENT"]
        assert e["period"]["start"] == row["START"]
