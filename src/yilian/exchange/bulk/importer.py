"""``$import``: NDJSON files loaded through the batched write pipeline, as a background job.

Inputs are files the job holds (an NDJSON body sent with the kick-off is spooled into the
job's directory first, so a restart finds it) or files under the configured import
directory (``YILIAN_IMPORT_DIR``) named in a Parameters body. Files are read line by line in
chunks; each chunk is one transaction through :func:`write_many`. A line that is refused is
written to the job's error file as an OperationOutcome naming the file and line; the rest
loads. Resources refused only because what they refer to is not there yet (an export writes
``Claim.ndjson`` before ``Patient.ndjson``) are tried again after the files are through, as
long as each round loads something.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.exchange.bulk.jobs import Job
from yilian.fhir.access import AccessPolicy
from yilian.fhir.interactions.bulk_write import write_many
from yilian.fhir.interactions.context import FhirContext, FhirSettings
from yilian.kernel.errors import Category, YilianError

CHUNK = 500


@dataclass
class Line:
    file: str
    number: int
    text: bytes


@dataclass
class ImportOutcome:
    output: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    processed: int


@dataclass
class _Tally:
    loaded: dict[str, int] = field(default_factory=dict)
    refused: int = 0
    processed: int = 0


def read_lines(path: Path, label: str) -> Iterator[Line]:
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, start=1):
            text = raw.removeprefix(b"\xef\xbb\xbf") if n == 1 else raw
            if text.strip():
                yield Line(label, n, text)


def _missing_only(err: YilianError) -> bool:
    return (
        err.category is Category.UNPROCESSABLE
        and bool(err.issues)
        and all(i.code == "not-found" for i in err.issues)
    )


def _refusal(line: Line, message: str) -> bytes:
    doc = {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "processing",
                "diagnostics": f"{line.file} line {line.number}: {message}",
                "expression": [f"{line.file}:{line.number}"],
            }
        ],
    }
    return orjson.dumps(doc)


def load_lines(
    db: Database,
    ctx: FhirContext,
    lines: Iterator[Line],
    *,
    errors: IO[bytes],
    keep_going: Callable[[int], bool],
    chunk: int = CHUNK,
    id_seed: str | None = None,
) -> _Tally | None:
    """Load NDJSON lines; refusals go to ``errors``; None when stopped (cancelled).

    With ``id_seed``, a resource without an id gets one derived from the seed, its file and
    line: a job that is run again after a restart then updates what it already wrote
    instead of writing it twice.
    """
    tally = _Tally()
    later: list[tuple[Line, dict[str, Any], bytes]] = []

    def run(batch: list[tuple[Line, Any]], final: bool) -> None:
        docs = [orjson.loads(orjson.dumps(d)) for _l, d in batch]  # the writer owns what it writes

        def work(uow: UnitOfWork) -> list[YilianError | None]:
            return write_many(uow, ctx, docs)

        for (line, doc), err in zip(batch, transact(db, work), strict=True):
            if err is None:
                rtype = str(doc.get("resourceType"))
                tally.loaded[rtype] = tally.loaded.get(rtype, 0) + 1
            elif _missing_only(err) and not final:
                later.append((line, doc, line.text))
            else:
                tally.refused += 1
                errors.write(_refusal(line, err.message) + b"\n")

    batch: list[tuple[Line, Any]] = []
    for line in lines:
        tally.processed += 1
        try:
            doc = orjson.loads(line.text)
        except orjson.JSONDecodeError as exc:
            tally.refused += 1
            errors.write(_refusal(line, f"not JSON: {exc}") + b"\n")
            continue
        if not isinstance(doc, dict):
            tally.refused += 1
            errors.write(
                _refusal(line, f"not a FHIR resource (a JSON object) but a JSON {type(doc).__name__}") + b"\n"
            )
            continue
        if id_seed is not None and "id" not in doc:
            doc["id"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{id_seed}/{line.file}/{line.number}"))
        batch.append((line, doc))
        if len(batch) >= chunk:
            run(batch, final=False)
            batch = []
            if not keep_going(tally.processed):
                return None
    if batch:
        run(batch, final=False)
    # Rounds for what referred to resources not yet loaded: each loads what the last made possible.
    while later:
        pending, later[:] = list(later), []
        for start in range(0, len(pending), chunk):
            run([(ln, d) for ln, d, _t in pending[start : start + chunk]], final=False)
        if len(later) == len(pending):
            stuck, later[:] = list(later), []
            for start in range(0, len(stuck), chunk):
                run([(ln, d) for ln, d, _t in stuck[start : start + chunk]], final=True)
            break
        if not keep_going(tally.processed):
            return None
    return tally


def run_import_job(
    db: Database,
    job: Job,
    policy: AccessPolicy,
    settings: FhirSettings,
    directory: Path,
    *,
    keep_going: Callable[[int, int | None], bool],
) -> ImportOutcome | None:
    inputs: list[dict[str, str]] = job.params.get("inputs") or []
    ctx = FhirContext(base_url=job.params.get("base", "urn:yilian:import"), settings=settings, policy=policy)
    directory.mkdir(parents=True, exist_ok=True)
    error_path = directory / "errors.ndjson"

    def lines() -> Iterator[Line]:
        for spec in inputs:
            path = Path(spec["path"])
            if not path.is_file():
                raise YilianError(Category.NOT_FOUND, f"input {spec['name']} is no longer there")
            yield from read_lines(path, spec["name"])

    with error_path.open("wb") as errors:
        tally = load_lines(
            db, ctx, lines(), errors=errors, keep_going=lambda n: keep_going(n, None), id_seed=job.job_id
        )
    if tally is None:
        return None
    output = [{"type": t, "count": n} for t, n in sorted(tally.loaded.items())]
    errs = (
        [{"type": "OperationOutcome", "file": "errors.ndjson", "count": tally.refused}]
        if tally.refused
        else []
    )
    return ImportOutcome(output, errs, tally.processed)
