"""The ``yilian`` command, run as people run it: the installed command in a child process, on
both databases, with good input and bad.

Whatever goes wrong, the command says what in a line people can read and exits non-zero;
:func:`yilian` fails any test whose run prints a Python traceback.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.metadata
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, func, select, text

from tests.support.audit import audits, by_the_operator
from tests.support.databases import BACKENDS, PG_URL, drop_database, new_database
from tests.support.paths import ROOT, SHARED
from tests.support.server import RunningServer, database_url, free_port
from yilian.db import Database, open_database
from yilian.fhir.store.sealing import open_content
from yilian.fhir.store.tables import resource, resource_version
from yilian.migrations import head_revision

SYNTHEA = SHARED / "synthea-fhir-r4"
MS_NORMATIVE = SHARED / "fhir-server-peer-tests" / "microsoft-fhir-server" / "Normative"
EXECUTABLE = Path(sys.executable).with_name("yilian")
TOTAL_ROW = re.compile(r"total\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│")


# -- running the command ------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def yilian(*args: object, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> Run:
    """Run ``yilian ARGS`` as a user would; never a traceback, whatever happens."""
    command = [str(EXECUTABLE)] if EXECUTABLE.exists() else [sys.executable, "-m", "yilian.cli.main"]
    # The developer's own settings (a YILIAN_DATABASE_URL in the shell) must not leak in; the
    # test keys do (conftest), so the command and the test read each other's sealed data.
    keep = ("YILIAN_DATA_KEYS", "YILIAN_INDEX_KEY")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("YILIAN_") or k in keep}
    proc = subprocess.run(
        [*command, *(str(a) for a in args)],
        cwd=cwd,
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    for stream in (proc.stdout, proc.stderr):
        assert "Traceback" not in stream, f"yilian {args} printed a traceback:\n{stream}"
    return Run(proc.returncode, proc.stdout, proc.stderr)


def total_row(out: str) -> tuple[int, int, int]:
    """(read, written, failed) from the total row of the import summary."""
    m = TOTAL_ROW.search(out)
    assert m, f"no total row in:\n{out}"
    return int(m[1]), int(m[2]), int(m[3])


# -- databases ---------------------------------------------------------------------------------


@dataclass
class Target:
    backend: str
    db: Database

    @property
    def url(self) -> str:
        return database_url(self.db)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
def fresh(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A migrated, empty database of its own (commands here commit for real)."""
    db, token = new_database(backend, tmp_path_factory.mktemp(backend))
    yield Target(backend, db)
    drop_database(backend, db, token)


@pytest.fixture
def other(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """A second empty database on the same backend (the far end of a round trip)."""
    db, token = new_database(backend, tmp_path_factory.mktemp(backend))
    yield Target(backend, db)
    drop_database(backend, db, token)


@pytest.fixture
def unmigrated_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """The URL of a database with no schema at all: a SQLite file not there yet, an empty PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'new' / 'yilian.db'}"
        return
    schema = f"yl_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        PG_URL.replace("postgresql://", "postgresql+psycopg://", 1), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    admin.dispose()


def newest_revision() -> str | None:
    probe = open_database("sqlite://")  # the revision scripts only: no connection is made
    try:
        return head_revision(probe)
    finally:
        probe.dispose()


def counts(db: Database) -> dict[str, int]:
    stmt = (
        select(resource.c.res_type, func.count())
        .where(resource.c.deleted.is_(False))
        .group_by(resource.c.res_type)
    )
    with db.engine.connect() as conn:
        return {t: int(n) for t, n in conn.execute(stmt)}


def contents(db: Database) -> dict[tuple[str, str], Any]:
    """Every current resource, without what the server stamps on each write."""
    stmt = select(resource.c.res_type, resource.c.res_id, resource.c.content).where(
        resource.c.deleted.is_(False)
    )
    out: dict[tuple[str, str], Any] = {}
    with db.engine.connect() as conn:
        for rtype, rid, content in conn.execute(stmt):
            doc = orjson.loads(open_content(db.engine, bytes(content)) or b"{}")
            meta = doc.get("meta", {})
            meta.pop("versionId", None)
            meta.pop("lastUpdated", None)
            if not meta:
                doc.pop("meta", None)
            out[(rtype, rid)] = doc
    return out


def history_state(db: Database) -> tuple[int, int | None]:
    """How many versions exist and the newest write: unchanged means nothing was written."""
    with db.engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(resource_version)).scalar_one()
        newest = conn.execute(select(func.max(resource.c.last_updated))).scalar_one()
    return int(n), newest


def versions(db: Database) -> dict[tuple[str, str], int]:
    with db.engine.connect() as conn:
        return {
            (t, i): int(v)
            for t, i, v in conn.execute(select(resource.c.res_type, resource.c.res_id, resource.c.version))
        }


def smallest_synthea() -> dict[str, str]:
    """The MANIFEST row of the smallest Synthea bundle (its per-type counts are the expectations)."""
    with (SYNTHEA / "MANIFEST.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return min(rows, key=lambda r: int(r["entries"]))


MANIFEST_TYPES = (
    "Encounter",
    "Observation",
    "Immunization",
    "Condition",
    "Procedure",
    "Claim",
    "ExplanationOfBenefit",
    "MedicationRequest",
    "Organization",
    "Practitioner",
)


def import_synthea(target: Target, cwd: Path) -> dict[str, str]:
    row = smallest_synthea()
    run = yilian("import", SYNTHEA / row["file"], "--database", target.url, cwd=cwd)
    assert run.code == 0, run.err
    return row


# -- help and version ----------------------------------------------------------------------------


def _commands() -> list[tuple[list[str], Any]]:
    from typer.main import get_command

    from yilian.cli.main import app

    found: list[tuple[list[str], Any]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        found.append((path, cmd))
        for name, sub in sorted(getattr(cmd, "commands", {}).items()):
            walk(sub, [*path, name])

    walk(get_command(app), [])
    return found


COMMANDS = _commands()


def test_every_command_is_covered_here() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert names == {
        "",
        "serve",
        "demo",
        "import",
        "export",
        "migrate",
        "db",
        "db upgrade",
        "db current",
        "client",
        "client add",
        "client list",
        "client revoke",
        "client bind-cert",
        "client unbind-cert",
        "client hl7-senders",
        "user",
        "user add",
        "user list",
        "user revoke",
        "user unlock",
        "audit",
        "audit verify",
        "audit seal",
        "audit prune",
        "mpi",
        "mpi dedupe",
        "mpi link",
        "mpi train",
        "mpi reviews",
        "mpi accept",
        "mpi reject",
        "mpi merge",
        "mpi unmerge",
        "mpi counts",
        "card",
        "card issue",
        "card issue-batch",
        "card activate",
        "card report-lost",
        "card replace",
        "card suspend",
        "card resume",
        "card revoke",
        "card show",
        "card counts",
        "keys",
        "keys status",
        "keys rotate",
        "keys reencrypt",
        "keys retire",
        "mllp",
        "exchange",
        "exchange dead-letters",
        "exchange replay",
        "exchange outbox",
        "exchange skip",
        "exchange deliver",
        "exchange forward",
        "exchange prune-outbox",
        "exchange prune-inbox",
        "exchange recover",
        "payments",
        "payments close-day",
        "payments day",
        "payments payout",
        "payments bank-statement",
        "payments wallet",
        "payments statement",
        "payments trial-balance",
        "payments expire-holds",
        "payments publish",
        "payments publication",
        "payments policies",
    }


@pytest.mark.parametrize(
    "path,command", [pytest.param(p, c, id=" ".join(p) or "yilian") for p, c in COMMANDS]
)
def test_help_of_every_command(path: list[str], command: Any, tmp_path: Path) -> None:
    wide = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}  # one line per option: texts can be searched
    run = yilian(*path, "--help", cwd=tmp_path, env=wide)
    assert run.code == 0, run.err
    flat = " ".join(run.out.split())
    assert f"Usage: yilian {' '.join(path)}".strip() in flat
    summary = " ".join((command.help or "").split("\n\n")[0].split())
    assert summary and summary in flat, f"the help does not show the command's description {summary!r}"
    for param in command.params:
        for name in (
            [*param.opts, *getattr(param, "secondary_opts", [])]
            if param.param_type_name == "option"
            else [param.name]
        ):
            assert name in flat, f"yilian {' '.join(path)} --help does not mention {name}"
        if param.param_type_name == "option" and param.name != "help":
            assert (param.help or "").split(".")[0] in flat
    assert list(tmp_path.iterdir()) == [], "--help must not touch anything (no yilian.db created)"


def test_the_readme_describes_commands_that_exist() -> None:
    """Each `yilian …` in README.md's command table is a command with the options it shows."""
    by_path = {" ".join(path): cmd for path, cmd in COMMANDS}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    usages = re.findall(
        r"`(yilian [^`]+)`", "\n".join(line for line in readme.splitlines() if line.startswith("| `yilian"))
    )
    assert usages
    for usage in usages:
        words = usage.split()[1:]
        # The command path: lower-case words (hyphens allowed, as in prune-outbox) up to the first option or argument.
        is_name = [w[:1].isalpha() and w.replace("-", "").isalpha() and w.islower() for w in words]
        path = " ".join(words[: next((i for i, ok in enumerate(is_name) if not ok), len(words))])
        assert path in by_path, f"README mentions `{usage}` but there is no `yilian {path}`"
        opts = {o for p in by_path[path].params for o in [*p.opts, *getattr(p, "secondary_opts", [])]}
        for option in re.findall(r"--[a-z][a-z0-9-]*", usage):
            assert option in opts, f"README shows `{usage}` but `yilian {path}` has no {option}"


def test_version(tmp_path: Path) -> None:
    run = yilian("--version", cwd=tmp_path)
    assert run.code == 0
    assert run.out.strip() == f"yilian {importlib.metadata.version('yilian')}"


@pytest.mark.parametrize(
    "args,says",
    [
        (["frobnicate"], "No such command"),
        (["import"], "Missing argument"),
        (["demo", "--residents", "5", "--no-serve"], "--residents"),
        (["export", "--unknown-option"], "No such option"),
    ],
    ids=["unknown command", "missing argument", "out of range", "unknown option"],
)
def test_usage_errors_are_readable(args: list[str], says: str, tmp_path: Path) -> None:
    run = yilian(*args, cwd=tmp_path)
    assert run.code == 2
    assert says in run.err
    assert list(tmp_path.iterdir()) == []


# -- the database --------------------------------------------------------------------------------


def test_db_upgrade_is_idempotent_and_current_tells(
    backend: str, unmigrated_url: str, tmp_path: Path
) -> None:
    head = newest_revision()
    before = yilian("db", "current", "--database", unmigrated_url, cwd=tmp_path)
    if backend == "sqlite":
        assert before.code == 2 and "there is no database file" in before.err  # and none is created
        assert not (tmp_path / "new").exists()
    else:
        assert (
            before.code == 0
            and "current: (empty database)" in before.out
            and "needs `yilian db upgrade`" in before.out
        )

    first = yilian("db", "upgrade", "--database", unmigrated_url, cwd=tmp_path)
    assert first.code == 0, first.err
    assert f"upgraded from (empty) to revision {head}" in " ".join(first.out.split())
    again = yilian("db", "upgrade", "--database", unmigrated_url, cwd=tmp_path)
    assert again.code == 0, again.err
    assert f"is at revision {head} (newest); nothing to do" in " ".join(again.out.split())

    now = yilian("db", "current", "--database", unmigrated_url, cwd=tmp_path)
    assert now.code == 0
    assert re.search(rf"current: {head}\s+newest: {head}\s+— up to date", now.out)


def test_database_comes_from_the_environment_else_yilian_db(tmp_path: Path) -> None:
    """What `--database`'s help says: $YILIAN_DATABASE_URL, else sqlite:///yilian.db."""
    elsewhere = tmp_path / "env" / "from-env.db"
    run = yilian("db", "upgrade", cwd=tmp_path, env={"YILIAN_DATABASE_URL": f"sqlite:///{elsewhere}"})
    assert run.code == 0, run.err
    assert elsewhere.exists() and not (tmp_path / "yilian.db").exists()
    run = yilian("db", "upgrade", cwd=tmp_path)
    assert run.code == 0, run.err
    assert (tmp_path / "yilian.db").exists()


# -- import --------------------------------------------------------------------------------------


def test_import_a_synthea_transaction_bundle(fresh: Target, tmp_path: Path) -> None:
    row = smallest_synthea()
    run = yilian("import", SYNTHEA / row["file"], "--database", fresh.url, cwd=tmp_path)
    assert run.code == 0, run.err
    entries = int(row["entries"])
    assert total_row(run.out) == (entries, entries, 0)
    found = counts(fresh.db)
    assert found["Patient"] == 1
    for rtype in MANIFEST_TYPES:
        assert found.get(rtype, 0) == int(row[rtype]), rtype
    assert sum(found.values()) == entries
    # The progress bar is on stderr; standard output holds the summary only.
    assert "导入 imported" in run.err and "导入 imported" not in run.out
    assert "导入结果 Import summary" in run.out
    # One AuditEvent for the whole load, as the operator at the console.
    [event] = audits(fresh.db, "import")
    assert (
        by_the_operator(event, "C")
        == f"imported {entries} resources from 1 of 1 file(s) ({entries} read, 0 failed)"
    )


def _ms_templates() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(MS_NORMATIVE.glob("Import-*.ndjson"))}


def test_import_microsoft_ndjson_templates_as_they_are(fresh: Target, tmp_path: Path) -> None:
    """The files are templates: every id is a ``##PatientID##``-style placeholder that Microsoft's
    import tests replace with fresh GUIDs. As they are, no line is a valid resource — each is
    refused with its line and the reason, and nothing is written."""
    templates = _ms_templates()
    assert set(re.findall(r"##(\w+)##", "".join(templates.values()))) == {"PatientID", "ObservationID"}
    lines = sum(1 for t in templates.values() for line in t.splitlines() if line.strip())
    run = yilian(
        "import", *(MS_NORMATIVE / name for name in templates), "--database", fresh.url, cwd=tmp_path
    )
    assert run.code == 1
    assert total_row(run.out) == (lines, 0, lines)
    assert "line 1: id '##PatientID##' is not a valid FHIR id" in run.err
    assert "line 4: id '##PatientID##' is not a valid FHIR id" in run.err  # Import-Patient.ndjson's last
    assert counts(fresh.db) == {}


# The templates' patients refer to Organization/1 and Patient/pat2, which no file provides (the
# Microsoft server does not check references): loaded as a deployment that must accept
# references to resources it does not hold is set up.
LENIENT = {"YILIAN_REFERENTIAL_INTEGRITY": "off"}


def _fill_templates(folder: Path) -> str:
    """Copies with the placeholders filled as Microsoft's tests fill them (a new GUID each), in a
    folder with a subfolder and a file that is not FHIR; the Observation is about the patient of
    the single-patient template. Returns that patient's id."""
    templates = _ms_templates()
    patient_id = uuid.uuid4().hex
    (folder / "patients").mkdir(parents=True)
    (folder / "README.txt").write_text("not FHIR: import skips it\n", encoding="utf-8")
    (folder / "patients" / "Import-Patient.ndjson").write_text(
        re.sub("##PatientID##", lambda _: uuid.uuid4().hex, templates["Import-Patient.ndjson"]),
        encoding="utf-8",
    )
    (folder / "patients" / "Import-SinglePatientTemplate.ndjson").write_text(
        templates["Import-SinglePatientTemplate.ndjson"].replace("##PatientID##", patient_id),
        encoding="utf-8",
    )
    # Sorts before patients/: the Observation arrives before the Patient it refers to.
    (folder / "Import-Observation.ndjson").write_text(
        templates["Import-Observation.ndjson"]
        .replace("##ObservationID##", uuid.uuid4().hex)
        .replace("##PatientID##", patient_id),
        encoding="utf-8",
    )
    return patient_id


def test_import_a_folder_of_filled_templates_then_again(fresh: Target, tmp_path: Path) -> None:
    folder = tmp_path / "ms"
    patient_id = _fill_templates(folder)
    strict = yilian("import", folder, "--database", fresh.url, cwd=tmp_path)
    assert strict.code == 1
    assert "reference to a resource that does not exist: Organization/1" in strict.err
    assert total_row(strict.out) == (
        6,
        0,
        6,
    )  # each patient refers to one of them; the Observation to a patient
    assert counts(fresh.db) == {}

    run = yilian("import", folder, "--database", fresh.url, cwd=tmp_path, env=LENIENT)
    assert run.code == 0, run.err
    assert total_row(run.out) == (6, 6, 0)
    assert counts(fresh.db) == {"Patient": 5, "Observation": 1}
    (obs,) = [doc for (t, _), doc in contents(fresh.db).items() if t == "Observation"]
    assert obs["subject"]["reference"] == f"Patient/{patient_id}"
    before = versions(fresh.db)

    # The resources have ids: importing them again updates them and creates nothing.
    again = yilian("import", folder, "--database", fresh.url, cwd=tmp_path, env=LENIENT)
    assert again.code == 0, again.err
    assert total_row(again.out) == (6, 6, 0)
    assert counts(fresh.db) == {"Patient": 5, "Observation": 1}
    assert versions(fresh.db) == {key: v + 1 for key, v in before.items()}


def test_import_reports_every_bad_resource_and_loads_the_rest(fresh: Target, tmp_path: Path) -> None:
    lines = [
        b'{"resourceType":"Patient","id":"good-1","gender":"female"}',
        b'{"resourceType":"Patient","id":"broken",',
        b'{"resourceType":"Patient","id":"bad-gender","gender":"purple"}',
        b"[1, 2, 3]",
        b'{"resourceType":"Patient","id":"good-2","birthDate":"1980-01-01"}',
    ]
    data = tmp_path / "mixed.ndjson"
    data.write_bytes(b"\n".join(lines) + b"\n")
    run = yilian("import", data, "--database", fresh.url, cwd=tmp_path)
    assert run.code == 1
    assert total_row(run.out) == (5, 2, 3)
    errors = [line for line in run.err_lines if line.startswith("✗")]
    assert len(errors) == 3, run.err
    assert "mixed.ndjson line 2: not JSON" in errors[0]
    assert "mixed.ndjson line 3:" in errors[1] and "purple" in errors[1] and "Patient.gender" in errors[1]
    assert "mixed.ndjson line 4: not a FHIR resource" in errors[2]
    assert counts(fresh.db) == {"Patient": 2}


def test_import_refuses_a_nul_character_on_both_databases_with_the_element_named(
    fresh: Target, tmp_path: Path
) -> None:
    """PostgreSQL cannot hold U+0000 in text and SQLite would: the validator refuses it first."""
    data = tmp_path / "nul.ndjson"
    data.write_bytes(
        b'{"resourceType":"Patient","id":"nul-name","name":[{"family":"\\u738b\\u0000"}]}\n'
        b'{"resourceType":"Patient","id":"fine","name":[{"family":"\\u738b"}]}\n'
    )
    run = yilian("import", data, "--database", fresh.url, cwd=tmp_path)
    assert run.code == 1
    assert total_row(run.out) == (2, 1, 1)
    errors = [line for line in run.err_lines if line.startswith("✗")]
    assert len(errors) == 1 and "nul.ndjson line 1:" in errors[0], run.err
    assert "NUL character" in errors[0] and "Patient.name[0].family" in errors[0], run.err
    assert "Traceback" not in run.err
    assert counts(fresh.db) == {"Patient": 1}


def test_import_a_transaction_that_fails_loads_none_of_it(fresh: Target, tmp_path: Path) -> None:
    """Microsoft's roll-back bundle (UTF-8 BOM and all): POST a Patient, then GET one that is absent."""
    run = yilian("import", MS_NORMATIVE / "Bundle-TransactionForRollBack.json", "-d", fresh.url, cwd=tmp_path)
    assert run.code == 1
    assert total_row(run.out) == (2, 0, 2)  # all or nothing: both entries count as not loaded
    assert "Bundle.entry[1] (GET Patient/12345)" in run.err
    assert counts(fresh.db) == {}


def test_import_a_path_that_does_not_exist(tmp_path: Path) -> None:
    run = yilian(
        "import", tmp_path / "nowhere.ndjson", "--database", f"sqlite:///{tmp_path / 'x.db'}", cwd=tmp_path
    )
    assert run.code == 2
    assert run.err_lines == [f"错误 error: {tmp_path / 'nowhere.ndjson'} does not exist"]
    assert run.out == ""


# -- export --------------------------------------------------------------------------------------


def _ndjson(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def test_export_to_a_folder_one_file_per_type(fresh: Target, tmp_path: Path) -> None:
    import_synthea(fresh, tmp_path)
    expected = counts(fresh.db)
    run = yilian("export", "--out", tmp_path / "all", "--database", fresh.url, cwd=tmp_path)
    assert run.code == 0, run.err
    files = {p.name: _ndjson(p) for p in (tmp_path / "all").iterdir()}
    assert set(files) == {f"{t}.ndjson" for t in expected}
    for rtype, n in expected.items():
        docs = files[f"{rtype}.ndjson"]
        assert len(docs) == n
        assert {d["resourceType"] for d in docs} == {rtype}
    assert re.search(rf"total\s*│\s*{sum(expected.values())}\s*│", run.out)
    [event] = audits(fresh.db, "export")
    assert (
        by_the_operator(event, "E")
        == f"exported {sum(expected.values())} resources (every type) to {tmp_path / 'all'}"
    )

    some = yilian(
        "export", "--type", "Patient,Observation", "-o", tmp_path / "some", "-d", fresh.url, cwd=tmp_path
    )
    assert some.code == 0, some.err
    assert sorted(p.name for p in (tmp_path / "some").iterdir()) == ["Observation.ndjson", "Patient.ndjson"]
    assert len(_ndjson(tmp_path / "some" / "Observation.ndjson")) == expected["Observation"]
    assert by_the_operator(audits(fresh.db, "export")[-1], "E").startswith(
        f"exported {expected['Patient'] + expected['Observation']} resources (types Patient, Observation) to "
    )


def test_export_since_an_instant(fresh: Target, tmp_path: Path) -> None:
    import_synthea(fresh, tmp_path)
    time.sleep(0.01)
    cut = dt.datetime.now(dt.UTC)
    time.sleep(0.01)
    (patient,) = [doc for (t, _), doc in contents(fresh.db).items() if t == "Patient"]
    patient["active"] = False
    changed = tmp_path / "changed.ndjson"
    changed.write_bytes(orjson.dumps(patient) + b"\n")
    assert yilian("import", changed, "-d", fresh.url, cwd=tmp_path).code == 0

    since = cut.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    run = yilian("export", "--since", since, "-o", tmp_path / "since", "-d", fresh.url, cwd=tmp_path)
    assert run.code == 0, run.err
    assert [p.name for p in (tmp_path / "since").iterdir()] == ["Patient.ndjson"]
    (exported,) = _ndjson(tmp_path / "since" / "Patient.ndjson")
    assert exported["id"] == patient["id"] and exported["active"] is False

    # A date is the whole day: everything written today.
    today = yilian("export", "--since", cut.date().isoformat(), "-o", "-", "-d", fresh.url, cwd=tmp_path)
    assert len(today.out.splitlines()) == sum(counts(fresh.db).values())


def test_export_to_standard_output(fresh: Target, tmp_path: Path) -> None:
    import_synthea(fresh, tmp_path)
    run = yilian("export", "-o", "-", "-d", fresh.url, cwd=tmp_path)
    assert run.code == 0, run.err
    docs = [orjson.loads(line) for line in run.out.splitlines()]  # nothing but NDJSON
    assert len(docs) == sum(counts(fresh.db).values())
    assert "导出结果 Export to standard output" in run.err  # the summary goes to stderr
    assert not (tmp_path / "export").exists()


def test_export_then_import_into_an_empty_database_gives_the_same_resources(
    fresh: Target, other: Target, tmp_path: Path
) -> None:
    demo = yilian("demo", "--no-serve", "--residents", "10", "-d", fresh.url, cwd=tmp_path)
    assert demo.code == 0, demo.err
    import_synthea(fresh, tmp_path)
    assert yilian("export", "-o", tmp_path / "out", "-d", fresh.url, cwd=tmp_path).code == 0

    # One file per type, in name order: Claim.ndjson comes before the Patient its claims are about.
    run = yilian("import", tmp_path / "out", "-d", other.url, cwd=tmp_path)
    assert run.code == 0, run.err
    n = sum(counts(fresh.db).values())
    assert total_row(run.out) == (n, n, 0)
    assert contents(other.db) == contents(fresh.db)


def test_import_resources_that_refer_to_each_other_in_a_cycle(fresh: Target, tmp_path: Path) -> None:
    """Neither can be written first: they are written together, references checked at the end."""
    a = {
        "resourceType": "Patient",
        "id": "twin-a",
        "link": [{"other": {"reference": "Patient/twin-b"}, "type": "seealso"}],
    }
    b = {
        "resourceType": "Patient",
        "id": "twin-b",
        "link": [{"other": {"reference": "Patient/twin-a"}, "type": "seealso"}],
    }
    dangling = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "x"},
        "subject": {"reference": "Patient/absent"},
    }
    path = tmp_path / "cycle.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in (a, b, dangling)) + b"\n")
    run = yilian("import", path, "-d", fresh.url, cwd=tmp_path)
    assert run.code == 1
    assert total_row(run.out) == (3, 2, 1)
    assert "line 3: reference to a resource that does not exist: Patient/absent" in run.err
    assert counts(fresh.db) == {"Patient": 2}


# -- demo and serve ------------------------------------------------------------------------------


def test_demo_creates_the_region_once(backend: str, fresh: Target, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo' / 'demo.db'}" if backend == "sqlite" else fresh.url
    first = yilian("demo", "--no-serve", "--residents", "20", "--database", url, cwd=tmp_path)
    assert first.code == 0, first.err
    m = re.search(r"total\s*│\s*(\d+)\s*│", first.out)
    assert m and "示范区域 Demo region" in first.out
    db = open_database(url)
    try:
        assert sum(counts(db).values()) == int(m[1]) > 0
        assert counts(db)["Patient"] >= 20
        assert_demo_cards_are_the_card_systems(db)
        books = assert_demo_cards_have_paid(db, first.out)
        state = history_state(db)

        second = yilian("demo", "--no-serve", "--residents", "20", "--database", url, cwd=tmp_path)
        assert second.code == 0, second.err
        assert "the demo region is not loaded again" in " ".join(second.out.split())
        assert history_state(db) == state
        assert ledger_state(db) == books
    finally:
        db.dispose()


def assert_demo_cards_are_the_card_systems(db: Database) -> None:
    """The demo's residents hold cards the card system issued: active, each number on its
    holder's Patient record and resolving at the front desk to that record."""
    from yilian.api.wiring import install_keys
    from yilian.card import card_counts, resolve
    from yilian.db.uow import read
    from yilian.fhir import FhirContext, FhirRequest, dispatch
    from yilian.kernel import naming

    install_keys(db)
    ctx = FhirContext(base_url="http://testserver/fhir")
    with read(db) as uow:
        tally = card_counts(uow)
        assert tally.by_status.get("active", 0) >= 10  # of 20 residents, most hold one
        assert set(tally.by_status) == {"active"}
        found = dispatch(uow, ctx, FhirRequest("GET", "Patient", query=[("_count", "500")]))
        bundle = orjson.loads(found.body or b"")
        on_records = {
            i["value"]: e["resource"]["id"]
            for e in bundle["entry"]
            for i in e["resource"].get("identifier", [])
            if i["system"] == naming.HEALTH_CARD
        }
        assert len(on_records) == tally.by_status["active"]
        for card_no, patient_id in on_records.items():
            assert resolve(uow, ctx, card_no, front_desk=True).card.patient_id == patient_id


def ledger_state(db: Database) -> tuple[int, int, int]:
    from yilian.payments import tables as pay

    with db.engine.connect() as conn:
        return (
            conn.execute(select(func.count()).select_from(pay.txn)).scalar_one(),
            conn.execute(select(func.count()).select_from(pay.posting)).scalar_one(),
            conn.execute(select(func.count()).select_from(pay.charge)).scalar_one(),
        )


def assert_demo_cards_have_paid(db: Database, out: str) -> tuple[int, int, int]:
    """The demo's cards have been used as a region's would be: wallets topped up, charges paid at
    member institutions with the insurer's share taken by the Coverage in the record, the books
    balanced and no wallet below zero; the summary printed says what the ledger holds."""
    from yilian import payments
    from yilian.card.tables import card as card_table
    from yilian.db.uow import read
    from yilian.demo import DEMO_AS_OF
    from yilian.payments import tables as pay

    with read(db) as uow:
        assert payments.trial_balance(uow).balanced
        # Booked on the demo's own day, whatever the date of the run, and cleared that night.
        day = payments.day_report(uow, day=DEMO_AS_OF)
        assert day["status"] == "closed" and day["reconciliation"]["reconciled"] and day["lines"]
        charges = uow.conn.execute(
            select(
                pay.charge.c.total_fen,
                pay.charge.c.insurer_fen,
                pay.charge.c.aid_fen,
                pay.charge.c.self_pay_fen,
            )
        ).all()
        wallets = (
            uow.conn.execute(select(pay.account.c.balance).where(pay.account.c.account_id.like("wallet:%")))
            .scalars()
            .all()
        )
        # Every card was issued (that morning) before it was first used.
        first_used = uow.conn.execute(select(func.min(pay.txn.c.at))).scalar_one()
        last_issued = uow.conn.execute(select(func.max(card_table.c.issued_at))).scalar_one()
        days = uow.conn.execute(select(pay.charge.c.business_date).distinct()).scalars().all()
        cards = uow.conn.execute(select(func.count()).select_from(card_table)).scalar_one()
    assert last_issued < first_used and days == [DEMO_AS_OF.isoformat()]
    # Issuing and using the cards is the operator's act too: an AuditEvent each chunk, in its
    # transaction, naming the residents, and together they account for every card and charge.
    issued = [by_the_operator(row, "C") for row in audits(db, "card-issue-batch")]
    used_rows = audits(db, "payment-demo-day")
    used = [by_the_operator(row, "C") for row in used_rows]
    assert sum(int(re.search(r"(\d+) cards issued", d)[1]) for d in issued) == cards  # type: ignore[index]
    assert sum(int(re.search(r"(\d+) charges", d)[1]) for d in used) == len(charges)  # type: ignore[index]
    assert sum(len(row.patient_keys) for row in used_rows) == cards
    # The close is the operator's act, audited as `yilian payments close-day` audits it.
    (closing,) = audits(db, "payment-close-day")
    assert by_the_operator(closing, "C").startswith(f"closed business day {DEMO_AS_OF}:")
    assert charges and all(t == i + a + s for t, i, a, s in charges)
    assert sum(i for _, i, _, _ in charges) > 0  # reimbursed on the spot, not all paid out of pocket
    assert wallets and min(wallets) >= 0
    flat = " ".join(out.split())
    assert "一卡通 Card payments" in flat
    assert f"/api/settlement/days/{DEMO_AS_OF}" in flat  # where to look, printed with the logins
    printed = re.search(r"诊间结算 charges\s*│\s*(\d+)\s*│\s*¥([\d,]+\.\d\d)", out)
    assert printed, out
    assert int(printed[1]) == len(charges)
    assert printed[2].replace(",", "") == f"{sum(t for t, _, _, _ in charges) / 100:.2f}"
    assert re.search(rf"日终清算 clearing batch lines\s*│\s*{len(day['lines'])}\s*│", out), out
    return ledger_state(db)


def test_serve_serves_what_its_help_says(fresh: Target) -> None:
    with RunningServer(fresh.url) as srv:
        assert httpx.get(f"{srv.base}/").status_code == 200
        assert httpx.get(f"{srv.base}/fhir/metadata").json()["resourceType"] == "CapabilityStatement"


@pytest.mark.parametrize(
    "args,says",
    [
        (["--database", "postgresql://postgres@127.0.0.1:{port}/yilian"], "Connection refused"),
        (
            ["--no-upgrade", "--database", "postgresql://postgres@127.0.0.1:{port}/yilian"],
            "Connection refused",
        ),
        (["--database", "not a database url"], "not a database URL"),
        (["--database", "mysql://root@localhost/yilian"], "Yilian runs on SQLite or PostgreSQL"),
    ],
    ids=["unreachable", "unreachable without upgrade", "malformed", "unsupported"],
)
def test_serve_with_an_unusable_database_says_so_in_one_line(
    args: list[str], says: str, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    run = yilian(
        "serve", "--port", free_port(), *(a.format(port=port) for a in args), cwd=tmp_path, timeout=60
    )
    assert run.code != 0
    assert len(run.err_lines) == 1, run.err
    assert run.err_lines[0].startswith("错误 error:") and says in run.err_lines[0]


@pytest.mark.skipif("postgresql" not in BACKENDS, reason="needs the PostgreSQL server")
def test_serve_with_a_database_that_does_not_exist(tmp_path: Path) -> None:
    url = PG_URL.rsplit("/", 1)[0] + f"/yilian_absent_{uuid.uuid4().hex[:8]}"
    run = yilian("serve", "--port", free_port(), "--database", url, cwd=tmp_path, timeout=60)
    assert run.code != 0
    assert len(run.err_lines) == 1 and "does not exist" in run.err_lines[0]


# -- bad input anywhere --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,says",
    [
        (["export", "--type", "Patient,Frobnication"], "unknown resource type 'Frobnication'"),
        (["export", "--since", "last tuesday"], "--since must be a FHIR date or instant"),
        (["export", "--out", "{tmp}/a-file/sub"], "Not a directory"),
        (["import", "{tmp}/empty"], "no .json or .ndjson files"),
        (["db", "upgrade", "--database", "sqlite:///{tmp}/a-file/x.db"], "cannot open the database"),
        (
            ["db", "current", "--database", "postgresql://postgres@127.0.0.1:{port}/yilian"],
            "Connection refused",
        ),
        (["import", "{tmp}/empty", "--database", "nonsense"], "not a database URL"),
    ],
    ids=[
        "export type",
        "export since",
        "export out",
        "import empty folder",
        "upgrade unwritable",
        "current unreachable",
        "import bad url",
    ],
)
def test_bad_input_gets_a_readable_message(args: list[str], says: str, fresh: Target, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("a file, not a folder\n", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    filled = [a.format(tmp=tmp_path, port=free_port()) for a in args]
    if "--database" not in filled:
        filled += ["--database", fresh.url]
    run = yilian(*filled, cwd=tmp_path, timeout=120)
    assert run.code == 2
    assert len(run.err_lines) == 1, run.err
    assert run.err_lines[0].startswith("错误 error:") and says in run.err_lines[0], run.err
