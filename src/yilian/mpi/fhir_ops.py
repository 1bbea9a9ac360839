"""The patient index in FHIR: ``Patient/$match`` (PDQ-like), ``Patient/$ihe-pix`` (PIX-like
cross-reference), the read-only ``Person`` type (one per person, linking every record), and the
write observer that registers every Patient as it is written.

Access: being the same person is not a reason to see a record. Every record these adapters
show — a ``Person.link`` and the identifiers and name taken from it, a PIX ``targetId`` and
``targetIdentifier``, the Patient a search parameter names, a ``$match`` entry — passes the
caller's access decision (``AccessPolicy.can_see``, the one the FHIR core applies everywhere);
records it may not see are left out as if they did not exist, counts and totals included, and a
Person exists for a caller only through a record it may see. The platform operator's policy sees
every record, so it gets the whole cross-reference (docs/mpi.md, "Who sees which records").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from yilian.db import UnitOfWork
from yilian.fhir import FhirContext, FhirRequest, FhirResponse, bundles, dispatch
from yilian.fhir.access import ALLOW_ALL, READ, SEARCH, check_lookups, is_first_version, require
from yilian.fhir.interactions.outcome import Resource
from yilian.fhir.router import resource_headers
from yilian.fhir.store.repository import current_by_keys
from yilian.kernel.errors import Category, YilianError
from yilian.mpi import changes, service
from yilian.mpi.fhir_map import check_identifiers, normalise_identifiers, record_from_patient
from yilian.mpi.matching import GRADES, Features, Grade, Matcher, PersonRecord, prepare

MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"
_ASSURANCE = {
    service.MANUAL: "level4",
    service.REVIEWED: "level4",
    service.MERGED: "level4",
    service.AUTO: "level3",
    service.NEW: "level2",
}


class PatientIndexObserver:
    """Registers every Patient write with the index, in the write's own transaction. Before a
    Patient is stored, refuses it if an identifier breaks its system's rule (or the resident ID
    number contradicts its birth date or sex) and stores the identifiers normalised."""

    def before_write(self, uow: UnitOfWork, ctx: Any, resource_type: str, resource: dict[str, Any]) -> None:
        if resource_type == "Patient":
            normalise_identifiers(resource)

    def on_write(
        self,
        uow: UnitOfWork,
        ctx: Any,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any] | None,
        patient_key: str | None,
    ) -> None:
        if resource_type != "Patient":
            return
        policy = getattr(ctx, "policy", ALLOW_ALL)
        # Who is told of the person's change waits for the grants this write derives.
        with changes.held(uow):
            service.register(
                uow,
                patient_id=resource_id,
                resource=resource,
                actor=policy.identity,
                first=is_first_version(resource),
            )


def _visible(uow: UnitOfWork, ctx: FhirContext, patient_id: str) -> bool:
    return bool(ctx.policy.can_see(uow, "Patient", patient_id))


def _visible_records(uow: UnitOfWork, ctx: FhirContext, patient_ids: Iterable[str]) -> list[str]:
    """The records of ``patient_ids`` the caller may see, in order: the only ones it is shown."""
    return [pid for pid in patient_ids if _visible(uow, ctx, pid)]


_ALL_CANDIDATES = 10_000


def _visible_matches(
    uow: UnitOfWork,
    ctx: FhirContext,
    record: PersonRecord,
    candidates: list[service.Candidate],
    min_grade: Grade,
    count: int,
) -> list[tuple[str, Grade, float]]:
    """(patient id, grade, probability) of the ``count`` best records the caller may see.

    A candidate person's grade comes from its best-matching record. When the caller may see
    that record, the person's other records it may see share that grade; when it may not, the
    grade would be evidence about a record the caller may not see, so the records it may see are
    scored against the query on their own and shown only if they match on their own. Such a
    score is no better than the person's best, so candidates (best first) are read only until no
    later one can make the list."""

    def rank(grade: Grade, probability: float) -> tuple[int, float]:
        return GRADES.index(grade), -probability

    matcher: Matcher | None = None
    features: Features | None = None
    out: list[tuple[str, Grade, float]] = []
    for c in candidates:
        if len(out) >= count:
            last_place = sorted(rank(g, p) for _, g, p in out)[count - 1]
            if last_place <= rank(c.grade, c.probability):
                break
        others = [p for p in service.records_of(uow, c.person_id) if p != c.patient_id]
        visible = [p for p in _visible_records(uow, ctx, [c.patient_id, *others]) if p != record.record_id]
        if not visible:
            continue
        if c.patient_id in visible:
            graded = [(p, c.grade, c.probability) for p in visible]
        else:
            matcher = matcher or service.current_matcher(uow)
            features = features or prepare(record)
            graded = []
            for stored in current_by_keys(uow.conn, [("Patient", p) for p in visible]):
                if stored.content is None:
                    continue
                own = prepare(record_from_patient(stored.res_id, orjson.loads(stored.content)))
                score = matcher.score(features, own)
                if rank(score.grade, 0)[0] <= GRADES.index(min_grade):
                    graded.append((stored.res_id, score.grade, score.probability))
        out.extend(graded)
    # Stable: a person's records stay together, the best-matching person first.
    out.sort(key=lambda m: rank(m[1], m[2]))
    return out[:count]


def _param(body: Any, name: str) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise YilianError(Category.INVALID, "the body must be a Parameters resource")
    return [p for p in body.get("parameter") or [] if isinstance(p, dict) and p.get("name") == name]


@dataclass(frozen=True)
class MatchOperation:
    """``POST Patient/$match``: the persons a Patient may be, graded and scored."""

    name: str = "match"
    resource_type: str | None = "Patient"
    instance: bool = False
    affects_state: bool = False
    definition: str = "http://hl7.org/fhir/OperationDefinition/Patient-match"

    def run(
        self, uow: UnitOfWork, ctx: FhirContext, req: FhirRequest, resource_id: str | None
    ) -> FhirResponse:
        if req.method.upper() != "POST":
            raise YilianError(Category.NOT_ALLOWED, "Patient/$match takes a POST with a Parameters body")
        require(ctx.policy, SEARCH, "Patient")
        resources = _param(req.body, "resource")
        if (
            len(resources) != 1
            or not isinstance(resources[0].get("resource"), dict)
            or resources[0]["resource"].get("resourceType") != "Patient"
        ):
            raise YilianError(
                Category.INVALID, "Patient/$match needs exactly one 'resource' parameter holding a Patient"
            )
        patient = resources[0]["resource"]
        check_identifiers(patient)
        # A number its issuer has withdrawn (a lost card) finds nobody, here as in a search.
        check_lookups(
            ctx.settings.lookup_guards,
            uow,
            [
                (i["system"], i["value"])
                for i in patient.get("identifier") or []
                if isinstance(i, dict)
                and isinstance(i.get("system"), str)
                and isinstance(i.get("value"), str)
            ],
            ctx.policy,
        )
        only_certain = any(p.get("valueBoolean") is True for p in _param(req.body, "onlyCertainMatches"))
        count_p = _param(req.body, "count")
        count = count_p[0].get("valueInteger") if count_p else 10
        if not isinstance(count, int) or not 1 <= count <= 100:
            raise YilianError(Category.INVALID, "count must be an integer between 1 and 100")
        query_id = str(patient.get("id") or "$match")
        record = record_from_patient(query_id, patient)
        min_grade: Grade = "certain" if only_certain else "possible"
        # Every candidate person is weighed (one the caller may not see must not take the place
        # of one it may); the list is cut to ``count`` after.
        candidates = service.find_candidates(uow, record, limit=_ALL_CANDIDATES, min_grade=min_grade)
        entries: list[dict[str, Any]] = []
        shown: set[str] = set()
        for pid, grade, probability in _visible_matches(uow, ctx, record, candidates, min_grade, count):
            stored = current_by_keys(uow.conn, [("Patient", pid)])
            if not stored or stored[0].content is None:
                continue
            shown.add(pid)
            entries.append(
                {
                    "fullUrl": ctx.url_for("Patient", pid),
                    "resource": orjson.loads(stored[0].content),
                    "search": {
                        "extension": [{"url": MATCH_GRADE, "valueCode": grade}],
                        "mode": "match",
                        "score": round(probability, 4),
                    },
                }
            )
        body = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
        return FhirResponse(200, orjson.dumps(body), patients=frozenset(shown))


def _patients_with_identifier(uow: UnitOfWork, ctx: FhirContext, token: str) -> list[str]:
    # The FHIR search does the work (sensitive identifiers are blind-indexed there); run trusted,
    # since who may see the answer is decided on the person below. Whether the number may be
    # looked up at all (a lost card's) is the caller's question, asked first with its own policy.
    system, value = _split_token(token)
    check_lookups(ctx.settings.lookup_guards, uow, [(system, value)], ctx.policy)
    settings = dataclasses.replace(ctx.settings, lookup_guards=())
    trusted = FhirContext(base_url=ctx.base_url, settings=settings, policy=ALLOW_ALL)
    found = dispatch(
        uow,
        trusted,
        FhirRequest("GET", "Patient", query=[("identifier", token), ("_elements", "id"), ("_count", "100")]),
    )
    bundle = orjson.loads(found.body or b"{}")
    return [
        e["resource"]["id"] for e in bundle.get("entry") or [] if e.get("search", {}).get("mode") == "match"
    ]


def _split_token(token: str) -> tuple[str, str]:
    system, bar, value = token.partition("|")
    if not bar or not system or not value:
        raise YilianError(Category.INVALID, "sourceIdentifier must be <system>|<value> (both parts)")
    return system, value


@dataclass(frozen=True)
class CrossReference:
    person_id: str
    records: list[tuple[str, list[dict[str, Any]]]]  # (patient id, its identifiers)


def cross_reference(uow: UnitOfWork, ctx: FhirContext, token: str) -> CrossReference:
    """The person known by an identifier, with their records and identifiers — those the caller
    may see. The identifier must be on a record the caller may see: a number found only on
    other institutions' records is answered as unknown (it would tell that such a record exists,
    and whose person it is)."""
    _split_token(token)
    persons = {
        p
        for pid in _visible_records(uow, ctx, _patients_with_identifier(uow, ctx, token))
        if (p := service.person_of(uow, pid))
    }
    if len(persons) > 1:
        raise YilianError(
            Category.CONFLICT,
            "the identifier belongs to records of more than one person: a data steward must review it",
        )
    if not persons:
        raise YilianError(Category.NOT_FOUND, "no person is known by that identifier")
    person_id = persons.pop()
    records = _visible_records(uow, ctx, service.records_of(uow, person_id))
    out = []
    for stored in sorted(
        current_by_keys(uow.conn, [("Patient", p) for p in records]), key=lambda s: s.res_id
    ):
        content = orjson.loads(stored.content or b"{}")
        out.append((stored.res_id, [i for i in content.get("identifier") or [] if isinstance(i, dict)]))
    return CrossReference(person_id, out)


@dataclass(frozen=True)
class PixOperation:
    """``GET Patient/$ihe-pix?sourceIdentifier=system|value[&targetSystem=…]`` (IHE PIXm)."""

    name: str = "ihe-pix"
    resource_type: str | None = "Patient"
    instance: bool = False
    affects_state: bool = False
    definition: str = "https://profiles.ihe.net/ITI/PIXm/OperationDefinition/IHE.PIXm.pix"

    def run(
        self, uow: UnitOfWork, ctx: FhirContext, req: FhirRequest, resource_id: str | None
    ) -> FhirResponse:
        if req.method.upper() not in ("GET", "HEAD"):
            raise YilianError(Category.NOT_ALLOWED, "Patient/$ihe-pix is a GET")
        require(ctx.policy, READ, "Patient")
        sources = [v for k, v in req.query if k == "sourceIdentifier"]
        if len(sources) != 1:
            raise YilianError(Category.INVALID, "give exactly one sourceIdentifier=<system>|<value>")
        targets = {v for k, v in req.query if k == "targetSystem"}
        xref = cross_reference(uow, ctx, sources[0])
        params: list[dict[str, Any]] = []
        for pid, idents in xref.records:
            for ident in idents:
                if (not targets or ident.get("system") in targets) and _usable(uow, ctx, ident):
                    params.append({"name": "targetIdentifier", "valueIdentifier": ident})
            params.append({"name": "targetId", "valueReference": {"reference": f"Patient/{pid}"}})
        params.append({"name": "targetId", "valueReference": {"reference": f"Person/{xref.person_id}"}})
        body = {"resourceType": "Parameters", "parameter": params}
        return FhirResponse(200, orjson.dumps(body), patients=frozenset(pid for pid, _ in xref.records))


def _usable(uow: UnitOfWork, ctx: FhirContext, ident: dict[str, Any]) -> bool:
    """Whether a cross-reference answer should offer this identifier: PIX tells a system the
    numbers to find the person by now, so not one that was retired (``use`` old: a replaced or
    revoked card) or that the system issuing it refuses lookups by (a card reported lost)."""
    if ident.get("use") == "old":
        return False
    system, value = ident.get("system"), ident.get("value")
    if not isinstance(value, str) or not value:
        return False
    try:
        check_lookups(
            ctx.settings.lookup_guards,
            uow,
            [(system if isinstance(system, str) else None, value)],
            ctx.policy,
        )
    except YilianError:
        return False
    return True


def _person_resource(
    uow: UnitOfWork, view: service.PersonView, records: list[tuple[str, str]], survivor_link: bool
) -> dict[str, Any]:
    """The Person built from ``records`` — (patient id, how linked), the ones the caller may
    see — and, when ``survivor_link``, the link to the person it was merged into.

    How a record was linked is evidence about the records it was matched against: when some of
    the person's records are left out, every link says ``level2`` (what a record registered
    alone says), so that "linked automatically" does not tell that another record exists."""
    whole = len(records) == len(view.records)
    stored = {
        s.res_id: orjson.loads(s.content or b"{}")
        for s in current_by_keys(uow.conn, [("Patient", p) for p, _ in records])
    }
    identifiers: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    names: list[dict[str, Any]] = []
    for pid, _ in records:
        content = stored.get(pid) or {}
        for ident in content.get("identifier") or []:
            key = (str(ident.get("system")), str(ident.get("value")))
            if key not in seen:
                seen.add(key)
                identifiers.append(ident)
        if not names and content.get("name"):
            names = content["name"]
    out: dict[str, Any] = {"resourceType": "Person", "id": view.person_id, "active": view.status == "active"}
    if identifiers:
        out["identifier"] = identifiers
    if names:
        out["name"] = names
    links = [
        {
            "target": {"reference": f"Patient/{pid}"},
            "assurance": _ASSURANCE.get(how, "level2") if whole else _ASSURANCE[service.NEW],
        }
        for pid, how in records
    ]
    if view.merged_into and survivor_link:
        links.append({"target": {"reference": f"Person/{view.merged_into}"}, "assurance": "level4"})
    if links:
        out["link"] = links
    return out


class PersonView:
    """``/fhir/Person``: one Person per resident, linking each institution's record of them that
    the caller may see."""

    def _resource(
        self, uow: UnitOfWork, ctx: FhirContext, person_id: str
    ) -> tuple[Resource, list[str]] | None:
        """The Person as this caller may see it, with the records it shows; None when the caller
        may see none of the person's records (nor, for a merged-away person, the survivor's)."""
        try:
            view = service.person_view(uow, person_id)
        except YilianError:
            return None
        records = [(pid, how) for pid, how, _ in view.records if _visible(uow, ctx, pid)]
        survivor_link = bool(
            view.merged_into and _visible_records(uow, ctx, service.records_of(uow, view.merged_into))
        )
        if not records and not survivor_link:
            return None
        body = _person_resource(uow, view, records, survivor_link)
        resource = Resource(
            "Person", person_id, 1, int(dt.datetime.now(dt.UTC).timestamp() * 1_000_000), orjson.dumps(body)
        )
        return resource, [pid for pid, _ in records]

    def read(self, uow: UnitOfWork, ctx: FhirContext, resource_id: str) -> FhirResponse:
        require(ctx.policy, READ, "Person")
        found = self._resource(uow, ctx, resource_id)
        if found is None:
            raise YilianError(Category.NOT_FOUND, f"Person/{resource_id} does not exist")
        r, shown = found
        return FhirResponse(200, r.content, resource_headers(r, ctx), r, patients=frozenset(shown))

    def search(
        self, uow: UnitOfWork, ctx: FhirContext, pairs: list[tuple[str, str]], *, path: str
    ) -> FhirResponse:
        require(ctx.policy, SEARCH, "Person")
        wanted = [(k, v) for k, v in pairs if k not in ("_format", "_pretty")]
        persons: set[str] | None = None
        for k, v in wanted:
            if k == "identifier":
                try:
                    found = {cross_reference(uow, ctx, v).person_id}
                except YilianError as err:
                    if err.category is not Category.NOT_FOUND:
                        raise
                    found = set()
            elif k in ("link", "patient"):
                # A record the caller may not see names no person (not even one it may see).
                pid = v.split("/")[-1]
                p = service.person_of(uow, pid) if _visible(uow, ctx, pid) else None
                found = {p} if p else set()
            elif k == "_id":
                found = set(v.split(","))
            else:
                raise YilianError(
                    Category.INVALID,
                    f"Person is searched by identifier, link (or patient) and _id; {k!r} is not supported",
                )
            persons = found if persons is None else persons & found
        if persons is None:
            raise YilianError(
                Category.INVALID, "search Person by identifier=<system>|<value>, link=Patient/<id> or _id"
            )
        shown = [r for p in sorted(persons) if (r := self._resource(uow, ctx, p)) is not None]
        matches = [r for r, _ in shown]
        body = bundles.searchset(
            ctx, path=path, used=wanted, matches=matches, included=[], total=len(matches), next_cursor=None
        )
        return FhirResponse(200, body, patients=frozenset(pid for _, records in shown for pid in records))


def operations() -> tuple[Any, ...]:
    return (MatchOperation(), PixOperation())


def virtual_types() -> dict[str, Any]:
    return {"Person": PersonView()}
