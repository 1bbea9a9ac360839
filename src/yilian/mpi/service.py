"""Use cases of the patient index: every Patient record is one person's, decided as it is written.

Each function takes the unit of work first and never commits: registration runs inside the
transaction of the Patient write it describes (a rolled-back write leaves no trace here), and
the steward's actions (link, unlink, merge, unmerge, review decisions) run in the caller's.

Matching against the index is done in the database, not in a process's memory: candidates are
the records sharing a keyed blocking hash with the new one (``mpi_block``), their demographics
are read from the FHIR store and scored by the engine. So every server process, the CLI's
loaders and a transaction bundle's later entries all see the same index, including records
written earlier in the same transaction.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Engine,
    Integer,
    and_,
    bindparam,
    delete,
    func,
    literal_column,
    select,
    text,
    true,
    union_all,
    update,
)

from yilian.db import UnitOfWork
from yilian.db.dialect import insert_ignore
from yilian.db.statements import Statement, insert_row
from yilian.fhir.store.repository import current_by_keys, get_version
from yilian.fhir.store.sealing import keyring_for
from yilian.kernel import clock, ids
from yilian.kernel.crypto import Keyring
from yilian.kernel.errors import Category, YilianError
from yilian.mpi import changes
from yilian.mpi.fhir_map import record_from_patient
from yilian.mpi.matching import (
    GRADES,
    FieldEvidence,
    Grade,
    Matcher,
    MatchModel,
    PersonRecord,
    Thresholds,
    prepare,
)
from yilian.mpi.matching.blocking import record_keys
from yilian.mpi.matching.features import Features
from yilian.mpi.matching.index import REALTIME_MAX_BLOCK
from yilian.mpi.tables import block_key, event, model, person, record_link, review

log = logging.getLogger(__name__)

# How a record came to be the person's (mpi_link.how).
NEW, AUTO, MANUAL, REVIEWED, MERGED = "new", "auto", "manual", "review", "merge"
ENV_THRESHOLDS = ("YILIAN_MPI_CERTAIN", "YILIAN_MPI_PROBABLE", "YILIAN_MPI_POSSIBLE")


def _now_us() -> int:
    return int(clock.now().timestamp() * 1_000_000)


# --------------------------------------------------------------------------- the model in use


@dataclass(frozen=True)
class _Loaded:
    model_id: str | None
    matcher: Matcher


_cache_lock = threading.Lock()
# Per engine (weakly: a disposed database's matchers go with it, and a new engine that happens to
# reuse a freed one's address starts empty), then per stored model id.
_cache: weakref.WeakKeyDictionary[Engine, dict[str | None, _Loaded]] = weakref.WeakKeyDictionary()


def thresholds_from_env(base: Thresholds, env: dict[str, str] | None = None) -> Thresholds:
    """The deployment may move the grade cut-offs (``YILIAN_MPI_CERTAIN`` etc., probabilities)."""
    env = dict(os.environ) if env is None else env
    values = [base.certain, base.probable, base.possible]
    for i, name in enumerate(ENV_THRESHOLDS):
        raw = env.get(name)
        if raw:
            try:
                values[i] = float(raw)
            except ValueError:
                raise YilianError(
                    Category.INVALID, f"{name} must be a probability between 0 and 1, got {raw!r}"
                ) from None
    if not (1 >= values[0] >= values[1] >= values[2] >= 0):
        raise YilianError(
            Category.INVALID, "match thresholds must satisfy 1 >= certain >= probable >= possible >= 0"
        )
    return Thresholds(*values)


def check_configuration(env: dict[str, str] | None = None) -> None:
    """Refuse a bad ``YILIAN_MPI_*`` setting when the platform starts, not at the first write.

    Checked against the shipped model's thresholds; a trained model's are overridden the same way.
    """
    thresholds_from_env(MatchModel.default().thresholds, env)


# The statements every registration runs, compiled once (db/statements.py: SQLAlchemy's per-call
# work was a tenth of a Patient create).
_NEWEST_MODEL = Statement(lambda _: select(model.c.model_id).order_by(model.c.created.desc()).limit(1))
_INSERT_PERSON = insert_row(person)
_INSERT_LINK = insert_row(record_link)
_INSERT_EVENT = insert_row(event)
# Asked for every card shown or charged, and by every access decision on a person.
_PERSON_OF = Statement(
    lambda _: select(record_link.c.person_id).where(record_link.c.patient_id == bindparam("patient_id"))
)


def current_matcher(uow: UnitOfWork) -> Matcher:
    """The matcher with the newest stored model (``yilian mpi train``), or the shipped default."""
    row = _NEWEST_MODEL.one_or_none(uow.conn, {})
    model_id = row[0] if row else None
    engine = uow.db.engine
    with _cache_lock:
        hit = _cache.get(engine, {}).get(model_id)
    if hit is not None:
        return hit.matcher
    if model_id is None:
        base = MatchModel.default()
    else:
        body = uow.conn.execute(select(model.c.body).where(model.c.model_id == model_id)).scalar_one()
        base = MatchModel.from_json(body)
    loaded = _Loaded(model_id, Matcher(base.with_thresholds(thresholds_from_env(base.thresholds))))
    with _cache_lock:
        _cache.setdefault(engine, {})[model_id] = loaded
    return loaded.matcher


# --------------------------------------------------------------------------- blocking keys


def blocking_hashes(keyring: Keyring, f: Features) -> list[int]:
    """The record's rows of ``mpi_block``: its blocking keys as keyed 64-bit hashes, sorted.

    Public for bulk loaders (the live-index benchmark) so that they write exactly what a
    registration writes."""
    return sorted({keyring.keyed_hash64("mpi-block", f"{rule}\x1f{key}") for rule, key in record_keys(f)})


def _hashes(uow: UnitOfWork, f: Features) -> list[int]:
    keyring = keyring_for(uow.db.engine)
    if keyring is None:
        raise YilianError(
            Category.INTERNAL, "the database has no keyring: the patient index needs the index key"
        )
    return blocking_hashes(keyring, f)


# How many records a registration scores at most. Each costs a read of its Patient, unsealing
# and preparing it (~0.2 ms): a record whose keys all lie in blocks of up to REALTIME_MAX_BLOCK
# records could otherwise bring several hundred (measured at 1,000,000 persons: p95 ~170, and
# p95 31 ms for the match). Candidates are taken by the weight of the keys they share with the
# new record, a key of n records weighing 1/n (in millionths): a shared ID number or phone
# outweighs every shared surname + postcode block a record can have, so the budget drops only
# the least likely ones (top-1 unchanged at 1,000,000: docs/perf-mpi-live.md).
MAX_CANDIDATES = 50
_CANDIDATES: dict[int, Statement] = {}


def _candidates_statement(keys: int) -> Statement:
    """The candidate search for a record with ``keys`` blocking keys, compiled once per count.

    One statement (one round trip) that cannot be planned badly: per key a branch that first
    counts its rows up to one past the cap (an index range of at most REALTIME_MAX_BLOCK + 1
    entries, however common the key) and reads them only when under it; the branches' rows are
    summed per record with their persons, best first. (A ``GROUP BY key HAVING count(*)`` over
    every key counted whole blocks of thousands, and its row estimate led PostgreSQL to a
    parallel scan of the whole table: 0.5-1 s for some registrations at a million persons.)
    """
    found = _CANDIDATES.get(keys)
    if found is not None:
        return found

    def build(_: str) -> Any:
        branches = []
        for i in range(keys):
            key = bindparam(f"k{i}", type_=BigInteger)
            capped = (
                select(literal_column("1").label("one"))
                .where(block_key.c.key == key)
                .limit(REALTIME_MAX_BLOCK + 1)
                .subquery(f"capped{i}")
            )
            size = select(func.count().label("n")).select_from(capped).subquery(f"size{i}")
            rows = block_key.alias(f"b{i}")
            branches.append(
                select(rows.c.patient_id, (literal_column("1000000", Integer) // size.c.n).label("w"))
                .select_from(size.join(rows, true()))
                .where(rows.c.key == key, size.c.n <= REALTIME_MAX_BLOCK)
            )
        shared = union_all(*branches).subquery("shared")
        weight = func.sum(shared.c.w).label("weight")
        return (
            select(shared.c.patient_id, record_link.c.person_id, weight)
            .join(record_link, record_link.c.patient_id == shared.c.patient_id)
            .where(
                shared.c.patient_id != bindparam("exclude"),
                record_link.c.person_id != bindparam("exclude_person"),
            )
            .group_by(shared.c.patient_id, record_link.c.person_id)
            .order_by(weight.desc(), shared.c.patient_id)
            .limit(bindparam("budget", type_=Integer))
        )

    found = _CANDIDATES[keys] = Statement(build)
    return found


def _candidates(
    uow: UnitOfWork, hashes: Sequence[int], *, exclude: str, exclude_person: str | None, budget: int
) -> list[tuple[str, str]]:
    """(record, person) of the records that share blocking keys with the new record, the most
    telling first, at most ``budget``. Keys shared by more than REALTIME_MAX_BLOCK records (a
    common surname in one postcode, a placeholder phone) are skipped: they bring nothing a
    tighter key does not, and a registration must not wait on them."""
    if not hashes:
        return []
    params: dict[str, Any] = {f"k{i}": h for i, h in enumerate(hashes)}
    params.update(exclude=exclude, exclude_person=exclude_person or "", budget=budget)
    return [(str(r[0]), str(r[1])) for r in _candidates_statement(len(hashes)).all(uow.conn, params)]


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Candidate:
    person_id: str
    patient_id: str  # the person's record that matched best
    probability: float
    grade: Grade
    evidence: tuple[FieldEvidence, ...]
    rules: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "person": self.person_id,
            "patient": self.patient_id,
            "probability": round(self.probability, 6),
            "grade": self.grade,
            "rules": list(self.rules),
            "evidence": [dataclasses.asdict(e) for e in self.evidence],
        }


def person_of(uow: UnitOfWork, patient_id: str) -> str | None:
    """The person a Patient record is (None when the record is not in the index)."""
    row = _PERSON_OF.one_or_none(uow.conn, {"patient_id": patient_id})
    return None if row is None else str(row[0])


def records_of(uow: UnitOfWork, person_id: str) -> list[str]:
    """Every Patient record of a person, at every institution (a merged person's survivor's)."""
    person_id = _survivor(uow, person_id)
    return sorted(
        uow.conn.execute(
            select(record_link.c.patient_id).where(record_link.c.person_id == person_id)
        ).scalars()
    )


def _survivor(uow: UnitOfWork, person_id: str) -> str:
    # Follow merges, so that an old person id (printed on a letter, kept by a hospital) still
    # leads to the person; bounded in case of a cycle that should never exist.
    for _ in range(32):
        row = uow.conn.execute(
            select(person.c.status, person.c.merged_into).where(person.c.person_id == person_id)
        ).first()
        if row is None or row.status != "merged" or not row.merged_into:
            return person_id
        person_id = row.merged_into
    return person_id


def _load_features(uow: UnitOfWork, patient_ids: Iterable[str]) -> dict[str, Features]:
    out: dict[str, Features] = {}
    for stored in current_by_keys(uow.conn, [("Patient", p) for p in patient_ids]):
        if stored.content is None:
            continue
        out[stored.res_id] = prepare(record_from_patient(stored.res_id, orjson.loads(stored.content)))
    return out


def _rejected_persons(uow: UnitOfWork, patient_id: str) -> set[str]:
    rows = uow.conn.execute(
        select(review.c.candidate_person_id).where(
            review.c.patient_id == patient_id, review.c.status == "rejected"
        )
    ).scalars()
    return set(rows)


def find_candidates(
    uow: UnitOfWork,
    record: PersonRecord,
    *,
    limit: int = 10,
    min_grade: Grade = "possible",
    exclude_person: str | None = None,
) -> list[Candidate]:
    """The persons ``record`` may be, best first (the engine's grades and evidence)."""
    matcher = current_matcher(uow)
    f = prepare(record)
    pairs = _candidates(
        uow, _hashes(uow, f), exclude=record.record_id, exclude_person=exclude_person, budget=MAX_CANDIDATES
    )
    features = _load_features(uow, [p for p, _ in pairs])
    worst = GRADES.index(min_grade)
    best: dict[str, Candidate] = {}
    for pid, person_id in pairs:
        other = features.get(pid)
        if other is None:
            continue
        s = matcher.score(f, other)
        if GRADES.index(s.grade) > worst:
            continue
        current = best.get(person_id)
        if current is None or s.probability > current.probability:
            best[person_id] = Candidate(person_id, pid, s.probability, s.grade, s.evidence, s.rules)
    ranked = sorted(best.values(), key=lambda c: (GRADES.index(c.grade), -c.probability, c.person_id))
    return ranked[:limit]


# --------------------------------------------------------------------------- registration


@dataclass(frozen=True)
class Registered:
    """What the index decided about one written record."""

    patient_id: str
    person_id: str | None
    outcome: str  # new | linked | review | kept | unlinked | removed
    candidate: Candidate | None = None


def _new_person(uow: UnitOfWork, now: int) -> str:
    person_id = ids.new_id()
    _INSERT_PERSON.run(
        uow.conn,
        {"person_id": person_id, "status": "active", "merged_into": None, "created": now, "updated": now},
    )
    return person_id


def _event(
    uow: UnitOfWork,
    action: str,
    *,
    actor: str,
    reason: str | None = None,
    person_id: str | None = None,
    other_person_id: str | None = None,
    patient_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> str:
    event_id = ids.new_id()
    _INSERT_EVENT.run(
        uow.conn,
        {
            "event_id": event_id,
            "at": _now_us(),
            "action": action,
            "actor": actor[:160],
            "reason": reason,
            "person_id": person_id,
            "other_person_id": other_person_id,
            "patient_id": patient_id,
            "detail": orjson.dumps(detail).decode() if detail is not None else None,
            "undone_by": None,
        },
    )
    changes.changed(uow, person_id, other_person_id)  # subscriptions on Person learn of it
    return event_id


def _set_link(
    uow: UnitOfWork, patient_id: str, person_id: str, how: str, probability: float | None, source: str | None
) -> None:
    now = _now_us()
    updated = uow.conn.execute(
        update(record_link)
        .where(record_link.c.patient_id == patient_id)
        .values(person_id=person_id, how=how, probability=probability, source=source, updated=now)
    ).rowcount
    if not updated:
        uow.conn.execute(
            record_link.insert().values(
                patient_id=patient_id,
                person_id=person_id,
                how=how,
                probability=probability,
                source=source,
                updated=now,
            )
        )


def _retire_if_empty(uow: UnitOfWork, person_id: str, into: str | None) -> None:
    """A person left without records is kept (its id stays resolvable) and points at where they went."""
    left = uow.conn.execute(
        select(func.count()).select_from(record_link).where(record_link.c.person_id == person_id)
    ).scalar_one()
    if not left:
        uow.conn.execute(
            update(person)
            .where(person.c.person_id == person_id)
            .values(status="merged" if into else "retired", merged_into=into, updated=_now_us())
        )


def _open_review(uow: UnitOfWork, patient_id: str, c: Candidate) -> None:
    exists = uow.conn.execute(
        select(review.c.review_id).where(
            review.c.patient_id == patient_id,
            review.c.candidate_person_id == c.person_id,
            review.c.status == "open",
        )
    ).first()
    evidence = orjson.dumps(
        {"rules": list(c.rules), "fields": [dataclasses.asdict(e) for e in c.evidence]}
    ).decode()
    if exists is not None:
        uow.conn.execute(
            update(review)
            .where(review.c.review_id == exists.review_id)
            .values(
                probability=c.probability, grade=c.grade, evidence=evidence, candidate_patient_id=c.patient_id
            )
        )
        return
    uow.conn.execute(
        review.insert().values(
            review_id=ids.new_id(),
            patient_id=patient_id,
            candidate_person_id=c.person_id,
            candidate_patient_id=c.patient_id,
            probability=c.probability,
            grade=c.grade,
            evidence=evidence,
            status="open",
            created=_now_us(),
        )
    )


def _close_open_reviews(uow: UnitOfWork, patient_id: str, status: str = "obsolete") -> None:
    uow.conn.execute(
        update(review)
        .where(review.c.patient_id == patient_id, review.c.status == "open")
        .values(
            status=status, decided=_now_us(), decided_by="platform", reason="the record changed or was linked"
        )
    )


def register(
    uow: UnitOfWork, *, patient_id: str, resource: dict[str, Any] | None, actor: str, first: bool = False
) -> Registered:
    """Decide who a Patient record is, as it is created, updated or deleted.

    - deleted: its keys and link go; the person keeps its other records;
    - a record linked by a steward (link, accepted review, merge) keeps its person whatever the
      update (an update must not undo a steward's decision); its keys are renewed;
    - a record linked automatically to a person with other records keeps its person unless the
      update changed what the matcher compares (``prepare``'s features: names, birth date, sex,
      identifiers, phone, address) *and* the record no longer matches any other record of its
      person at ``certain``. Then it is matched again like a new record, its old person among the
      candidates: ``certain`` elsewhere moves it (``auto-link``), otherwise it leaves for a person
      of its own (``auto-unlink``, with the grade it still had) and a ``probable`` candidate — its
      old person included — goes to a steward's review;
    - otherwise the best candidate decides: ``certain`` links it automatically (unless the
      household guard in the engine's rules capped the grade), ``probable`` opens a review for a
      data steward and the record stays a person of its own meanwhile, anything less makes
      (or keeps) a person of its own.

    ``first``: the write made version 1 of the record, so there is nothing of it to clean up.
    """
    link = None
    if not first:  # version 1 of a record: it has no keys, link or reviews yet
        uow.conn.execute(delete(block_key).where(block_key.c.patient_id == patient_id))
        link = uow.conn.execute(select(record_link).where(record_link.c.patient_id == patient_id)).first()
    if resource is None:
        if link is not None:
            uow.conn.execute(delete(record_link).where(record_link.c.patient_id == patient_id))
            _retire_if_empty(uow, link.person_id, None)
            _event(
                uow,
                "remove",
                actor=actor,
                person_id=link.person_id,
                patient_id=patient_id,
                reason="the Patient record was deleted",
            )
        _close_open_reviews(uow, patient_id)
        return Registered(patient_id, None, "removed")

    record = record_from_patient(patient_id, resource)
    f = prepare(record)
    hashes = _hashes(uow, f)
    source = record.source
    leaving: _Leaving | None = None
    if link is not None:
        if link.how in (MANUAL, REVIEWED, MERGED):
            _insert_keys(uow, patient_id, hashes)
            return Registered(patient_id, link.person_id, "kept")
        others = [
            p
            for p in uow.conn.execute(
                select(record_link.c.patient_id).where(record_link.c.person_id == link.person_id)
            ).scalars()
            if p != patient_id
        ]
        if others:
            leaving = _recheck(uow, patient_id, resource, f, link.person_id, others)
            if leaving is None:
                _insert_keys(uow, patient_id, hashes)
                return Registered(patient_id, link.person_id, "kept")
    own = link.person_id if link is not None and leaving is None else None
    _serialise_on_keys(uow, hashes)
    candidates = find_candidates(uow, record, limit=5, min_grade="probable", exclude_person=own)
    if candidates:  # a steward's earlier "not this person" stands
        rejected = _rejected_persons(uow, patient_id)
        candidates = [c for c in candidates if c.person_id not in rejected]
    _insert_keys(uow, patient_id, hashes)
    best = candidates[0] if candidates else None
    now = _now_us()
    if best is not None and best.grade == "certain":
        if leaving is not None and best.person_id == leaving.person_id:
            # Certain again through a record the recheck did not score (written meanwhile).
            return Registered(patient_id, leaving.person_id, "kept", best)
        _set_link(uow, patient_id, best.person_id, AUTO, best.probability, source)
        if own is not None:
            _retire_if_empty(uow, own, best.person_id)
        _close_open_reviews(uow, patient_id)
        detail: dict[str, Any] = {
            "probability": round(best.probability, 6),
            "matched": best.patient_id,
            "rules": list(best.rules),
        }
        if leaving is not None:
            detail["left"] = leaving.detail()
        _event(
            uow,
            "auto-link",
            actor=actor,
            person_id=best.person_id,
            other_person_id=leaving.person_id if leaving is not None else None,
            patient_id=patient_id,
            reason=leaving.reason if leaving is not None else None,
            detail=detail,
        )
        return Registered(patient_id, best.person_id, "linked", best)
    if leaving is not None:
        own = _new_person(uow, now)
        _set_link(uow, patient_id, own, NEW, None, source)
        _close_open_reviews(uow, patient_id)
        _event(
            uow,
            "auto-unlink",
            actor=actor,
            reason=leaving.reason,
            person_id=own,
            other_person_id=leaving.person_id,
            patient_id=patient_id,
            detail=leaving.detail(),
        )
    elif own is None:
        own = _new_person(uow, now)
        _INSERT_LINK.run(
            uow.conn,
            {
                "patient_id": patient_id,
                "person_id": own,
                "how": NEW,
                "probability": None,
                "source": source,
                "updated": now,
            },
        )
        _event(uow, "new-person", actor=actor, person_id=own, patient_id=patient_id)
    elif link is not None and link.source != source:
        _set_link(uow, patient_id, own, link.how, link.probability, source)
    if best is not None and best.grade == "probable":
        _open_review(uow, patient_id, best)
        return Registered(patient_id, own, "review", best)
    if leaving is not None:
        return Registered(patient_id, own, "unlinked")
    return Registered(patient_id, own, "new" if link is None else "kept")


@dataclass(frozen=True)
class _Leaving:
    """An automatically linked record whose update no longer matches its person at ``certain``."""

    person_id: str
    matched: str | None  # the person's record it came closest to
    probability: float
    grade: Grade

    @property
    def reason(self) -> str:
        return (
            f"the record's demographics changed and it no longer matches person {self.person_id} "
            f"at certain (best: {self.grade})"
        )

    def detail(self) -> dict[str, Any]:
        return {
            "person": self.person_id,
            "matched": self.matched,
            "probability": round(self.probability, 6),
            "grade": self.grade,
        }


def _recheck(
    uow: UnitOfWork,
    patient_id: str,
    resource: dict[str, Any],
    f: Features,
    person_id: str,
    others: Sequence[str],
) -> _Leaving | None:
    """None while an automatically linked record still is its person: the update left what the
    matcher compares as it was, or the record still matches another record of the person at
    ``certain``. Otherwise what it matches now, for the decision and its history."""
    previous = _previous_features(uow, patient_id, resource)
    if previous is not None and previous == f:
        return None
    matcher = current_matcher(uow)
    best: tuple[float, str | None, Grade] = (0.0, None, "certainly-not")
    for pid, other in _load_features(uow, others).items():
        s = matcher.score(f, other)
        if s.grade == "certain":
            return None
        if s.probability > best[0] or best[1] is None:
            best = (s.probability, pid, s.grade)
    return _Leaving(person_id, best[1], best[0], best[2])


def _previous_features(uow: UnitOfWork, patient_id: str, resource: dict[str, Any]) -> Features | None:
    """The matcher's view of the record's version before this write (None when there is none)."""
    meta = resource.get("meta")
    version = meta.get("versionId") if isinstance(meta, dict) else None
    if not isinstance(version, str) or not version.isdigit() or int(version) < 2:
        return None
    stored = get_version(uow.conn, "Patient", patient_id, int(version) - 1)
    if stored is None or stored.content is None:
        return None
    return prepare(record_from_patient(patient_id, orjson.loads(stored.content)))


def _serialise_on_keys(uow: UnitOfWork, hashes: Sequence[int]) -> None:
    """Make registrations that share a blocking key take turns, until each one commits.

    Two registrations of one resident in concurrent transactions would each find no candidate
    (neither sees the other's uncommitted record) and each make a person. On PostgreSQL a
    transaction-scoped advisory lock per key, taken in ascending order (so two registrations never
    wait on each other crosswise), makes the later one wait; under READ COMMITTED its candidate
    query then sees the first one's committed record. A transaction bundle registering several
    patients can still deadlock with another such bundle; PostgreSQL breaks the cycle and the
    unit of work retries (:func:`yilian.db.uow.is_transient`). SQLite needs nothing: its write
    transactions already run one at a time (``BEGIN IMMEDIATE``).
    """
    if not hashes or uow.db.is_sqlite:
        return
    uow.conn.execute(
        text(
            "SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest(CAST(:keys AS bigint[])) AS k ORDER BY k) AS s"
        ),
        {"keys": sorted(hashes)},
    )


def _insert_keys(uow: UnitOfWork, patient_id: str, hashes: Sequence[int]) -> None:
    insert_ignore(uow.conn, block_key, [{"key": h, "patient_id": patient_id} for h in hashes])


# --------------------------------------------------------------------------- steward actions


def _require_record(uow: UnitOfWork, patient_id: str) -> Any:
    link = uow.conn.execute(select(record_link).where(record_link.c.patient_id == patient_id)).first()
    if link is None:
        raise YilianError(Category.NOT_FOUND, f"Patient/{patient_id} is not in the patient index")
    return link


def _require_person(uow: UnitOfWork, person_id: str, *, active: bool = True) -> Any:
    row = uow.conn.execute(select(person).where(person.c.person_id == person_id)).first()
    if row is None:
        raise YilianError(Category.NOT_FOUND, f"there is no person {person_id} in the patient index")
    if active and row.status != "active":
        raise YilianError(
            Category.CONFLICT,
            f"person {person_id} is {row.status}" + (f" into {row.merged_into}" if row.merged_into else ""),
        )
    return row


def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise YilianError(
            Category.INVALID,
            "say why (a reason of at least 3 characters): every identity decision is recorded",
        )
    return reason


def link_record(uow: UnitOfWork, *, patient_id: str, person_id: str, actor: str, reason: str) -> str:
    """A steward (or an HL7 merge) says this record is that person. Returns the event id."""
    reason = _require_reason(reason)
    link = _require_record(uow, patient_id)
    person_id = _survivor(uow, person_id)
    _require_person(uow, person_id)
    if link.person_id == person_id:
        raise YilianError(Category.CONFLICT, f"Patient/{patient_id} is already person {person_id}")
    _set_link(uow, patient_id, person_id, MANUAL, None, link.source)
    _retire_if_empty(uow, link.person_id, person_id)
    _close_open_reviews(uow, patient_id)
    return _event(
        uow,
        "link",
        actor=actor,
        reason=reason,
        person_id=person_id,
        other_person_id=link.person_id,
        patient_id=patient_id,
    )


def unlink_record(uow: UnitOfWork, *, patient_id: str, actor: str, reason: str) -> str:
    """This record is not the person it was linked to: it becomes a person of its own. Returns
    the new person id. The record will not be linked back automatically (a rejection is kept)."""
    reason = _require_reason(reason)
    link = _require_record(uow, patient_id)
    others = uow.conn.execute(
        select(func.count())
        .select_from(record_link)
        .where(record_link.c.person_id == link.person_id, record_link.c.patient_id != patient_id)
    ).scalar_one()
    if not others:
        raise YilianError(
            Category.CONFLICT,
            f"Patient/{patient_id} is the only record of person {link.person_id}: nothing to unlink from",
        )
    new_person = _new_person(uow, _now_us())
    _set_link(uow, patient_id, new_person, MANUAL, None, link.source)
    # Remember the steward's "not this person", so the next update does not link it back.
    uow.conn.execute(
        review.insert().values(
            review_id=ids.new_id(),
            patient_id=patient_id,
            candidate_person_id=link.person_id,
            candidate_patient_id="",
            probability=0.0,
            grade="certainly-not",
            evidence="{}",
            status="rejected",
            created=_now_us(),
            decided=_now_us(),
            decided_by=actor[:128],
            reason=reason,
        )
    )
    _event(
        uow,
        "unlink",
        actor=actor,
        reason=reason,
        person_id=new_person,
        other_person_id=link.person_id,
        patient_id=patient_id,
    )
    return new_person


def merge_persons(uow: UnitOfWork, *, source_person: str, target_person: str, actor: str, reason: str) -> str:
    """Every record of ``source_person`` becomes ``target_person``'s; the source stays as a
    pointer (its id keeps resolving). Reversible with :func:`unmerge`. Returns the event id."""
    reason = _require_reason(reason)
    if source_person == target_person:
        raise YilianError(Category.INVALID, "a person cannot be merged into itself")
    _require_person(uow, source_person)
    _require_person(uow, target_person)
    moved = sorted(
        uow.conn.execute(
            select(record_link.c.patient_id).where(record_link.c.person_id == source_person)
        ).scalars()
    )
    uow.conn.execute(
        update(record_link)
        .where(record_link.c.person_id == source_person)
        .values(person_id=target_person, how=MERGED, updated=_now_us())
    )
    uow.conn.execute(
        update(person)
        .where(person.c.person_id == source_person)
        .values(status="merged", merged_into=target_person, updated=_now_us())
    )
    uow.conn.execute(
        update(review)
        .where(review.c.candidate_person_id == source_person, review.c.status == "open")
        .values(candidate_person_id=target_person)
    )
    return _event(
        uow,
        "merge",
        actor=actor,
        reason=reason,
        person_id=target_person,
        other_person_id=source_person,
        detail={"moved": moved},
    )


def unmerge(uow: UnitOfWork, *, event_id: str, actor: str, reason: str) -> str:
    """Undo a merge: the records it moved (still with the survivor) go back to the merged-away
    person, who is active again. Returns the event id of the unmerge."""
    reason = _require_reason(reason)
    row = uow.conn.execute(select(event).where(event.c.event_id == event_id)).first()
    if row is None or row.action != "merge":
        raise YilianError(Category.NOT_FOUND, f"there is no merge {event_id}")
    if row.undone_by:
        raise YilianError(Category.CONFLICT, f"merge {event_id} was already undone (by {row.undone_by})")
    moved: list[str] = orjson.loads(row.detail or "{}").get("moved", [])
    restored = person.c.person_id == row.other_person_id
    uow.conn.execute(
        update(person).where(restored).values(status="active", merged_into=None, updated=_now_us())
    )
    # The survivor may itself have been merged since: the moved records are then with the person
    # it went into (and so on). They come back from wherever that chain of merges took them; a
    # record a steward has since linked elsewhere stays where the steward put it.
    holders = _merge_chain(uow, row.person_id)
    back = uow.conn.execute(
        update(record_link)
        .where(and_(record_link.c.patient_id.in_(moved or [""]), record_link.c.person_id.in_(holders)))
        .values(person_id=row.other_person_id, how=MANUAL, updated=_now_us())
    ).rowcount
    # Open reviews that the merge (or a later one) pointed at the survivor because their candidate
    # record moved there follow that record back: the steward is asked about the person the
    # candidate record belongs to again, not about the one it was wrongly merged into.
    returned = [
        str(p)
        for p in uow.conn.execute(
            select(record_link.c.patient_id).where(
                record_link.c.patient_id.in_(moved or [""]), record_link.c.person_id == row.other_person_id
            )
        ).scalars()
    ]
    reviews = uow.conn.execute(
        update(review)
        .where(
            review.c.status == "open",
            review.c.candidate_patient_id.in_(returned or [""]),
            review.c.candidate_person_id.in_(holders),
        )
        .values(candidate_person_id=row.other_person_id)
    ).rowcount
    undo_id = _event(
        uow,
        "unmerge",
        actor=actor,
        reason=reason,
        person_id=row.other_person_id,
        other_person_id=row.person_id,
        detail={"merge": event_id, "restored": back, "reviews": reviews},
    )
    uow.conn.execute(update(event).where(event.c.event_id == event_id).values(undone_by=undo_id))
    return undo_id


def _merge_chain(uow: UnitOfWork, person_id: str) -> list[str]:
    """``person_id`` and every person it was merged into since, in order (a merge never points
    back along its own chain, but a bound keeps a corrupted one from looping)."""
    chain = [person_id]
    while len(chain) < 1000:
        nxt = uow.conn.execute(
            select(person.c.merged_into).where(person.c.person_id == chain[-1], person.c.status == "merged")
        ).scalar_one_or_none()
        if nxt is None or nxt in chain:
            break
        chain.append(nxt)
    return chain


# --------------------------------------------------------------------------- review queue


@dataclass(frozen=True)
class Review:
    review_id: str
    patient_id: str
    candidate_person_id: str
    candidate_patient_id: str
    probability: float
    grade: str
    evidence: dict[str, Any]
    status: str
    created: int
    decided: int | None
    decided_by: str | None
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["probability"] = round(self.probability, 6)
        return out


def _review(row: Any) -> Review:
    return Review(
        row.review_id,
        row.patient_id,
        row.candidate_person_id,
        row.candidate_patient_id,
        row.probability,
        row.grade,
        orjson.loads(row.evidence or "{}"),
        row.status,
        row.created,
        row.decided,
        row.decided_by,
        row.reason,
    )


def list_reviews(
    uow: UnitOfWork, *, status: str = "open", limit: int = 50, offset: int = 0
) -> tuple[list[Review], int]:
    if status not in ("open", "accepted", "rejected", "obsolete", "all"):
        raise YilianError(Category.INVALID, "status must be one of open, accepted, rejected, obsolete, all")
    if not 1 <= limit <= 500 or offset < 0:
        raise YilianError(Category.INVALID, "limit must be 1–500 and offset not negative")
    cond = review.c.status == status if status != "all" else review.c.status.is_not(None)
    total = uow.conn.execute(select(func.count()).select_from(review).where(cond)).scalar_one()
    rows = uow.conn.execute(
        select(review).where(cond).order_by(review.c.created, review.c.review_id).limit(limit).offset(offset)
    )
    return [_review(r) for r in rows], int(total)


def _open_review_row(uow: UnitOfWork, review_id: str) -> Any:
    row = uow.conn.execute(select(review).where(review.c.review_id == review_id)).first()
    if row is None:
        raise YilianError(Category.NOT_FOUND, f"there is no review {review_id}")
    if row.status != "open":
        raise YilianError(Category.CONFLICT, f"review {review_id} is already {row.status}")
    return row


def accept_review(uow: UnitOfWork, *, review_id: str, actor: str, reason: str) -> Review:
    """The steward agrees: the record becomes the candidate person's."""
    reason = _require_reason(reason)
    row = _open_review_row(uow, review_id)
    link = _require_record(uow, row.patient_id)
    target = _survivor(uow, row.candidate_person_id)
    _require_person(uow, target)
    _set_link(uow, row.patient_id, target, REVIEWED, row.probability, link.source)
    _retire_if_empty(uow, link.person_id, target)
    uow.conn.execute(
        update(review)
        .where(review.c.review_id == review_id)
        .values(status="accepted", decided=_now_us(), decided_by=actor[:128], reason=reason)
    )
    _close_open_reviews(uow, row.patient_id)
    _event(
        uow,
        "review-accept",
        actor=actor,
        reason=reason,
        person_id=target,
        other_person_id=link.person_id,
        patient_id=row.patient_id,
        detail={"review": review_id},
    )
    return _review(uow.conn.execute(select(review).where(review.c.review_id == review_id)).one())


def reject_review(uow: UnitOfWork, *, review_id: str, actor: str, reason: str) -> Review:
    """The steward disagrees: the pair is remembered and never proposed again."""
    reason = _require_reason(reason)
    row = _open_review_row(uow, review_id)
    uow.conn.execute(
        update(review)
        .where(review.c.review_id == review_id)
        .values(status="rejected", decided=_now_us(), decided_by=actor[:128], reason=reason)
    )
    _event(
        uow,
        "review-reject",
        actor=actor,
        reason=reason,
        person_id=row.candidate_person_id,
        patient_id=row.patient_id,
        detail={"review": review_id},
    )
    return _review(uow.conn.execute(select(review).where(review.c.review_id == review_id)).one())


# --------------------------------------------------------------------------- persons and history


@dataclass(frozen=True)
class PersonView:
    person_id: str
    status: str
    merged_into: str | None
    records: tuple[tuple[str, str, str | None], ...]  # (patient id, how, source institution)


def person_view(uow: UnitOfWork, person_id: str) -> PersonView:
    row = _require_person(uow, person_id, active=False)
    recs = uow.conn.execute(
        select(record_link.c.patient_id, record_link.c.how, record_link.c.source)
        .where(record_link.c.person_id == person_id)
        .order_by(record_link.c.patient_id)
    )
    return PersonView(
        row.person_id, row.status, row.merged_into, tuple((r.patient_id, r.how, r.source) for r in recs)
    )


def history(
    uow: UnitOfWork, *, person_id: str | None = None, patient_id: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """The identity decisions about a person or a record, oldest first, with who and why."""
    stmt = select(event).order_by(event.c.at, event.c.event_id).limit(limit)
    if person_id:
        stmt = stmt.where((event.c.person_id == person_id) | (event.c.other_person_id == person_id))
    if patient_id:
        stmt = stmt.where(event.c.patient_id == patient_id)
    return [
        {
            "event": r.event_id,
            "at": r.at,
            "action": r.action,
            "actor": r.actor,
            "reason": r.reason,
            "person": r.person_id,
            "other_person": r.other_person_id,
            "patient": r.patient_id,
            "detail": orjson.loads(r.detail) if r.detail else None,
            "undone_by": r.undone_by,
        }
        for r in uow.conn.execute(stmt)
    ]


@dataclass(frozen=True)
class IndexCounts:
    persons: int
    records: int
    open_reviews: int
    merged: int


def counts(uow: UnitOfWork) -> IndexCounts:
    persons = uow.conn.execute(
        select(func.count()).select_from(person).where(person.c.status == "active")
    ).scalar_one()
    merged = uow.conn.execute(
        select(func.count()).select_from(person).where(person.c.status == "merged")
    ).scalar_one()
    records = uow.conn.execute(select(func.count()).select_from(record_link)).scalar_one()
    open_reviews = uow.conn.execute(
        select(func.count()).select_from(review).where(review.c.status == "open")
    ).scalar_one()
    return IndexCounts(int(persons), int(records), int(open_reviews), int(merged))


# --------------------------------------------------------------------------- training


def train_and_store(uow: UnitOfWork, *, actor: str, progress: Any = None) -> tuple[str, int]:
    """Learn the model's weights (EM) from every record in the index and make it the one in use.
    Returns (model id, records learned from)."""
    from yilian.mpi.matching import train

    patient_ids = list(uow.conn.execute(select(record_link.c.patient_id)).scalars())
    if len(patient_ids) < 50:
        raise YilianError(
            Category.CONFLICT, f"the index holds {len(patient_ids)} records; training needs at least 50"
        )
    records: list[PersonRecord] = []
    for i in range(0, len(patient_ids), 1000):
        for stored in current_by_keys(uow.conn, [("Patient", p) for p in patient_ids[i : i + 1000]]):
            if stored.content is not None:
                records.append(record_from_patient(stored.res_id, orjson.loads(stored.content)))
    base = current_matcher(uow).model
    learned = train(records, start=base, thresholds=base.thresholds, progress=progress)
    model_id = ids.new_id()
    uow.conn.execute(
        model.insert().values(
            model_id=model_id,
            created=_now_us(),
            created_by=actor[:160],
            records=len(records),
            body=learned.to_json(),
        )
    )
    _event(uow, "train", actor=actor, detail={"model": model_id, "records": len(records)})
    return model_id, len(records)
