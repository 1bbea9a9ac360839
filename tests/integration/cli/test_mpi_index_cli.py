"""``yilian mpi`` on the live index: the review queue, decisions, merge/unmerge, counts, train —
against a database on both backends, as a data steward runs them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.support.audit import audits, by_the_operator
from tests.support.chinese_people import generate
from tests.support.databases import BACKENDS, drop_database, new_database
from tests.support.fhir_calls import call
from tests.support.server import database_url
from yilian.api.wiring import platform_settings
from yilian.cli.main import app
from yilian.db import Database, UnitOfWork
from yilian.fhir import FhirContext
from yilian.kernel import naming
from yilian.mpi import list_reviews, person_of

runner = CliRunner()


@pytest.fixture(params=BACKENDS)
def fresh(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Database]:
    db, token = new_database(request.param, tmp_path)
    yield db
    drop_database(request.param, db, token)


def _patient(family: str, given: str, birth: str, mrn: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": family, "given": [given]}],
        "birthDate": birth,
        "gender": "female",
        "identifier": [{"system": naming.mrn_system(mrn[0]), "value": mrn[1]}],
        **extra,
    }


def _seed(db: Database, bodies: list[dict[str, Any]]) -> list[str]:
    ctx = FhirContext(settings=platform_settings())
    out = []
    with UnitOfWork(db, write=True) as uow:
        for body in bodies:
            r = call(uow, ctx, "POST", "Patient", body)
            assert r.status == 201, r
            out.append(r.json["id"])
        uow.commit()
    return out


def run(*args: str) -> Any:
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "80"})


def flat(text: str) -> str:
    """The output with line breaks folded to spaces (messages wrap at the terminal's width)."""
    return " ".join(text.split())


def test_steward_works_the_queue_and_merges_from_the_command_line(fresh: Database) -> None:
    url = database_url(fresh)
    a, b, c = _seed(
        fresh,
        [
            _patient(
                "陈", "静", "1985-03-04", ("H1", "1"), telecom=[{"system": "phone", "value": "13700002222"}]
            ),
            _patient("陈", "静", "1985-04-03", ("H2", "2"), address=[{"district": "南湖区"}]),
            _patient("司马", "光", "1950-01-01", ("H2", "3")),
        ],
    )
    listed = run("mpi", "reviews", "--database", url)
    assert listed.exit_code == 0, listed.output
    with UnitOfWork(fresh) as uow:
        [review] = [r for r in list_reviews(uow)[0] if r.patient_id == b]
    assert review.review_id in listed.output
    refused = run("mpi", "accept", review.review_id, "--database", url)
    assert refused.exit_code == 2 and "--reason" in refused.output
    accepted = run("mpi", "accept", review.review_id, "--reason", "same person, date typo", "--database", url)
    assert accepted.exit_code == 0, accepted.output
    with UnitOfWork(fresh) as uow:
        assert person_of(uow, a) == person_of(uow, b)
        pa, pc = person_of(uow, a), person_of(uow, c)
    merged = run("mpi", "merge", pc, pa, "--reason", "checked at the card office", "--database", url)
    assert merged.exit_code == 0, merged.output
    event = re.search(r"unmerge \S+ (\S+)", flat(merged.output))
    assert event
    counts = run("mpi", "counts", "--database", url)
    # One person left; two merged away (b's own person when the review was accepted, and c's).
    assert re.search(r"│ persons\s*│\s*1\b", counts.output) and re.search(
        r"merged persons\s*│\s*2\b", counts.output
    )
    undone = run("mpi", "unmerge", pc, event[1], "--reason", "wrong resident", "--database", url)
    assert undone.exit_code == 0 and "1 record" in flat(undone.output)
    again = run("mpi", "unmerge", pc, event[1], "--reason", "wrong resident", "--database", url)
    assert again.exit_code == 2 and "already undone" in flat(again.output)

    # Listing the queue is a read of the patients in it: recorded, with them.
    (listing,) = audits(fresh, "mpi-reviews")
    assert by_the_operator(listing, "R").endswith("open reviews listed at the console")
    assert b in listing.patient_keys
    # Every change is audited as the operator, with the records it touched; refusals change nothing.
    (accept,) = audits(fresh, "mpi-review-accept")
    assert f"review {review.review_id} accepted: Patient/{b} is person" in by_the_operator(accept, "U")
    assert accept.patient_keys == (b,) and accept.entity == f"mpi/reviews/{review.review_id}"
    (merge,) = audits(fresh, "mpi-merge")
    assert by_the_operator(merge, "U") == f"merged person {pc} into {pa} (event {event[1]})"
    assert set(merge.patient_keys) == {a, b, c} and merge.entity == f"Person/{pc}"
    (unmerge,) = audits(fresh, "mpi-unmerge")
    assert f"undid merge {event[1]}" in by_the_operator(unmerge, "U") and unmerge.patient_keys == (c,)


def test_train_needs_records_then_stores_a_model(fresh: Database) -> None:
    url = database_url(fresh)
    too_few = run("mpi", "train", "--database", url)
    assert too_few.exit_code != 0 and "at least 50" in flat(too_few.output)
    people = [lr.record for lr in generate(60, seed=5).records[:70]]
    _seed(
        fresh,
        [
            {
                "resourceType": "Patient",
                "name": [{"family": r.family_name, "given": [r.given_name]}]
                if r.family_name
                else [{"text": r.full_name}],
                "birthDate": r.birth_date.isoformat() if r.birth_date else None,
                "gender": r.sex,
            }
            for r in people
        ],
    )
    assert audits(fresh, "mpi-train") == []  # refused: nothing stored, nothing recorded
    trained = run("mpi", "train", "--database", url)
    assert trained.exit_code == 0, trained.output
    learned = re.search(r"model (\S+) learned from (\d+) records", flat(trained.output))
    assert learned
    (row,) = audits(fresh, "mpi-train")
    said = by_the_operator(row, "C")
    assert said == f"match model {learned[1]} learned from {learned[2]} records; it is now in use"


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("YILIAN_MPI_CERTAIN", "high", "YILIAN_MPI_CERTAIN must be a probability between 0 and 1"),
        ("YILIAN_MPI_POSSIBLE", "0.99", "1 >= certain >= probable >= possible >= 0"),
    ],
)
def test_a_bad_match_threshold_stops_the_server_at_start_with_its_reason(
    tmp_path: Any, name: str, value: str, says: str
) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, name: value}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "yilian.cli.main",
            "serve",
            "--database",
            f"sqlite:///{tmp_path / 'y.db'}",
            "--port",
            "0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert says in done.stderr
    assert "Traceback" not in done.stderr


def _swapped_pair() -> list[dict[str, Any]]:
    # Same name and sex, birth date day and month swapped, no phone on the second: probable.
    return [
        _patient(
            "陈", "静", "1985-03-04", ("H1", "1"), telecom=[{"system": "phone", "value": "13700002222"}]
        ),
        _patient("陈", "静", "1985-04-03", ("H2", "2"), address=[{"district": "南湖区"}]),
    ]


def test_steward_rejects_from_the_command_line(fresh: Database) -> None:
    url = database_url(fresh)
    a, b = _seed(fresh, _swapped_pair())
    with UnitOfWork(fresh) as uow:
        [review] = [r for r in list_reviews(uow)[0] if r.patient_id == b]
    refused = run("mpi", "reject", review.review_id, "--database", url)
    assert refused.exit_code == 2 and "--reason" in refused.output
    rejected = run(
        "mpi", "reject", review.review_id, "--reason", "different mothers' names", "--database", url
    )
    assert rejected.exit_code == 0, rejected.output
    with UnitOfWork(fresh) as uow:
        assert person_of(uow, a) != person_of(uow, b)
        assert [r for r in list_reviews(uow)[0] if r.patient_id == b] == []
        decided = [r for r in list_reviews(uow, status="rejected")[0] if r.review_id == review.review_id]
    assert decided and decided[0].reason == "different mothers' names" and decided[0].decided_by
    again = run("mpi", "reject", review.review_id, "--reason", "again", "--database", url)
    assert again.exit_code == 2 and "already rejected" in flat(again.output)
    (row,) = audits(fresh, "mpi-review-reject")
    assert row.patient_keys == (b,)


def test_the_deployment_thresholds_move_live_linking(
    fresh: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """YILIAN_MPI_CERTAIN lowered below the pair's probability: the pair a steward would have
    looked at is linked at once (and the default keeps it for review, the test above)."""
    from yilian.mpi import service

    monkeypatch.setattr(service, "_cache", {})  # the matcher (and its thresholds) is kept per database
    monkeypatch.setenv("YILIAN_MPI_CERTAIN", "0.6")
    monkeypatch.setenv("YILIAN_MPI_PROBABLE", "0.5")
    monkeypatch.setenv("YILIAN_MPI_POSSIBLE", "0.4")
    a, b = _seed(fresh, _swapped_pair())
    with UnitOfWork(fresh) as uow:
        assert person_of(uow, a) == person_of(uow, b)
        assert [r for r in list_reviews(uow)[0] if r.patient_id == b] == []
