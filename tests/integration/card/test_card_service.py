"""The health card's use cases on SQLite and PostgreSQL: issue, the lifecycle, the person-level
rule (one card at a time), resolution across institutions, counts and the register batch."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.sql.expression import FromClause

from tests.integration.card.conftest import MRN_A, MRN_B, make_patient, resident_id
from tests.support.fhir_calls import call, ids
from yilian import card, mpi
from yilian.card.model import CardStatus, parse_card_number
from yilian.card.tables import card as card_table
from yilian.db import UnitOfWork
from yilian.fhir import FhirContext
from yilian.kernel import clock, naming
from yilian.kernel.errors import Category, YilianError

ACTOR = "staff:desk-1"


class SeesOnly:
    """An institution's access policy as the card system sees it: it may see some patients."""

    def __init__(self, patients: set[str], *, update: bool = True) -> None:
        self.patients = patients
        self.update = update

    def allows(self, permission: str, resource_type: str) -> bool:
        return permission != "u" or self.update

    def row_filter(self, r: FromClause) -> ColumnElement[bool] | None:
        return r.c.patient_key.in_(sorted(self.patients)) | r.c.patient_key.is_(None)

    def can_see(
        self, uow: Any, resource_type: str, patient_key: str | None, resource_id: str | None = None
    ) -> bool:
        return patient_key is None or patient_key in self.patients

    @property
    def identity(self) -> str:
        return "test-institution"


def _as(ctx: FhirContext, policy: Any) -> FhirContext:
    return FhirContext(base_url=ctx.base_url, settings=ctx.settings, policy=policy)


def _fails(category: Category, fn: Any, *args: Any, **kwargs: Any) -> YilianError:
    with pytest.raises(YilianError) as info:
        fn(*args, **kwargs)
    assert info.value.category is category, info.value.message
    return info.value


def _search(uow: UnitOfWork, ctx: FhirContext, card_no: str) -> set[str]:
    found = call(uow, ctx, "GET", f"Patient?identifier={naming.HEALTH_CARD}|{card_no}")
    assert found.status == 200, found
    return ids(found.json)


def test_an_id_holder_gets_the_id_number_and_the_patient_is_found_by_it(
    uow: UnitOfWork, cctx: FhirContext
) -> None:
    rid = resident_id()
    patient = make_patient(uow, cctx, prc=rid, mrn=(MRN_A, "A-1"))
    view = card.issue_card(uow, cctx, patient_id=patient, actor=ACTOR, reason="first card")
    assert view.card_no == rid and view.kind == "resident-id" and view.sequence == 1
    assert view.status is CardStatus.ISSUED
    assert view.patient_id == patient and view.person_id == mpi.person_of(uow, patient) is not None
    assert view.district == "330502"  # the place of registration in the ID number
    assert _search(uow, cctx, rid) == {patient}
    # Lower-case x and spaces are how people type it: the same card.
    assert card.get_card(uow, cctx, " ".join([rid[:6], rid[6:]])).card_id == view.card_id
    # Stored neither readable nor as the plain number.
    stored = uow.conn.execute(select(card_table.c.number_key, card_table.c.number_sealed)).all()
    assert all(rid not in r.number_key and rid not in r.number_sealed for r in stored)


def test_a_resident_without_id_number_gets_a_platform_number_with_a_check_character(
    uow: UnitOfWork, cctx: FhirContext
) -> None:
    newborn = make_patient(
        uow, cctx, family="李", given="小宝", born="2026-11-30", gender="male", district="330521"
    )
    view = card.issue_card(uow, cctx, patient_id=newborn, actor=ACTOR, residence="rural")
    number = parse_card_number(view.card_no)
    assert number.kind == "platform" and view.card_no.startswith("00") and len(view.card_no) == 18
    assert (view.district, view.residence) == ("330521", "rural")
    assert _search(uow, cctx, view.card_no) == {newborn}


def test_the_whole_lifecycle_with_history_and_clear_refusals(uow: UnitOfWork, cctx: FhirContext) -> None:
    rid = resident_id(sex="male", seq=17)
    patient = make_patient(uow, cctx, given="伟", gender="male", prc=rid)
    first = card.issue_card(uow, cctx, patient_id=patient, actor=ACTOR)
    err = _fails(Category.CONFLICT, card.require_usable, uow, rid)
    assert "not been activated" in err.message
    card.activate_card(uow, cctx, card_no=rid, actor=ACTOR, reason="holder showed ID card")
    assert card.require_usable(uow, rid).status is CardStatus.ACTIVE
    err = _fails(Category.CONFLICT, card.activate_card, uow, cctx, card_no=rid, actor=ACTOR, reason="again")
    assert "cannot activate a card that is active" in err.message

    card.report_lost(uow, cctx, card_no=rid, actor="resident:self", reason="lost on the bus")
    err = _fails(Category.CONFLICT, card.require_usable, uow, rid)
    today = clock.now().astimezone(dt.timezone(dt.timedelta(hours=8))).date().isoformat()
    assert f"reported lost on {today}" in err.message and "replacement" in err.message
    card.resume_card(uow, cctx, card_no=rid, actor="resident:self", reason="found it at home")
    assert card.require_usable(uow, rid).usable

    new = card.replace_card(uow, cctx, card_no=rid, actor=ACTOR, reason="card damaged")
    assert new.card_no == f"{rid}-02" and new.sequence == 2 and new.replaces == rid
    assert new.status is CardStatus.ISSUED and new.patient_id == patient
    old = card.get_card(uow, cctx, rid)
    assert old.status is CardStatus.REPLACED and old.replaced_by == new.card_no
    err = _fails(Category.GONE, card.require_usable, uow, rid)
    assert "use the replacement card" in err.message and rid not in err.message
    assert _search(uow, cctx, new.card_no) == {patient}
    # The old number still names the patient on the record, marked old with an end date.
    resource = call(uow, cctx, "GET", f"Patient/{patient}").json
    cards = {i["value"]: i for i in resource["identifier"] if i["system"] == naming.HEALTH_CARD}
    assert cards[rid]["use"] == "old" and "end" in cards[rid]["period"]
    assert cards[new.card_no]["use"] == "official"

    card.activate_card(uow, cctx, card_no=new.card_no, actor=ACTOR, reason="handed over")
    card.suspend_card(uow, cctx, card_no=new.card_no, actor="staff:issuer", reason="fraud check")
    err = _fails(
        Category.CONFLICT, card.replace_card, uow, cctx, card_no=new.card_no, actor=ACTOR, reason="x"
    )
    assert "resume it first" in err.message
    assert "suspended" in _fails(Category.CONFLICT, card.require_usable, uow, new.card_no).message
    card.resume_card(uow, cctx, card_no=new.card_no, actor="staff:issuer", reason="check passed")
    card.revoke_card(uow, cctx, card_no=new.card_no, actor="staff:issuer", reason="holder emigrated")
    assert "revoked on" in _fails(Category.GONE, card.require_usable, uow, new.card_no).message
    err = _fails(Category.CONFLICT, card.resume_card, uow, cctx, card_no=new.card_no, actor=ACTOR, reason="x")
    assert "can no longer change" in err.message
    _fails(Category.INVALID, card.suspend_card, uow, cctx, card_no=rid, actor=ACTOR, reason="  ")

    history = card.card_history(uow, cctx, new.card_no)
    assert [(e.action, e.from_status, e.to_status) for e in history] == [
        ("issue", None, "issued"),
        ("activate", "issued", "active"),
        ("suspend", "active", "suspended"),
        ("resume", "suspended", "active"),
        ("revoke", "active", "revoked"),
    ]
    assert (history[2].actor, history[2].reason) == ("staff:issuer", "fraud check")
    assert [e.action for e in card.card_history(uow, cctx, first.card_no)] == [
        "issue",
        "activate",
        "report-lost",
        "resume",
        "replace",
    ]


def test_one_card_per_person_across_institutions(uow: UnitOfWork, cctx: FhirContext) -> None:
    rid = resident_id(division="330521", seq=88)
    at_a = make_patient(uow, cctx, family="欧阳", given="娜", prc=rid, mrn=(MRN_A, "OA-9"))
    at_b = make_patient(uow, cctx, family="欧阳", given="娜", prc=rid, mrn=(MRN_B, "OB-9"))
    assert mpi.person_of(uow, at_a) == mpi.person_of(uow, at_b)
    card.issue_card(uow, cctx, patient_id=at_a, actor=ACTOR)
    err = _fails(Category.CONFLICT, card.issue_card, uow, cctx, patient_id=at_b, actor=ACTOR)
    assert "already holds a health card" in err.message and rid not in err.message
    card.revoke_card(uow, cctx, card_no=rid, actor=ACTOR, reason="issued by mistake")
    # A new card after a revocation cannot reuse the refused number.
    again = card.issue_card(uow, cctx, patient_id=at_b, actor=ACTOR)
    assert again.card_no == f"{rid}-02"


def test_the_front_desk_sees_the_records_it_may_know_of(uow: UnitOfWork, cctx: FhirContext) -> None:
    rid = resident_id(division="330502", born=dt.date(1956, 2, 29), sex="male", seq=5)
    at_a = make_patient(
        uow, cctx, family="司马", given="光", born="1956-02-29", gender="male", prc=rid, mrn=(MRN_A, "S-1")
    )
    at_b = make_patient(
        uow, cctx, family="司马", given="光", born="1956-02-29", gender="male", prc=rid, mrn=(MRN_B, "S-2")
    )
    issued = card.issue_card(uow, cctx, patient_id=at_a, actor=ACTOR)
    card.activate_card(uow, cctx, card_no=rid, actor=ACTOR, reason="at the desk")
    everything = card.resolve(uow, cctx, rid, front_desk=True)
    assert everything.card.card_id == issued.card_id and set(everything.records) == {at_a, at_b}
    assert everything.to_json()["patient"] == at_a and everything.to_json()["district"] == "330502"
    # Another institution's desk: its own record of the holder and the person, nothing of A's.
    at_desk_b = card.resolve(uow, _as(cctx, SeesOnly({at_b})), rid, front_desk=True)
    assert at_desk_b.records == [at_b] and not at_desk_b.holder_visible
    assert at_desk_b.to_json() == {
        "card_no": rid,
        "kind": "resident-id",
        "sequence": 1,
        "status": "active",
        "records": [at_b],
        "person": issued.person_id,
    }
    # A desk with no record of the holder: the identifier to register them under.
    stranger = card.resolve(uow, _as(cctx, SeesOnly(set())), rid, front_desk=True).to_json()
    assert stranger["records"] == [] and "person" not in stranger
    assert stranger["register"] == {"system": naming.HEALTH_CARD, "value": rid}
    # A resident's token: only cards issued on their own records, else unknown whatever the state.
    assert card.resolve(uow, _as(cctx, SeesOnly({at_a})), rid, front_desk=False).holder_visible
    unknown = _fails(
        Category.NOT_FOUND, card.resolve, uow, _as(cctx, SeesOnly({at_b})), rid, front_desk=False
    )
    assert unknown.message == "no health card with this number"
    # Changing a card is for those who may see the holder's record, with update permission.
    err = _fails(
        Category.NOT_FOUND,
        card.report_lost,
        uow,
        _as(cctx, SeesOnly({at_b})),
        card_no=rid,
        actor=ACTOR,
        reason="x",
    )
    assert err.message == "no health card with this number"
    _fails(
        Category.FORBIDDEN,
        card.report_lost,
        uow,
        _as(cctx, SeesOnly({at_a}, update=False)),
        card_no=rid,
        actor=ACTOR,
        reason="x",
    )
    stranger = make_patient(uow, cctx, family="赵", given="云", born="1970-01-01", gender="male")
    _fails(
        Category.NOT_FOUND,
        card.issue_card,
        uow,
        _as(cctx, SeesOnly({at_a})),
        patient_id=stranger,
        actor=ACTOR,
    )


def test_unknown_and_malformed_numbers(uow: UnitOfWork, cctx: FhirContext) -> None:
    unknown = resident_id(seq=998)
    _fails(Category.NOT_FOUND, card.require_usable, uow, unknown)
    mistyped = unknown[:17] + ("0" if unknown[17] != "0" else "1")
    err = _fails(Category.INVALID, card.require_usable, uow, mistyped)
    assert "bad check character" in err.message
    assert "18 characters" in _fails(Category.INVALID, card.require_usable, uow, "12345").message


def test_counts_by_district_and_residence_now_and_as_of(uow: UnitOfWork, cctx: FhirContext) -> None:
    before = card.card_counts(uow)
    start = clock.now()
    p1 = make_patient(
        uow,
        cctx,
        family="陈",
        given="一",
        prc=resident_id(division="330502", seq=201, sex="male"),
        gender="male",
    )
    p2 = make_patient(uow, cctx, family="陈", given="二", prc=resident_id(division="330521", seq=202))
    p3 = make_patient(uow, cctx, family="陈", given="三", born="2026-10-01", district="330521")
    c1 = card.issue_card(uow, cctx, patient_id=p1, actor=ACTOR, residence="urban")
    c2 = card.issue_card(uow, cctx, patient_id=p2, actor=ACTOR, residence="rural")
    card.issue_card(uow, cctx, patient_id=p3, actor=ACTOR, residence="rural")
    card.activate_card(uow, cctx, card_no=c1.card_no, actor=ACTOR, reason="ok")
    card.activate_card(uow, cctx, card_no=c2.card_no, actor=ACTOR, reason="ok")
    middle = clock.now()
    card.replace_card(uow, cctx, card_no=c2.card_no, actor=ACTOR, reason="lost")
    now = card.card_counts(uow)
    assert now.total.issued - before.total.issued == 4
    assert now.total.active - before.total.active == 1
    assert now.total.held - before.total.held == 3
    rural = now.by_residence["rural"].to_json()
    assert rural == {"issued": 3, "held": 2, "active": 0}
    assert now.by_district["330521"].issued == 3 and now.by_district["330502"].active == 1
    then = card.card_counts(uow, as_of=middle)
    assert then.total.issued - before.total.issued == 3 and then.total.active - before.total.active == 2
    assert card.card_counts(uow, as_of=start - dt.timedelta(seconds=1)).total.issued == before.total.issued


REGISTER = """name,sex,birth_date,id_number,phone,address,district,residence
张伟,男,1990-01-01,{zhang},13800138000,吴兴区爱山街道1号,330502,城镇
李小宝,male,2026-11-01,,13900139000,南浔区,330503,rural
王五,男,1985-03-03,{bad_check},,,330502,urban
张伟,男,1990-01-01,{zhang},,,330502,urban
赵六,女,,,,,330502,rural
孙七,女,1975-07-07,{held},,,330502,rural
"""


def test_batch_from_the_population_register_reports_every_refusal_and_is_idempotent(
    uow: UnitOfWork, cctx: FhirContext
) -> None:
    zhang = resident_id(division="330502", born=dt.date(1990, 1, 1), sex="male", seq=123)
    bad = zhang[:17] + ("0" if zhang[17] != "0" else "1")
    held = resident_id(division="330502", born=dt.date(1975, 7, 7), seq=8)
    hospital_record = make_patient(
        uow, cctx, family="孙", given="七", born="1975-07-07", prc=held, mrn=(MRN_A, "SQ")
    )
    card.issue_card(uow, cctx, patient_id=hospital_record, actor=ACTOR)
    text = REGISTER.format(zhang=zhang, bad_check=bad, held=held)
    rows = list(card.read_register(text.splitlines(keepends=True)))
    refused = {r.line: r.reason for r in rows if isinstance(r, card.Refusal)}
    assert "bad check character" in refused[4]
    assert refused[5] == "duplicate: the same resident as line 2"
    assert refused[6] == "missing required field: birth_date"
    valid = [r for r in rows if isinstance(r, card.RegisterRow)]
    outcomes = card.issue_from_register(uow, cctx, rows=valid, actor="operator:batch")
    by_line = {o.line: o for o in outcomes}
    assert by_line[2].outcome == "issued" and by_line[2].card_no == zhang
    assert (
        by_line[3].outcome == "issued"
        and by_line[3].card_no is not None
        and by_line[3].card_no.startswith("00")
    )
    assert by_line[7].outcome == "refused" and "already holds a health card" in by_line[7].reason
    newborn = card.get_card(uow, cctx, by_line[3].card_no)
    assert (newborn.district, newborn.residence) == ("330503", "rural")
    assert _search(uow, cctx, zhang) == {by_line[2].patient_id}

    patients = uow.conn.execute(select(func.count()).select_from(card_table)).scalar_one()
    again = {o.line: o for o in card.issue_from_register(uow, cctx, rows=valid, actor="operator:batch")}
    assert [again[n].outcome for n in (2, 3, 7)] == ["already-issued", "already-issued", "refused"]
    assert again[3].card_no == by_line[3].card_no and again[2].patient_id == by_line[2].patient_id
    assert uow.conn.execute(select(func.count()).select_from(card_table)).scalar_one() == patients
    found = call(uow, cctx, "GET", f"Patient?identifier={naming.PRC_RESIDENT_ID}|{zhang}")
    assert len(ids(found.json)) == 1


def test_the_card_follows_a_stewards_merge_to_the_surviving_person(
    uow: UnitOfWork, cctx: FhirContext
) -> None:
    rid = resident_id(division="330502", born=dt.date(1948, 8, 1), sex="male", seq=77)
    holder = make_patient(
        uow, cctx, family="黄", given="忠", born="1948-08-01", gender="male", prc=rid, mrn=(MRN_A, "H-1")
    )
    # The same man registered elsewhere under a romanised name and no ID number: not linked automatically.
    elsewhere = make_patient(
        uow, cctx, family="Wong", given="Chung", born="1948-08-01", gender="male", mrn=(MRN_B, "H-2")
    )
    card.issue_card(uow, cctx, patient_id=holder, actor=ACTOR)
    card.activate_card(uow, cctx, card_no=rid, actor=ACTOR, reason="ok")
    before = card.resolve(uow, cctx, rid, front_desk=True)
    survivor = mpi.person_of(uow, elsewhere)
    assert survivor is not None and before.card.person_id != survivor and elsewhere not in before.records
    assert before.card.person_id is not None
    merge = mpi.merge_persons(
        uow, source_person=before.card.person_id, target_person=survivor, actor="steward:1", reason="same man"
    )
    after = card.resolve(uow, cctx, rid, front_desk=True)
    assert after.card.person_id == survivor
    assert set(after.records) == {holder, elsewhere}
    assert card.require_usable(uow, rid).person_id == survivor
    # Undone (the steward was wrong): the card leads to its holder's own person again, and only
    # to the holder's records.
    mpi.unmerge(uow, event_id=merge, actor="steward:2", reason="Wong Chung is his cousin")
    undone = card.resolve(uow, cctx, rid, front_desk=True)
    assert undone.card.person_id == before.card.person_id != survivor
    assert set(undone.records) == {holder}
    assert card.require_usable(uow, rid).person_id == before.card.person_id
    assert mpi.person_of(uow, elsewhere) == survivor
