"""Small builders for the FHIR data types and transaction entries the demo writes.

Resources are plain JSON dicts (what a client would POST), so the demo needs no model
classes; these helpers only keep the repeated shapes (a coding, a conditional reference,
an entry with ``ifNoneExist``) spelled the same way everywhere.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from yilian.kernel import naming

Json = dict[str, Any]


# Every demo resource is labelled as synthetic test data, so an operator can always tell
# (and purge) it: HL7 v3 ActReason HTEST is the standard label for that.
def test_data_meta() -> Json:
    return {"security": [{"system": naming.V3_ACT_REASON, "code": "HTEST", "display": "test health data"}]}


CHINA_TZ = dt.timezone(dt.timedelta(hours=8))

# Names of the demo's urn:uuid ids: uuid5 of a stable key, so the same seed gives the same ids.
_NAMESPACE = uuid.UUID("6f1b3c2e-9a4d-5e7f-8b1a-2c3d4e5f6a7b")

EXT_NAME_REPRESENTATION = "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation"


def urn(seed: int, key: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{seed}/{key}')}"


def coding(system: str, code: str, display: str | None = None) -> Json:
    out: Json = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def concept(*codings: Json, text: str | None = None) -> Json:
    out: Json = {"coding": list(codings)}
    if text:
        out["text"] = text
    return out


def identifier(system: str, value: str, type_: Json | None = None, use: str | None = None) -> Json:
    out: Json = {}
    if use:
        out["use"] = use
    if type_:
        out["type"] = type_
    out["system"] = system
    out["value"] = value
    return out


def ref(target: str, display: str | None = None) -> Json:
    out: Json = {"reference": target}
    if display:
        out["display"] = display
    return out


def conditional(resource_type: str, system: str, value: str) -> str:
    """A conditional reference (``Organization?identifier=system|value``) the server resolves
    in the transaction, for targets that were created by an earlier bundle."""
    return f"{resource_type}?identifier={system}|{value}"


def quantity(value: float | int, unit: str, code: str | None = None) -> Json:
    return {"value": value, "unit": unit, "system": naming.UCUM, "code": code or unit}


def date_time(moment: dt.datetime) -> str:
    return moment.astimezone(CHINA_TZ).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class Entry:
    """One ``POST`` of a transaction bundle."""

    full_url: str
    resource: Json
    if_none_exist: str | None = None

    @property
    def resource_type(self) -> str:
        return str(self.resource["resourceType"])

    def to_json(self) -> Json:
        request: Json = {"method": "POST", "url": self.resource_type}
        if self.if_none_exist:
            request["ifNoneExist"] = self.if_none_exist
        return {"fullUrl": self.full_url, "resource": self.resource, "request": request}


def if_none_exist(system: str, value: str) -> str:
    return f"identifier={system}|{value}"


def transaction(entries: list[Entry]) -> Json:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "meta": test_data_meta(),
        "entry": [e.to_json() for e in entries],
    }
