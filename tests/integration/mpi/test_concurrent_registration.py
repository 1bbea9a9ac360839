"""Registrations of one resident arriving at the same moment at several hospitals become one person.

Each registration runs in its own transaction, as separate requests would; without serialising on
the record's blocking keys, every one of them would see no candidate and make a person of its own.
Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from tests.integration.mpi.test_patient_index import ID_ZHANG, patient
from tests.support.fhir_calls import call
from yilian.db import Database, UnitOfWork
from yilian.db.uow import read, transact
from yilian.fhir import FhirContext, FhirSettings
from yilian.kernel import naming
from yilian.mpi import PatientIndexObserver, person_of

WRITERS = 8


def test_simultaneous_registrations_of_one_resident_make_one_person(db: Database) -> None:
    ctx = FhirContext(
        base_url="http://testserver/fhir", settings=FhirSettings(observers=(PatientIndexObserver(),))
    )
    start = threading.Barrier(WRITERS)

    def register(i: int) -> str:
        body = patient(
            family="张",
            given="伟",
            birth="1990-01-01",
            gender="male",
            prc=ID_ZHANG,
            mrn=(naming.mrn_system(f"H33050{i}A"), f"MRN-{i}"),
        )

        def write(uow: UnitOfWork) -> str:
            r = call(uow, ctx, "POST", "Patient", body)
            assert r.status == 201, r
            return str(r.json["id"])

        start.wait()
        return transact(db, write, attempts=20)

    with ThreadPoolExecutor(WRITERS) as pool:
        ids = list(pool.map(register, range(WRITERS)))

    with read(db) as uow:
        persons = {person_of(uow, pid) for pid in ids}
    assert len(set(ids)) == WRITERS
    assert len(persons) == 1, f"{WRITERS} registrations of one resident made {len(persons)} persons"
