"""HL7 v2 data types (TS/DTM, CX, XPN, XAD, XTN, CWE, XCN, XON) as FHIR data types.

Each reader takes the segment and field number, so a value that cannot be read is reported
at its place in the message (ERR-2) rather than as a failure somewhere in FHIR.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from yilian.exchange.hl7.errors import Hl7Error
from yilian.exchange.hl7.parse import Rep, Segment
from yilian.kernel import naming

# A v2 timestamp without an offset is local time at the sender: the region's hospitals are
# all on China Standard Time, and FHIR needs an offset on any dateTime with a time.
DEFAULT_OFFSET = "+08:00"

_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,4})?([+-]\d{4})?$")

# HL7 table 0396 names (and common local spellings) to FHIR code system URIs.
CODE_SYSTEMS: dict[str, str] = {
    "LN": naming.LOINC,
    "LOINC": naming.LOINC,
    "SCT": naming.SNOMED_CT,
    "SNM": naming.SNOMED_CT,
    "SNOMED": naming.SNOMED_CT,
    "SNOMEDCT": naming.SNOMED_CT,
    "CVX": "http://hl7.org/fhir/sid/cvx",
    "MVX": "http://terminology.hl7.org/CodeSystem/MVX",
    "NDC": "http://hl7.org/fhir/sid/ndc",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "ICD10": "http://hl7.org/fhir/sid/icd-10",
    "I10C": "http://hl7.org/fhir/sid/icd-10-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "I9": "http://hl7.org/fhir/sid/icd-9-cm",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "ICD10CN": naming.ICD10_CN,
    "ICD-10-CN": naming.ICD10_CN,
    "GB/T14396": naming.ICD10_CN,
    "ICD9CM3": naming.ICD9_CM3,
    "UCUM": naming.UCUM,
    "ISO+": naming.UCUM,
    "NCIT": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl",
    "C4": "http://www.ama-assn.org/go/cpt",
    "CPT4": "http://www.ama-assn.org/go/cpt",
    "RXNORM": "http://www.nlm.nih.gov/research/umls/rxnorm",
    "CDCREC": "urn:oid:2.16.840.1.113883.6.238",
    "CDCPHINVS": "urn:oid:2.16.840.1.114222.4.5.274",
    "ISO3166_1": "urn:iso:std:iso:3166",
}

_V2_TABLE = re.compile(r"^HL7(\d{4})$", re.IGNORECASE)
_KEY_CLEAN = re.compile(r"[^A-Za-z0-9.\-]+")


def code_system(name: str) -> str | None:
    """The FHIR system for a v2 coding-system name; local names get a platform URI of their own,
    so codes from two hospitals' local tables never compare equal by accident."""
    name = name.strip()
    if not name:
        return None
    known = CODE_SYSTEMS.get(name.upper())
    if known:
        return known
    m = _V2_TABLE.match(name)
    if m:
        return f"http://terminology.hl7.org/CodeSystem/v2-{m.group(1)}"
    if re.fullmatch(r"\d+(\.\d+)+", name):
        return f"urn:oid:{name}"
    return f"{naming.PLATFORM_CODE_SYSTEM}v2-local/{key(name)}"


def key(text: str) -> str:
    """A name usable in a URI path segment (authority and coding-system names have spaces)."""
    cleaned = _KEY_CLEAN.sub("-", text.strip()).strip("-.")
    return (cleaned or "unknown")[:64]


# --------------------------------------------------------------------------- dates


def _fail(seg: Segment, n: int, reason: str, component: int | None = None) -> Hl7Error:
    return Hl7Error(reason, code="102", segment=seg.id, sequence=seg.sequence, field=n, component=component)


def parse_ts(value: str) -> tuple[str, str] | None:
    """A v2 TS/DTM as (FHIR date, FHIR dateTime); None when empty, ValueError when malformed."""
    value = value.strip()
    if not value:
        return None
    m = _TS.match(value)
    if not m:
        raise ValueError(value)
    year, month, day, hour, minute, second, frac, offset = m.groups()
    date = year + (f"-{month}" if month else "") + (f"-{day}" if day else "")
    dt.date(int(year), int(month or 1), int(day or 1))  # range check (month 13, 30 February)
    if hour is None:
        return date, date
    if int(hour) > 23 or int(minute or 0) > 59 or int(second or 0) > 59:
        raise ValueError(value)
    tz = f"{offset[:3]}:{offset[3:]}" if offset else DEFAULT_OFFSET
    if offset and (int(offset[1:3]) > 14 or int(offset[3:]) > 59):
        raise ValueError(value)
    time = f"{hour}:{minute or '00'}:{second or '00'}{frac or ''}"
    return date, f"{date}T{time}{tz}"


def date_time(seg: Segment, n: int, component: int = 1, *, rep: Rep | None = None) -> str | None:
    value = (rep or seg.rep(n)).c(component)
    try:
        parsed = parse_ts(value)
    except ValueError:
        raise _fail(
            seg, n, f"{seg.id}-{n} is not an HL7 timestamp (YYYYMMDDHHMMSS[+ZZZZ]): {value!r}", component
        ) from None
    return parsed[1] if parsed else None


def date_only(seg: Segment, n: int, component: int = 1) -> str | None:
    value = seg.rep(n).c(component)
    try:
        parsed = parse_ts(value)
    except ValueError:
        raise _fail(seg, n, f"{seg.id}-{n} is not an HL7 date (YYYYMMDD): {value!r}", component) from None
    return parsed[0] if parsed else None


def instant(seg: Segment, n: int, component: int = 1) -> str | None:
    """A dateTime precise to the second (FHIR ``instant`` needs one)."""
    value = date_time(seg, n, component)
    return value if value and "T" in value else None


# --------------------------------------------------------------------------- codes


def coding(rep: Rep, start: int = 1) -> list[dict[str, Any]]:
    """The codings of a CE/CWE/CNE (identifier, text, system, then the alternate triple)."""
    out: list[dict[str, Any]] = []
    for base in (start, start + 3):
        code, display, system = rep.c(base), rep.c(base + 1), rep.c(base + 2)
        if not code:
            continue
        c: dict[str, Any] = {"code": code}
        uri = code_system(system)
        if uri:
            c["system"] = uri
        if display:
            c["display"] = display
        out.append(c)
    return out


def concept(rep: Rep, start: int = 1) -> dict[str, Any] | None:
    codings = coding(rep, start)
    text = rep.c(start + 1) or rep.c(9 if start == 1 else start + 8)
    if not codings and not text:
        return None
    cc: dict[str, Any] = {}
    if codings:
        cc["coding"] = codings
    if text:
        cc["text"] = text
    return cc


def concepts(seg: Segment, n: int) -> list[dict[str, Any]]:
    return [c for c in (concept(r) for r in seg.reps(n)) if c]


# --------------------------------------------------------------------------- people and places


def human_name(rep: Rep) -> dict[str, Any] | None:
    """XPN (or the name part of XCN at ``offset``) as a HumanName.

    Family name is XPN-1.1 (the surname of an FN); a Chinese HIS often puts the whole name in
    XPN-1 with nothing in XPN-2, which then becomes ``text`` as well so nothing is split wrongly.
    """
    return _name(rep, 1, 7)


def _name(rep: Rep, offset: int, type_component: int) -> dict[str, Any] | None:
    family = rep.c(offset, 1)
    given = [g for g in (rep.c(offset + 1), rep.c(offset + 2)) if g]
    suffix = [s for s in (rep.c(offset + 3),) if s]
    prefix = [p for p in (rep.c(offset + 4),) if p]
    if not family and not given:
        return None
    name: dict[str, Any] = {}
    if family:
        name["family"] = family
    if given:
        name["given"] = given
    if prefix:
        name["prefix"] = prefix
    if suffix:
        name["suffix"] = suffix
    use = {
        "L": "official",
        "D": "usual",
        "M": "maiden",
        "N": "nickname",
        "A": "anonymous",
        "C": "old",
        "B": "official",
        "U": "temp",
    }
    kind = rep.c(type_component)
    if kind in use:
        name["use"] = use[kind]
    if family and not given and any("\u3400" <= ch <= "\u9fff" for ch in family):
        name["text"] = family
    return name


def xcn_name(rep: Rep) -> dict[str, Any] | None:
    return _name(rep, 2, 10)


def address(rep: Rep) -> dict[str, Any] | None:
    line = [x for x in (rep.c(1, 1), rep.c(2)) if x]
    a: dict[str, Any] = {}
    if line:
        a["line"] = line
    for comp, name in ((3, "city"), (4, "state"), (5, "postalCode"), (6, "country"), (9, "district")):
        v = rep.c(comp)
        if v:
            a[name] = v
    if not a:
        return None
    use = {
        "H": "home",
        "B": "work",
        "O": "work",
        "M": "home",
        "P": "home",
        "C": "temp",
        "BA": "billing",
        "BI": "billing",
    }
    kind = rep.c(7)
    if kind in use:
        a["use"] = use[kind]
    return a


def telecom(rep: Rep) -> dict[str, Any] | None:
    """XTN: the number from XTN-1, or rebuilt from country/area/local (XTN-5/6/7), or an email (XTN-4)."""
    equipment = rep.c(3).upper()
    email = rep.c(4)
    if equipment in ("INTERNET", "X.400") or (email and not rep.c(1)):
        return {"system": "email", "value": email} if email else None
    value = rep.c(1) or "".join(x for x in (rep.c(5), rep.c(6), rep.c(7)) if x)
    if not value:
        return None
    system = {
        "FX": "fax",
        "BP": "pager",
        "CP": "phone",
        "PH": "phone",
        "SAT": "phone",
        "MD": "other",
        "TDD": "other",
        "TTY": "other",
    }.get(equipment, "phone")
    t: dict[str, Any] = {"system": system, "value": value}
    use = {"PRN": "home", "ORN": "home", "VHN": "home", "WPN": "work", "EMR": "temp", "NET": "home"}.get(
        rep.c(2).upper()
    )
    if equipment == "CP":
        use = "mobile"
    if use:
        t["use"] = use
    return t


def gender(value: str) -> str | None:
    """PID-8 (HL7 table 0001, and GB/T 2261.1 digits some Chinese HIS send) as FHIR gender."""
    return {
        "M": "male",
        "F": "female",
        "O": "other",
        "A": "other",
        "N": "other",
        "U": "unknown",
        "1": "male",
        "2": "female",
        "0": "unknown",
        "9": "unknown",
    }.get(value.strip().upper())
