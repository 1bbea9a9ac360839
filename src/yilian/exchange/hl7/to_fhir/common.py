"""The parts every message family shares: the transaction Bundle being built, identifier
systems for CX values, and the segments that appear in many messages (PID, PV1, OBX, XCN).

Every resource is written with a conditional create or update keyed by a business identifier
from the message (MRN, visit number, order number, appointment id), so that a message sent
again by a hospital — or replayed from the dead-letter store — updates what the first one wrote
instead of writing it twice.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from yilian.exchange.hl7 import datatypes as t
from yilian.exchange.hl7.errors import Hl7Error
from yilian.exchange.hl7.parse import Message, Rep, Segment
from yilian.kernel import naming, prc_id
from yilian.kernel.errors import YilianError

V2_SID = naming.PLATFORM_SID + "v2/"
"""Root of identifier systems for numbers a hospital's HL7 interface assigns (orders,
appointments, referrals, staff), one namespace per assigning authority."""

Z_SEGMENT_EXTENSION = naming.PLATFORM_EXTENSION + "hl7v2-z-segment"

_PATIENT_ID_TYPES = frozenset({"", "MR", "MRN", "PI", "PT", "PN", "PRN", "MRT", "EPI", "U"})
_V2_0203 = frozenset(
    {
        "MR",
        "PI",
        "PT",
        "SS",
        "NI",
        "NNCHN",
        "PPN",
        "DL",
        "AN",
        "VN",
        "HC",
        "MA",
        "MC",
        "MB",
        "SN",
        "EI",
        "XX",
        "NPI",
        "PRN",
        "EN",
        "DN",
        "BA",
        "BC",
        "FI",
        "RI",
    }
)
_CHINA = frozenset({"CHN", "CN", "PRC", "中国", "公安部"})


@dataclass(frozen=True)
class Origin:
    """Where in the message a Bundle entry came from, so a FHIR failure names a segment."""

    segment: str
    sequence: int
    field: int | None = None


@dataclass
class Mapping_:
    """A message being turned into one FHIR transaction."""

    msg: Message
    authorities: Mapping[str, str] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    origins: list[Origin] = field(default_factory=list)
    _by_key: dict[str, str] = field(default_factory=dict)
    # Work that needs the ids the transaction assigned (A40 merges), run after it.
    merges: list[tuple[dict[str, str], dict[str, str], Origin]] = field(default_factory=list)

    # ------------------------------------------------------------------ bundle

    def add(
        self,
        resource: dict[str, Any],
        origin: Origin,
        *,
        key: tuple[str, str] | None = None,
        create_only: bool = False,
    ) -> str:
        """Add ``resource`` and return its ``urn:uuid`` for references within the Bundle.

        With ``key`` (system, value) the entry is a conditional update on that identifier, or
        a conditional create when ``create_only`` (reference data such as a manufacturer or a
        practitioner, which a message names but does not own). The same key added twice in one
        message is one entry.
        """
        rtype = resource["resourceType"]
        if key is not None:
            dedup = f"{rtype}|{key[0]}|{key[1]}"
            if dedup in self._by_key:
                return self._by_key[dedup]
            ident = {"system": key[0], "value": key[1]}
            idents = resource.setdefault("identifier", [])
            if not any(i.get("system") == key[0] and i.get("value") == key[1] for i in idents):
                idents.insert(0, ident)
        full_url = f"urn:uuid:{uuid.uuid4()}"
        entry: dict[str, Any] = {"fullUrl": full_url, "resource": resource}
        if key is None:
            entry["request"] = {"method": "POST", "url": rtype}
        else:
            query = f"identifier={quote(key[0], safe=':/')}|{quote(key[1], safe='')}"
            if create_only:
                entry["request"] = {"method": "POST", "url": rtype, "ifNoneExist": query}
            else:
                entry["request"] = {"method": "PUT", "url": f"{rtype}?{query}"}
            self._by_key[f"{rtype}|{key[0]}|{key[1]}"] = full_url
        self.entries.append(entry)
        self.origins.append(origin)
        return full_url

    def resource_of(self, full_url: str) -> dict[str, Any]:
        """The resource added under ``full_url`` (what :meth:`add` returned), to change it."""
        return next(e["resource"] for e in self.entries if e["fullUrl"] == full_url)

    def bundle(self) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}

    def origin_of(self, err: YilianError) -> Origin | None:
        m = re.search(r"Bundle\.entry\[(\d+)\]", err.message)
        if m and int(m.group(1)) < len(self.origins):
            return self.origins[int(m.group(1))]
        return None

    # ------------------------------------------------------------------ sender

    @property
    def facility_key(self) -> str:
        """The sending institution as a URI-safe key: MSH-4 (namespace, else universal id), else MSH-3."""
        msh = self.msg.msh
        return t.key(msh.get(4, 1) or msh.get(4, 2) or msh.get(3, 1) or msh.get(3, 2) or "unknown")

    def facility(self) -> str:
        """The sending institution as an Organization (created once, by its MSH-4 identity)."""
        msh = self.msg.msh
        uid, uid_type = msh.get(4, 2), msh.get(4, 3).upper()
        if uid and uid_type == "ISO":
            system, value = "urn:oid:" + uid, uid
        else:
            system, value = V2_SID + "facility", self.facility_key
        org: dict[str, Any] = {
            "resourceType": "Organization",
            "active": True,
            "name": msh.get(4, 1) or msh.get(3, 1) or value,
        }
        return self.add(org, Origin("MSH", 1, 4), key=(system, value), create_only=True)

    # ------------------------------------------------------------------ identifiers

    def identifier_system(self, rep: Rep, *, patient_list: bool = False) -> str:
        """The FHIR ``Identifier.system`` for a CX (docs/identifiers.md, "HL7 v2 identifiers")."""
        value, id_type = rep.c(1), rep.c(5).upper()
        ns, uid, uid_type = rep.c(4, 1), rep.c(4, 2), rep.c(4, 3).upper()
        for candidate in (ns, uid, f"{ns}|{id_type}"):
            if candidate and candidate in self.authorities:
                return self.authorities[candidate]
        if id_type == "NNCHN" or (
            id_type in ("NI", "RI", "CZ", "ID") and (ns.upper() in _CHINA or not ns) and _is_prc_id(value)
        ):
            return naming.PRC_RESIDENT_ID
        if id_type == "HC" and (ns.upper() in _CHINA or not ns):
            return naming.HEALTH_CARD
        if id_type == "SS" and ns.upper() in ("USSSA", "SSA"):
            return "http://hl7.org/fhir/sid/us-ssn"
        if id_type == "PPN":
            return naming.passport_system(ns.upper() if re.fullmatch(r"[A-Za-z]{3}", ns) else "CHN")
        authority = t.key(ns or uid) if (ns or uid) else self.facility_key
        if id_type in _PATIENT_ID_TYPES or (patient_list and id_type not in _V2_0203):
            # In PID-3 an unknown CX-5 is a sender's own label for its record number.
            return naming.mrn_system(authority)
        if id_type == "VN":
            return naming.visit_number_system(authority)
        if uid and uid_type == "ISO" and re.fullmatch(r"\d+(\.\d+)+", uid):
            return f"urn:oid:{uid}"
        return f"{V2_SID}{authority}/{t.key(id_type)}"

    def identifier(self, rep: Rep, *, patient_list: bool = False) -> dict[str, Any] | None:
        value = rep.c(1)
        if not value or value == '""':
            return None
        ident: dict[str, Any] = {
            "system": self.identifier_system(rep, patient_list=patient_list),
            "value": value,
        }
        id_type = rep.c(5).upper()
        if id_type in _V2_0203:
            ident["type"] = {"coding": [{"system": naming.V2_IDENTIFIER_TYPE, "code": id_type}]}
        elif id_type:
            ident["type"] = {"text": id_type}
        if ident["system"] == naming.PRC_RESIDENT_ID:
            ident["value"] = prc_id.parse(value).number if _is_prc_id(value) else value
        return ident

    def order_key(self, rep: Rep, kind: str = "order") -> tuple[str, str] | None:
        """An EI (order, appointment, referral number) as (system, value): one namespace per
        assigning authority (EI-2 namespace, else EI-3 universal id, else the sender)."""
        value = rep.c(1)
        if not value:
            return None
        authority = t.key(rep.c(2) or rep.c(3)) if (rep.c(2) or rep.c(3)) else self.facility_key
        return f"{V2_SID}{kind}/{authority}", value

    # ------------------------------------------------------------------ people

    def practitioner(self, rep: Rep, seg: Segment, n: int) -> dict[str, Any] | None:
        """A Reference for an XCN: a Practitioner created once per staff id and authority; a name
        without an id stays a display (it cannot be told apart from a namesake)."""
        name = t.xcn_name(rep)
        staff_id = rep.c(1)
        display = " ".join(x for x in (rep.c(6), rep.c(3), rep.c(4), rep.c(2)) if x) or staff_id
        if not staff_id:
            return {"display": display} if name else None
        authority = t.key(rep.c(9, 1) or rep.c(9, 2)) if (rep.c(9, 1) or rep.c(9, 2)) else self.facility_key
        resource: dict[str, Any] = {"resourceType": "Practitioner", "active": True}
        if name:
            resource["name"] = [name]
        url = self.add(
            resource,
            Origin(seg.id, seg.sequence, n),
            key=(f"{V2_SID}staff/{authority}", staff_id),
            create_only=True,
        )
        ref = {"reference": url}
        if display:
            ref["display"] = display
        return ref

    def practitioners(self, seg: Segment, n: int) -> list[dict[str, Any]]:
        return [r for r in (self.practitioner(rep, seg, n) for rep in seg.reps(n)) if r]

    def practitioners_ndl(self, seg: Segment, n: int) -> list[dict[str, Any]]:
        """References for an NDL field (OBR-32 to OBR-35: a name, then where the person was).

        The name is a CNN packed into the first component, its parts as subcomponents
        (``005454&MARK^^^LABUnit02^Room02``): the same parts, in the same order, as an XCN's
        components, but for the assigning authority, which is flat. Read as an XCN, the start
        and end times and the point of care would become the person's name.
        """
        refs = []
        for rep in seg.reps(n):
            d = rep.d
            cnn = rep.raw.split(d.component)[0].split(d.subcomponent)
            xcn = d.component.join([*cnn[:8], d.subcomponent.join(cnn[8:11])])
            ref = self.practitioner(Rep(xcn, d, rep.codec), seg, n)
            if ref:
                refs.append(ref)
        return refs

    def patient(self, pid: Segment) -> tuple[str, tuple[str, str]]:
        """The Patient of a PID, as a conditional update on its first patient identifier.

        A PID is the sender's full current view of the person (HL7 sends the whole segment on
        every update), so the Patient is replaced by it rather than patched.
        """
        idents = [i for i in (self.identifier(r, patient_list=True) for r in pid.reps(3)) if i]
        if not idents:
            legacy = self.identifier(pid.rep(2), patient_list=True)  # PID-2, external id, in v2.3 messages
            idents = [legacy] if legacy else []
        if not idents:
            raise Hl7Error(
                "PID-3 (patient identifier list) is empty",
                code="101",
                segment="PID",
                sequence=pid.sequence,
                field=3,
            )
        key_ident = next(
            (i for i in idents if i["system"].startswith(naming.PLATFORM_SID + "mrn/")), idents[0]
        )
        for extra in (pid.rep(19),):  # PID-19: the national id number in many Chinese HIS
            value = extra.c(1)
            if value and _is_prc_id(value) and not any(i["system"] == naming.PRC_RESIDENT_ID for i in idents):
                idents.append({"system": naming.PRC_RESIDENT_ID, "value": prc_id.parse(value).number})
        patient: dict[str, Any] = {"resourceType": "Patient", "active": True, "identifier": idents}
        names = [n for n in (t.human_name(r) for r in pid.reps(5)) if n]
        if names:
            patient["name"] = names
        birth = t.date_only(pid, 7)
        if birth:
            patient["birthDate"] = birth
        gender = t.gender(pid.get(8))
        if gender:
            patient["gender"] = gender
        addresses = [a for a in (t.address(r) for r in pid.reps(11)) if a]
        if addresses:
            patient["address"] = addresses
        telecoms = [x for x in (t.telecom(r) for r in pid.reps(13) + pid.reps(14)) if x]
        if telecoms:
            patient["telecom"] = telecoms
        marital = pid.rep(16)
        if marital.c(1):
            patient["maritalStatus"] = (
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus",
                            "code": marital.c(1),
                        }
                    ]
                }
                if marital.c(1) in ("A", "D", "I", "L", "M", "P", "S", "T", "U", "W")
                else {"text": marital.c(2) or marital.c(1)}
            )
        language = pid.rep(15)
        if language.c(1):
            patient["communication"] = [{"language": {"text": language.c(2) or language.c(1)}}]
        death = t.date_time(pid, 29)
        if death:
            patient["deceasedDateTime"] = death
        elif pid.get(30).upper() == "Y":
            patient["deceasedBoolean"] = True
        patient["managingOrganization"] = {"reference": self.facility()}
        self._z_segments(patient)
        url = self.add(patient, Origin("PID", pid.sequence, 3), key=(key_ident["system"], key_ident["value"]))
        return url, (key_ident["system"], key_ident["value"])

    def _z_segments(self, resource: dict[str, Any]) -> None:
        """Keep the sender's Z-segments on the Patient, verbatim (escaped as sent), so nothing a
        hospital chose to send is dropped; the message log keeps the whole message as well."""
        zs = self.msg.z_segments
        if zs:
            resource["extension"] = [
                {"url": Z_SEGMENT_EXTENSION, "valueString": self.msg.d.field.join(z.fields)} for z in zs
            ]

    # ------------------------------------------------------------------ visits

    def encounter(
        self, pv1: Segment, patient: str, *, status: str | None = None, pv2: Segment | None = None
    ) -> str | None:
        """The visit of a PV1, keyed by PV1-19 (visit number); None when the PV1 is empty."""
        visit = pv1.rep(19)
        klass_code = pv1.get(2).upper()
        if not visit.c(1) and not klass_code and not pv1.get(44):
            return None
        klass = {"I": "IMP", "O": "AMB", "E": "EMER", "P": "PRENC", "R": "AMB", "B": "IMP", "N": "AMB"}.get(
            klass_code, "AMB"
        )
        start = t.date_time(pv1, 44)
        end = t.date_time(pv1, 45)
        if status is None:
            status = "finished" if end else ("planned" if klass_code == "P" else "in-progress")
        enc: dict[str, Any] = {
            "resourceType": "Encounter",
            "status": status,
            "class": {"system": naming.V3_ACT_CODE, "code": klass},
            "subject": {"reference": patient},
            "serviceProvider": {"reference": self.facility()},
        }
        period: dict[str, str] = {}
        if start:
            period["start"] = start
        if end and status in ("finished", "cancelled"):
            period["end"] = end
        if period:
            enc["period"] = period
        location = pv1.rep(3)
        loc_text = "/".join(x for x in (location.c(4), location.c(1), location.c(2), location.c(3)) if x)
        if loc_text:
            enc["location"] = [
                {
                    "location": {"display": loc_text},
                    "status": "active" if status == "in-progress" else "completed",
                }
            ]
        participants: list[dict[str, Any]] = []
        for n, role in ((7, "ATND"), (8, "REF"), (9, "CON"), (17, "ADM")):
            for ref in self.practitioners(pv1, n):
                participants.append(
                    {
                        "type": [
                            {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                        "code": role,
                                    }
                                ]
                            }
                        ],
                        "individual": ref,
                    }
                )
        if participants:
            enc["participant"] = participants
        if pv2 is not None:
            reason = t.concept(pv2.rep(3))
            if reason:
                enc["reasonCode"] = [reason]
        origin = Origin("PV1", pv1.sequence, 19)
        if visit.c(1):
            ident = self.identifier(visit)
            assert ident is not None
            system = (
                ident["system"]
                if visit.c(5).upper() == "VN" or not visit.c(4)
                else naming.visit_number_system(t.key(visit.c(4, 1) or visit.c(4, 2)))
            )
            return self.add(enc, origin, key=(system, visit.c(1)))
        return self.add(enc, origin)

    # ------------------------------------------------------------------ observations

    def observation(
        self,
        obx: Segment,
        patient: str,
        *,
        scope: str,
        encounter: str | None = None,
        fallback_time: str | None = None,
        category: str | None = None,
    ) -> str | None:
        """One OBX as an Observation, keyed by ``scope`` (its order or visit) and its position
        and code, so a corrected result replaces the preliminary one."""
        code = t.concept(obx.rep(3))
        if code is None:
            d = self.msg.d
            if not obx.raw(5).strip(d.component + d.repetition + d.subcomponent + " "):
                return None  # neither what was observed nor a value: nothing to keep
            # A value without an identifier (instruments attaching an image or a file often
            # send one): kept, its code marked as not known rather than the result dropped.
            code = {"extension": [{"url": DATA_ABSENT_REASON, "valueCode": "unknown"}]}
        status = {
            "F": "final",
            "P": "preliminary",
            "C": "corrected",
            "X": "cancelled",
            "D": "entered-in-error",
            "W": "entered-in-error",
            "I": "registered",
            "R": "preliminary",
            "S": "preliminary",
            "A": "amended",
            "U": "final",
            "O": "registered",
        }.get(obx.get(11).upper(), "final")
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "status": status,
            "code": code,
            "subject": {"reference": patient},
        }
        if category:
            obs["category"] = [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": category,
                        }
                    ]
                }
            ]
        if encounter:
            obs["encounter"] = {"reference": encounter}
        self._obx_value(obx, obs)
        ranges = _reference_range(obx.get(7))
        if ranges:
            obs["referenceRange"] = [ranges]
        flags: list[dict[str, Any]] = []
        for rep in obx.reps(8):
            flag = rep.c(1)
            if not flag:
                continue
            if flag.upper() in _INTERPRETATION:
                flags.append(
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                                "code": flag.upper(),
                                "display": _INTERPRETATION[flag.upper()],
                            }
                        ]
                    }
                )
            else:
                flags.append({"text": rep.c(2) or flag})
        if flags:
            obs["interpretation"] = flags
        when = t.date_time(obx, 14) or fallback_time
        if when:
            obs["effectiveDateTime"] = when
        performers = self.practitioners(obx, 16)
        if performers:
            obs["performer"] = performers
        method = t.concept(obx.rep(17))
        if method:
            obs["method"] = method
        codes = code.get("coding") or [{"code": code.get("text", "")}]
        value = f"{scope}/{obx.get(1) or obx.sequence}/{obx.get(4)}/{codes[0]['code']}"
        return self.add(
            obs, Origin("OBX", obx.sequence, 5), key=(f"{V2_SID}observation/{self.facility_key}", value[:256])
        )

    def _obx_value(self, obx: Segment, obs: dict[str, Any]) -> None:
        kind = obx.get(2).upper()
        reps = [r for r in obx.reps(5) if not r.empty]
        if not reps:
            return
        if (
            kind not in _ONE_VALUE_PER_REPETITION
        ):  # ST, TX, FT, and types FHIR has no value for (ED, RP): text
            text = "\n".join(
                " ".join(p for p in (r.c(i) for i in range(1, r.raw.count(self.msg.d.component) + 2)) if p)
                for r in reps
            )
            if text.strip():
                obs["valueString"] = text
            return
        values = [v for v in (self._one_value(obx, kind, r) for r in reps) if v is not None]
        if len(values) == 1:
            obs[values[0][0]] = values[0][1]
        elif values:
            # A repeated OBX-5 (several readings, several coded answers) is several values of one
            # observation: FHIR holds them as components of the same code, every one kept.
            obs["component"] = [
                {"code": obs.get("code") or {"text": "value"}, key: value} for key, value in values
            ]

    def _one_value(self, obx: Segment, kind: str, rep: Any) -> tuple[str, Any] | None:
        """One repetition of OBX-5 as a FHIR value[x] (its element name and value)."""
        if kind in ("NM", "SN"):
            quantity, comparator = _number(rep, kind)
            if quantity is None:
                raise Hl7Error(
                    f"OBX-5 is not a number although OBX-2 says {kind}: {rep.c(1)!r}",
                    code="102",
                    segment="OBX",
                    sequence=obx.sequence,
                    field=5,
                )
            if isinstance(quantity, dict):
                return "valueRange", quantity
            q: dict[str, Any] = {"value": quantity}
            if comparator:
                q["comparator"] = comparator
            unit = obx.rep(6)
            if unit.c(1) or unit.c(2):
                q["unit"] = unit.c(2) or unit.c(1)
                system = unit.c(3).upper()
                if system in ("UCUM", "ISO+", "") and unit.c(1):
                    q["system"] = naming.UCUM
                    q["code"] = unit.c(1)
            return "valueQuantity", q
        if kind in ("CE", "CWE", "CNE", "CF"):
            cc = t.concept(rep)
            return ("valueCodeableConcept", cc) if cc else None
        if kind in ("DT", "TS", "DTM"):
            value = t.date_time(obx, 5, rep=rep)
            return ("valueDateTime", value) if value else None
        m = re.fullmatch(r"(\d{2})(\d{2})?(\d{2})?.*", rep.c(1))  # TM
        return ("valueTime", f"{m.group(1)}:{m.group(2) or '00'}:{m.group(3) or '00'}") if m else None


_ONE_VALUE_PER_REPETITION = frozenset({"NM", "SN", "CE", "CWE", "CNE", "CF", "DT", "TS", "DTM", "TM"})


_INTERPRETATION = {
    "N": "Normal",
    "A": "Abnormal",
    "AA": "Critical abnormal",
    "H": "High",
    "HH": "Critical high",
    "L": "Low",
    "LL": "Critical low",
    "HU": "Significantly high",
    "LU": "Significantly low",
    "S": "Susceptible",
    "R": "Resistant",
    "I": "Intermediate",
    "POS": "Positive",
    "NEG": "Negative",
    "DET": "Detected",
    "ND": "Not detected",
}

_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")


def patient_scoped_key(
    kind: str, facility: str, patient_key: tuple[str, str], coding: dict[str, Any]
) -> tuple[str, str]:
    """The key of something a patient has once per code (a problem, an allergy) when the sender
    gives it no id of its own: the patient's identifier and the code, readable, with a short
    digest of the two systems so that equal values of different systems stay apart. No ``|``:
    the key becomes a token in a conditional URL."""
    system = str(coding.get("system", ""))
    digest = hashlib.sha256(f"{patient_key[0]}\x1f{system}".encode()).hexdigest()[:12]
    value = f"{patient_key[1]}/{coding.get('code', '')}@{digest}".replace("|", "!")
    return f"{V2_SID}{kind}/{facility}/patient", value[:256]


DATA_ABSENT_REASON = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"


def _number(rep: Rep, kind: str) -> tuple[Any, str | None]:
    """NM, or SN (comparator^num1^separator^num2): a value (with comparator) or a Range."""
    if kind == "NM":
        # Many LIS put a comparator in an NM ("<0.5", ">=1000"): keep it rather than refuse the result.
        m = re.fullmatch(r"(<=|>=|<|>)?\s*(.+)", rep.c(1))
        text = m.group(2) if m else ""
        if not _NUMBER.match(text):
            return None, None
        return _to_number(text), (m.group(1) if m else None)
    comparator, first, sep, second = rep.c(1), rep.c(2), rep.c(3), rep.c(4)
    if not _NUMBER.match(first):
        return None, None
    if sep in ("-",) and _NUMBER.match(second):
        return {"low": {"value": _to_number(first)}, "high": {"value": _to_number(second)}}, None
    comp = comparator if comparator in ("<", "<=", ">=", ">") else None
    return _to_number(first), comp


def _to_number(text: str) -> int | float:
    return float(text) if "." in text else int(text)


def _reference_range(text: str) -> dict[str, Any] | None:
    text = text.strip()
    if not text:
        return None
    m = re.fullmatch(r"([+-]?\d+(?:\.\d+)?)\s*(?:-|to|~|～|—)\s*([+-]?\d+(?:\.\d+)?)", text)
    if m:
        return {
            "low": {"value": _to_number(m.group(1))},
            "high": {"value": _to_number(m.group(2))},
            "text": text,
        }
    m = re.fullmatch(r"(<=?|>=?)\s*([+-]?\d+(?:\.\d+)?)", text)
    if m:
        bound = "high" if m.group(1).startswith("<") else "low"
        return {bound: {"value": _to_number(m.group(2))}, "text": text}
    return {"text": text}


def _is_prc_id(value: str) -> bool:
    try:
        prc_id.parse(value)
    except YilianError:
        return False
    return True
