"""The write pipeline every interaction shares: validate, stamp, index, store, check references.

Reference checks are deferred to :func:`finish`, run once before the unit of work commits, so
that a transaction bundle may create resources that refer to each other in any order, and may
delete a resource together with everything that refers to it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import orjson
from sqlalchemy import Connection, select

from yilian.db import UnitOfWork
from yilian.fhir import validation
from yilian.fhir.access import SEVERAL_PATIENTS, Write, WriteRefusal, check_write, not_visible
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.outcome import Resource
from yilian.fhir.model import load_definition, model
from yilian.fhir.search.indexer import IndexRows, extract, parse_reference
from yilian.fhir.search.values import instant_to_us, us_to_instant
from yilian.fhir.store import repository as repo
from yilian.fhir.store import sealing
from yilian.fhir.store.repository import StoredVersion
from yilian.fhir.store.tables import resource as resource_table
from yilian.kernel import clock
from yilian.kernel.errors import Category, Issue, YilianError
from yilian.kernel.ids import is_valid_fhir_id

_REFS = "yilian.fhir.pending_refs"
_DELETED = "yilian.fhir.deleted"
_DEFER = "yilian.fhir.defer_checks"
_BUFFER = "yilian.fhir.write_buffer"
# The patients whose records this unit of work wrote (for the audit log).
TOUCHED = "yilian.fhir.touched_patients"
# Patients the access decision let a caller write into in this unit of work, and writes about
# patients it had no reason for that are decided in finish (a patient not registered yet; any
# inside a transaction), with the references that named them. Both by (caller identity,
# patient): a unit of work may act for several callers.
_APPROVED = "yilian.fhir.write_approved"
_PENDING = "yilian.fhir.pending_patients"


@dataclass
class _WriteBuffer:
    """Version and index rows written by this unit of work but not yet sent to the database.

    A transaction Bundle of 400 resources then costs one INSERT per resource (its row, whose
    key the index rows need) plus one executemany per table, instead of a dozen statements
    per resource. Anything that reads versions or index rows flushes first.
    """

    versions: list[dict[str, Any]] = field(default_factory=list)
    index: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pks: set[int] = field(default_factory=set)


def _buffer(uow: UnitOfWork) -> _WriteBuffer:
    buf = uow.state.get(_BUFFER)
    if buf is None:
        buf = uow.state[_BUFFER] = _WriteBuffer()
        uow.before_commit.append(lambda: flush(uow))
    return buf  # type: ignore[no-any-return]


def flush(uow: UnitOfWork) -> None:
    """Send buffered version and index rows to the database (before reading them back).

    The buffer is emptied in place, not replaced: a write that holds it across a call that
    flushes (authorizing a write reads stored rows) must still be adding to the live buffer.
    """
    buf: _WriteBuffer | None = uow.state.get(_BUFFER)
    if buf is not None and (buf.versions or buf.index):
        versions, index = buf.versions, buf.index
        buf.versions, buf.index, buf.pks = [], {}, set()
        repo.write_rows(uow.conn, versions, index)


def _buffer_index(buf: _WriteBuffer, pk: int, rows: IndexRows) -> None:
    buf.pks.add(pk)
    for kind, kind_rows in rows.items():
        for r in kind_rows:
            r["resource_pk"] = pk
        buf.index.setdefault(kind, []).extend(kind_rows)


def now_us(after: int | None = None) -> int:
    """Now, strictly after ``after`` so that versions of one resource have increasing times."""
    t = instant_to_us(clock.now())
    return t if after is None or t > after else after + 1


@cache
def _patient_compartment_params() -> dict[str, frozenset[str]]:
    raw: dict[str, dict[str, list[str]]] = load_definition("compartments")
    return {rtype: frozenset(params) for rtype, params in raw["Patient"].items() if params}


def patient_key(res_type: str, res_id: str, rows: IndexRows, uow: UnitOfWork | None = None) -> str | None:
    """The Patient whose compartment holds this resource (the distribution key when sharded,
    and what access decisions look at).

    A resource of a compartment type that names no Patient itself — a Provenance of an
    Observation, a DiagnosticReport about a Specimen — belongs to the compartment of what it
    refers to, or it would be visible to every institution as if it were registry data.
    """
    if res_type == "Patient":
        return res_id
    params = _patient_compartment_params().get(res_type)
    if not params:
        return None
    refs = rows.get("reference", ())
    for row in refs:
        if row["param"] in params and row["target_type"] == "Patient":
            return str(row["target_id"])
    if uow is None:
        return None
    targets = {(r["target_type"], r["target_id"]) for r in refs if r["target_type"] and r["target_id"]}
    targets.discard((res_type, res_id))
    if not targets:
        return None
    flush(uow)
    for found in repo.current_by_keys(uow.conn, targets):
        if found.patient_key:
            return found.patient_key
    return None


def in_patient_compartment(res_type: str) -> bool:
    """Whether resources of this type belong to a patient's compartment when they name one."""
    return res_type == "Patient" or bool(_patient_compartment_params().get(res_type))


# Types outside the patient compartment that are shared registry or definitions: never one
# patient's data, whatever they refer to. Every other type outside the compartment (Task,
# Binary, Bundle, Contract, Device, Linkage, MessageHeader, Parameters…) belongs to the patients
# it names, directly or through what it refers to or contains.
_SHARED_TYPES = frozenset(
    {
        "ActivityDefinition", "CapabilityStatement", "CatalogEntry", "ChargeItemDefinition", "CodeSystem",
        "CompartmentDefinition", "ConceptMap", "DeviceDefinition", "EffectEvidenceSynthesis", "Endpoint",
        "EventDefinition", "Evidence", "EvidenceVariable", "ExampleScenario", "GraphDefinition",
        "HealthcareService", "ImplementationGuide", "InsurancePlan", "Library", "Location", "Measure",
        "Medication", "MedicationKnowledge", "MedicinalProduct", "MedicinalProductAuthorization",
        "MedicinalProductContraindication", "MedicinalProductIndication", "MedicinalProductIngredient",
        "MedicinalProductInteraction", "MedicinalProductManufactured", "MedicinalProductPackaged",
        "MedicinalProductPharmaceutical", "MedicinalProductUndesirableEffect", "MessageDefinition",
        "NamingSystem", "ObservationDefinition", "OperationDefinition", "Organization",
        "OrganizationAffiliation", "PlanDefinition", "Practitioner", "PractitionerRole", "Questionnaire",
        "ResearchDefinition", "ResearchElementDefinition", "RiskEvidenceSynthesis", "SearchParameter",
        "SpecimenDefinition", "StructureDefinition", "StructureMap", "Subscription", "Substance",
        "SubstanceNucleicAcid", "SubstancePolymer", "SubstanceProtein", "SubstanceReferenceInformation",
        "SubstanceSourceMaterial", "SubstanceSpecification", "TerminologyCapabilities", "TestReport",
        "TestScript", "ValueSet",
    }
)  # fmt: skip


@dataclass
class Named:
    """The patients a resource outside the compartment names: directly (a reference to a Patient,
    a Patient it contains), through the resources it refers to (``targets``, resolved to their
    own patient keys), or a Patient it contains that has no id (``unknown``: whose is not known)."""

    patients: set[str] = field(default_factory=set)
    targets: set[tuple[str, str]] = field(default_factory=set)
    unknown: bool = False


def holds_patient_data(res_type: str) -> bool:
    """Whether resources of this type outside the compartment may belong to patients."""
    return res_type not in _SHARED_TYPES and not in_patient_compartment(res_type)


def named_patients(res_type: str, res_id: str, resource: dict[str, Any], base_url: str | None) -> Named:
    out = Named()

    def walk(node: Any, top: bool) -> None:
        if isinstance(node, dict):
            if not top and node.get("resourceType") == "Patient":
                pid = node.get("id")
                if isinstance(pid, str) and pid:
                    out.patients.add(pid)
                else:
                    out.unknown = True
            ref = node.get("reference")
            if isinstance(ref, str) and ref and not ref.startswith("#"):
                parsed = parse_reference(ref, base_url)
                if parsed.type == "Patient" and parsed.id:
                    out.patients.add(parsed.id)
                elif parsed.type and parsed.id and parsed.type not in _SHARED_TYPES:
                    out.targets.add((parsed.type, parsed.id))
            for val in node.values():
                if isinstance(val, (dict, list)):
                    walk(val, False)
        elif isinstance(node, list):
            for item in node:
                walk(item, False)

    walk(resource, True)
    out.targets.discard((res_type, res_id))
    return out


def key_of(named: Named, resolved: dict[tuple[str, str], str | None]) -> tuple[str | None, frozenset[str]]:
    """The patient key and the patients of a resource outside the compartment, its targets'
    keys ``resolved`` (a target not in it is not stored: it names no patient)."""
    patients = set(named.patients)
    several = named.unknown
    for target in named.targets:
        key = resolved.get(target)
        if key == SEVERAL_PATIENTS:
            several = True
        elif key:
            patients.add(key)
    if several or len(patients) > 1:
        return SEVERAL_PATIENTS, frozenset(patients)
    return (next(iter(patients)) if patients else None), frozenset(patients)


def stored_patient_keys(conn: Connection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
    """The patient keys of the current, undeleted resources among ``keys``."""
    out: dict[tuple[str, str], str | None] = {}
    r = resource_table
    for res_type, chunk in repo.keys_by_type(keys):
        rows = conn.execute(
            select(r.c.res_id, r.c.patient_key).where(
                r.c.res_type == res_type, r.c.res_id.in_(chunk), r.c.deleted.is_(False)
            )
        )
        out.update(((res_type, row.res_id), row.patient_key) for row in rows)
    return out


def compartment(
    uow: UnitOfWork, ctx: FhirContext, res_type: str, res_id: str, resource: dict[str, Any], rows: IndexRows
) -> tuple[str | None, frozenset[str]]:
    """The patient key of a resource about to be stored, and every patient whose data it holds."""
    if not holds_patient_data(res_type):
        key = patient_key(res_type, res_id, rows, uow)
        return key, frozenset({key}) if key and key != SEVERAL_PATIENTS else frozenset()
    named = named_patients(res_type, res_id, resource, ctx.base_url)
    resolved: dict[tuple[str, str], str | None] = {}
    if named.targets:
        flush(uow)
        resolved = stored_patient_keys(uow.conn, named.targets)
    return key_of(named, resolved)


def check_body(resource: Any, res_type: str | None = None) -> dict[str, Any]:
    """The resource is a JSON object of ``res_type`` that passes validation."""
    if not isinstance(resource, dict):
        raise YilianError(Category.INVALID, "the request body must be a FHIR resource (a JSON object)")
    rt = resource.get("resourceType")
    if not isinstance(rt, str) or not rt:
        raise YilianError(
            Category.INVALID,
            "the resource has no resourceType",
            issues=[Issue("the resource has no resourceType", ("resourceType",), code="required")],
        )
    if res_type is not None and rt != res_type:
        raise YilianError(
            Category.INVALID,
            f"the body is a {rt} but the URL is for {res_type}",
            issues=[Issue(f"resourceType {rt} does not match the URL's {res_type}", ("resourceType",))],
        )
    if not model().is_resource_type(rt):
        raise YilianError(
            Category.NOT_FOUND if res_type is None else Category.INVALID,
            f"unknown resource type {rt!r}",
            issues=[Issue(f"unknown resource type {rt!r}", ("resourceType",), code="not-supported")],
        )
    drop_empty_strings(resource)
    issues = validation.validate(resource)
    if any(i.severity in ("error", "fatal") for i in issues):
        # Lenient reading, as mature FHIR parsers do: a single value where the element repeats
        # is taken as a one-item list. Only tried when the strict check fails.
        if coerce_arrays(resource, rt):
            issues = validation.validate(resource)
        errors = [i for i in issues if i.severity in ("error", "fatal") and not _nested_required(i)]
        if errors:
            first = errors[0]
            raise YilianError(
                Category.UNPROCESSABLE,
                f"the {rt} is not valid FHIR R4: {first.message}"
                + (f" ({', '.join(first.expression)})" if first.expression else ""),
                issues=errors,
            )
    return resource


def _nested_required(issue: Issue) -> bool:
    """A required element missing below the top level of a resource.

    Feeds in the field often omit these (an ImagingStudy series without modality) while the
    rest stays interpretable, so they are accepted; a resource missing a required top-level
    element (an Observation without code) is refused.
    """
    if issue.code != "required" or not issue.expression:
        return False
    path = issue.expression[0]
    for marker in (".resource.", ".contained["):
        if marker in path:
            path = path.rsplit(marker, 1)[1]
            path = path.split("].", 1)[1] if marker == ".contained[" and "]." in path else path
    return path.count(".") > 1


def coerce_arrays(node: Any, type_name: str) -> bool:
    """Wrap single values of repeating elements in lists; returns whether anything changed."""
    changed = False
    if isinstance(node, list):
        for item in node:
            changed |= coerce_arrays(item, type_name)
        return changed
    if not isinstance(node, dict):
        return False
    if type_name in ("Resource", "DomainResource") and isinstance(node.get("resourceType"), str):
        type_name = node["resourceType"]
    struct = model().structure(type_name)
    if struct is None:
        return False
    for key, value in list(node.items()):
        prop = struct.properties.get(key[1:] if key.startswith("_") else key)
        if prop is None:
            continue
        spec, element_type = prop
        if spec.repeating and not isinstance(value, list):
            node[key] = [value]
            changed = True
        if isinstance(value, (dict, list)) and not model().is_primitive(element_type):
            changed |= coerce_arrays(node[key], element_type)
    return changed


def drop_empty_strings(node: Any) -> bool:
    """Remove ``""`` values (and the objects left empty by that), as lenient FHIR parsers do.

    FHIR forbids empty strings; several systems in the field send them for "no value"
    (``"system": ""``). Treating them as absent keeps such data loadable without storing
    invalid FHIR. Returns whether ``node`` itself became empty.
    """
    if isinstance(node, dict):
        for key in [
            k for k, v in node.items() if v == "" or (isinstance(v, (dict, list)) and drop_empty_strings(v))
        ]:
            del node[key]
        return not node
    if isinstance(node, list):
        if any(isinstance(item, (dict, list)) for item in node):
            for item in node:
                drop_empty_strings(item)
        return False
    return False


def local_references(node: Any, path: str) -> Iterator[tuple[str, str, str, str]]:
    """(type, id, raw reference, element path) for every reference to a resource on this server."""
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and ref and not ref.startswith("#"):
            parsed = parse_reference(ref)
            if parsed.type and parsed.id:
                yield parsed.type, parsed.id, ref, path
        for key, val in node.items():
            if key != "contained" and isinstance(val, (dict, list)):
                yield from local_references(val, f"{path}.{key}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from local_references(item, f"{path}[{i}]")


def _stamp(resource: dict[str, Any], res_id: str, version: int, last_updated: int) -> bytes:
    resource["id"] = res_id
    meta = resource.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta["versionId"] = str(version)
    meta["lastUpdated"] = us_to_instant(last_updated)
    # resourceType, id and meta first, as FHIR servers conventionally serialize them.
    ordered = {"resourceType": resource["resourceType"], "id": res_id, "meta": meta}
    for key, val in resource.items():
        if key not in ordered:
            ordered[key] = val
    resource.clear()
    resource.update(ordered)
    return orjson.dumps(resource)


def _for_storage(uow: UnitOfWork, resource: dict[str, Any], content: bytes, rows: IndexRows) -> bytes:
    """The bytes to store: sensitive values sealed (when the database has a keyring), and the
    index rows made to hold their blind stand-ins instead of the plain values."""
    keyring = sealing.keyring_for(uow.conn.engine)
    if keyring is None:
        return content
    result = sealing.seal(resource, keyring)
    if not result.sealed:
        return content
    for row in rows.get("token", ()):
        if row["code"] and (blind := sealing.blind_token(row["system"] or "", row["code"], keyring)):
            row["code"] = blind
    for row in rows.get("reference", ()):
        if row["identifier_value"] and (
            blind := sealing.blind_token(row["identifier_system"] or "", row["identifier_value"], keyring)
        ):
            row["identifier_value"] = blind
    scrubber = sealing.Scrubber(result.plaintexts)
    for kind in ("text", "string"):
        for row in rows.get(kind, ()):
            for col in ("content_norm", "value_norm", "value_exact"):
                if row.get(col):
                    row[col] = scrubber.scrub(row[col])
    return orjson.dumps(result.resource)


def _remember_refs(
    uow: UnitOfWork, ctx: FhirContext, res_type: str, res_id: str, resource: dict[str, Any]
) -> None:
    if not ctx.settings.enforce_referential_integrity:
        return
    pending: dict[tuple[str, str], str] = uow.state.setdefault(_REFS, {})
    for rtype, rid, raw, path in local_references(resource, res_type):
        if (rtype, rid) != (res_type, res_id):
            pending.setdefault((rtype, rid), f"{path} ({raw})")


def before_store(uow: UnitOfWork, ctx: FhirContext, res_type: str, resource: dict[str, Any]) -> None:
    """The observers that see a resource before it is stored (``before_write``): they may
    normalise it in place or refuse it."""
    for observer in ctx.settings.observers:
        prepare = getattr(observer, "before_write", None)
        if prepare is not None:
            prepare(uow, ctx, res_type, resource)


def authorize(uow: UnitOfWork, ctx: FhirContext, write: Write) -> None:
    """Let the access decision see a write before it is stored; raise if it is refused.

    A caller without a reason for a patient the write names is answered as if what names the
    patient did not exist: the 422 of a reference to a missing resource (404 for a deletion), so
    writing cannot tell an existing patient from one that is not there. A write naming a patient
    with no record yet, and any such write inside a transaction, is decided when the unit of
    work finishes — good only if the same caller registered the patient (or established its
    reason) in it — and refused then exactly as a reference to nothing would be.
    """
    refusal = check_write(ctx.policy, uow, write)
    who = ctx.policy.identity
    if refusal is None:
        uow.state.setdefault(_APPROVED, set()).update((who, k) for k in write.patients)
        return
    if refusal.message is not None or write.resource is None:
        raise refused(uow, ctx, write, refusal, {})
    blamed = _blamed(uow, write)
    key = write.patient_key
    if (
        blamed
        and key is not None
        and write.patients == {key}
        and (write.resource_type, write.resource_id) != ("Patient", key)
        and (uow.state.get(_DEFER) or not _has_row(uow.conn, "Patient", key))
    ):
        pending: dict[tuple[str, str], dict[tuple[str, str], str]] = uow.state.setdefault(_PENDING, {})
        pending.setdefault((who, key), {}).update(blamed)
        return
    raise refused(uow, ctx, write, refusal, blamed)


def _has_row(conn: Connection, res_type: str, res_id: str) -> bool:
    r = resource_table
    stmt = select(r.c.pk).where(r.c.res_type == res_type, r.c.res_id == res_id)
    return conn.execute(stmt).first() is not None


def _references(write: Write) -> list[tuple[str, str, str, str]]:
    assert write.resource is not None
    own = (write.resource_type, write.resource_id)
    return [r for r in local_references(write.resource, write.resource_type) if r[:2] != own]


def _blamed(uow: UnitOfWork, write: Write) -> dict[tuple[str, str], str]:
    """The references that name the write's patients (directly, else through what they lead
    to): what a refusal says does not exist, never the patient behind them."""
    refs = _references(write)
    blamed: dict[tuple[str, str], str] = {}
    for rtype, rid, raw, path in refs:
        if rtype == "Patient" and rid in write.patients:
            blamed.setdefault((rtype, rid), f"{path} ({raw})")
    if not blamed and refs:
        flush(uow)
        keys = stored_patient_keys(uow.conn, {(t, i) for t, i, _, _ in refs})
        for rtype, rid, raw, path in refs:
            if keys.get((rtype, rid)) in write.patients or keys.get((rtype, rid)) == SEVERAL_PATIENTS:
                blamed.setdefault((rtype, rid), f"{path} ({raw})")
    return blamed


def refused(
    uow: UnitOfWork, ctx: FhirContext, write: Write, refusal: WriteRefusal, blamed: dict[tuple[str, str], str]
) -> YilianError:
    """The answer to a refused write (see :func:`authorize`)."""
    if refusal.message is not None:
        return YilianError(Category.FORBIDDEN, refusal.message)
    if write.resource is None:
        return not_visible(write.resource_type, write.resource_id)
    if not blamed:
        # Nothing refers to the patient (a Bundle holding a Patient): the same for every patient.
        return YilianError(
            Category.FORBIDDEN, f"this caller may not write this {write.resource_type}: it holds patient data"
        )
    missing = dict(blamed)
    if ctx.settings.enforce_referential_integrity:
        refs = _references(write)
        found = repo.existing(uow.conn, {(t, i) for t, i, _, _ in refs})
        for rtype, rid, raw, path in refs:
            if (rtype, rid) not in found:
                missing.setdefault((rtype, rid), f"{path} ({raw})")
    return missing_error(sorted(missing.items()))


def missing_error(missing: list[tuple[tuple[str, str], str]]) -> YilianError:
    """What a write referring to resources that do not exist (for its caller) is told."""
    issues = [
        Issue(
            f"{t}/{i} does not exist (referenced from {where})", (where.split(" ", 1)[0],), code="not-found"
        )
        for (t, i), where in sorted(missing)
    ]
    (t0, i0), _ = sorted(missing)[0]
    return YilianError(
        Category.UNPROCESSABLE, f"reference to a resource that does not exist: {t0}/{i0}", issues=issues
    )


def store_new(
    uow: UnitOfWork,
    ctx: FhirContext,
    resource: dict[str, Any],
    *,
    res_id: str,
    method: str,
) -> Resource:
    """Write version 1 of a new resource (validated by the caller)."""
    res_type = resource["resourceType"]
    if not is_valid_fhir_id(res_id):
        raise YilianError(
            Category.INVALID, f"{res_id!r} is not a valid FHIR id ([A-Za-z0-9-.], 1-64 characters)"
        )
    if res_type == "Patient" and res_id == SEVERAL_PATIENTS:
        raise YilianError(Category.INVALID, f"the id {SEVERAL_PATIENTS!r} is reserved; choose another")
    before_store(uow, ctx, res_type, resource)
    last_updated = now_us()
    content = _stamp(resource, res_id, 1, last_updated)
    rows = extract(resource, res_type, base_url=ctx.base_url)
    pkey, patients = compartment(uow, ctx, res_type, res_id, resource, rows)
    authorize(uow, ctx, Write(res_type, res_id, resource, pkey, patients, is_new=True))
    stored = _for_storage(uow, resource, content, rows)
    pk = repo.insert_resource(
        uow.conn,
        res_type=res_type,
        res_id=res_id,
        last_updated=last_updated,
        content=stored,
        patient_key=pkey,
        method=method,
        write_version=False,
    )
    buf = _buffer(uow)
    buf.versions.append(repo.version_row(pk, res_type, res_id, 1, last_updated, stored, method, pkey))
    _buffer_index(buf, pk, rows)
    if patients:
        uow.state.setdefault(TOUCHED, set()).update(patients)
    for observer in ctx.settings.observers:
        observer.on_write(uow, ctx, res_type, res_id, resource, pkey)
    _remember_refs(uow, ctx, res_type, res_id, resource)
    return Resource(res_type, res_id, 1, last_updated, content, False, method, pk, pkey)


def store_next(
    uow: UnitOfWork,
    ctx: FhirContext,
    current: StoredVersion,
    resource: dict[str, Any] | None,
    *,
    method: str,
) -> Resource:
    """Write the next version of ``current`` (``resource=None`` deletes). 412 if someone got there first."""
    if resource is not None:
        before_store(uow, ctx, current.res_type, resource)
    if current.pk in _buffer(uow).pks:
        flush(uow)  # its earlier rows in this unit of work must be in the table to be replaced
    version = current.version + 1
    last_updated = now_us(current.last_updated)
    stored: bytes | None = None
    if resource is None:
        content: bytes | None = None
        rows: IndexRows = {}
        # A deletion stays in the compartment of what it deleted: history and reads of it are
        # decided like those of the resource itself.
        pkey = current.patient_key
        patients = frozenset({pkey}) if pkey and pkey != SEVERAL_PATIENTS else frozenset()
    else:
        content = _stamp(resource, current.res_id, version, last_updated)
        rows = extract(resource, current.res_type, base_url=ctx.base_url)
        pkey, patients = compartment(uow, ctx, current.res_type, current.res_id, resource, rows)
    authorize(
        uow,
        ctx,
        Write(
            current.res_type,
            current.res_id,
            resource,
            pkey,
            patients,
            is_new=False,
            previous=None if current.deleted else current.content,
            previous_key=current.patient_key,
        ),
    )
    if resource is not None:
        assert content is not None
        stored = _for_storage(uow, resource, content, rows)
    # Only now: working out the compartment and authorizing may flush (and so drop) the buffer.
    buf = _buffer(uow)
    ok = repo.write_version(
        uow.conn,
        pk=current.pk,
        res_type=current.res_type,
        res_id=current.res_id,
        expected_version=current.version,
        last_updated=last_updated,
        content=stored,
        patient_key=pkey,
        method=method,
        buffer=buf.versions,
    )
    if not ok:
        raise YilianError(
            Category.CONFLICT,
            f"{current.res_type}/{current.res_id} was changed by another request; retry with its new version",
        )
    repo.delete_index(uow.conn, current.pk)
    _buffer_index(buf, current.pk, rows)
    if resource is None:
        if ctx.settings.enforce_delete_integrity:
            uow.state.setdefault(_DELETED, set()).add((current.res_type, current.res_id))
    else:
        _remember_refs(uow, ctx, current.res_type, current.res_id, resource)
    if patients:
        uow.state.setdefault(TOUCHED, set()).update(patients)
    for observer in ctx.settings.observers:
        observer.on_write(uow, ctx, current.res_type, current.res_id, resource, pkey)
    return Resource(
        current.res_type,
        current.res_id,
        version,
        last_updated,
        content,
        resource is None,
        method,
        current.pk,
        pkey,
    )


# The bulk writer (bulk_write.py) runs the same steps per chunk.
stamp = _stamp
for_storage = _for_storage


@contextmanager
def savepoint(uow: UnitOfWork) -> Iterator[Callable[[], None]]:
    """A nested transaction; call the yielded function to roll it (and its pending checks) back."""
    flush(uow)  # so that a rollback discards exactly the rows written inside
    saved = {
        k: (dict(v) if isinstance(v, dict) else set(v))
        for k, v in uow.state.items()
        if k in (_REFS, _DELETED, _APPROVED)
    }
    if _PENDING in uow.state:
        saved[_PENDING] = {k: dict(v) for k, v in uow.state[_PENDING].items()}
    nested = uow.conn.begin_nested()
    done = False

    def rollback() -> None:
        nonlocal done
        uow.state.pop(_BUFFER, None)
        nested.rollback()
        done = True
        for key in (_REFS, _DELETED, _APPROVED, _PENDING):
            uow.state.pop(key, None)
        uow.state.update(saved)

    try:
        yield rollback
    except BaseException:
        if not done:
            rollback()
        raise
    if not done:
        nested.commit()


@contextmanager
def deferred_checks(uow: UnitOfWork) -> Iterator[None]:
    """Within a transaction bundle, check references once at the end rather than per entry."""
    uow.state[_DEFER] = True
    try:
        yield
    finally:
        uow.state.pop(_DEFER, None)


def finish(uow: UnitOfWork, ctx: FhirContext) -> None:
    """Check deferred referential integrity before the unit of work commits.

    A reference to a resource the caller may not see counts as a reference to nothing, and a
    resource still referenced is named only when the caller may see it: neither check tells a
    caller what exists in records it has no reason for.
    """
    if uow.state.get(_DEFER):
        return
    flush(uow)
    pending: dict[tuple[str, str], str] = uow.state.pop(_REFS, {})
    deleted: set[tuple[str, str]] = uow.state.pop(_DELETED, set())
    who = ctx.policy.identity
    waiting = {k[1]: blamed for k, blamed in uow.state.get(_PENDING, {}).items() if k[0] == who}
    if waiting:
        uow.state[_PENDING] = {k: v for k, v in uow.state[_PENDING].items() if k[0] != who}
    approved = {k for w, k in uow.state.get(_APPROVED, set()) if w == who}
    missing: dict[tuple[str, str], str] = {}
    if pending:
        keys = stored_patient_keys(uow.conn, set(pending))
        for target, where in pending.items():
            if target not in keys or not _may_refer(uow, ctx, target, keys[target], approved):
                missing[target] = where
    for patient, blamed in waiting.items():
        # Only a reason this caller established in this unit of work (registering the patient,
        # an encounter at its own institution) makes such a write good: data written ahead of a
        # patient that never comes must not be waiting for whoever registers it.
        if patient not in approved:
            for target, where in blamed.items():
                missing.setdefault(target, where)
    if missing:
        raise missing_error(sorted(missing.items()))
    for res_type, res_id in sorted(deleted):
        refs = repo.referrers(uow.conn, res_type, res_id)
        if refs:
            keys = stored_patient_keys(uow.conn, set(refs))
            seen = [(t, i) for t, i in refs if _may_refer(uow, ctx, (t, i), keys.get((t, i)), approved)]
            names = ", ".join(f"{t}/{i}" for t, i in seen) or "resources this caller may not see"
            raise YilianError(
                Category.CONFLICT,
                f"{res_type}/{res_id} is still referenced by {names}; delete or update those first",
                issues=[Issue(f"{res_type}/{res_id} is referenced by {names}", code="conflict")],
            )


def _may_refer(
    uow: UnitOfWork, ctx: FhirContext, target: tuple[str, str], key: str | None, approved: set[str]
) -> bool:
    """Whether the caller may see (so refer to) a stored resource of patient ``key``."""
    if key is not None and key in approved:
        return True
    return ctx.policy.can_see(uow, target[0], key, target[1])
