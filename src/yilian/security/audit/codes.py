"""The codes an audit event is written in: FHIR, DICOM and HL7 v3 where they have one, the
platform's own (under ``kernel.naming``'s roots) where they do not.

Shapes follow IHE Basic Audit Log Patterns (BALP): RESTful events are typed ``rest`` with the
interaction as subtype; logins and logouts are DICOM "User Authentication" events.
"""

from __future__ import annotations

from typing import Any, Final

from yilian.kernel.naming import PLATFORM_CODE_SYSTEM, PLATFORM_EXTENSION, PLATFORM_SID, V3_ACT_REASON

AUDIT_EVENT_TYPE: Final = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION: Final = "http://hl7.org/fhir/restful-interaction"
AUDIT_EVENT_ACTION: Final = "http://hl7.org/fhir/audit-event-action"
AUDIT_EVENT_OUTCOME: Final = "http://hl7.org/fhir/audit-event-outcome"
DICOM: Final = "http://dicom.nema.org/resources/ontology/DCM"
PARTICIPATION_TYPE: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROLE_CLASS: Final = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
ENTITY_TYPE: Final = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE: Final = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE: Final = "http://terminology.hl7.org/CodeSystem/security-source-type"
PURPOSE_OF_USE: Final = V3_ACT_REASON

# Platform-defined: the same names on every deployment (see docs/identifiers.md).
CLIENT_SID: Final = PLATFORM_SID + "client"  # a system client's client_id
USER_SID: Final = PLATFORM_SID + "user"  # a person's user name
AGENT_KIND: Final = PLATFORM_CODE_SYSTEM + "audit-agent-kind"  # system | user | patient | operator
EVENT_SUBTYPE: Final = PLATFORM_CODE_SYSTEM + "audit-event-subtype"  # token, access-denied, break-glass…
EXT_FLAGGED: Final = PLATFORM_EXTENSION + "audit-flagged"
EXT_USER_AGENT: Final = PLATFORM_EXTENSION + "audit-user-agent"
DETAIL_RESOURCE_TYPE: Final = "resource-type"

ACTIONS: Final = frozenset({"C", "R", "U", "D", "E"})
OUTCOMES: Final = frozenset({0, 4, 8, 12})
AGENT_KINDS: Final = frozenset({"system", "user", "patient", "operator"})

RESTFUL: Final = frozenset(
    {
        "read", "vread", "update", "patch", "delete", "history", "history-instance", "history-type",
        "history-system", "create", "search", "search-type", "search-system", "capabilities",
        "transaction", "batch", "operation",
    }
)  # fmt: skip
# Authentication events (DICOM 110114 "User Authentication") and their DICOM subtype codes.
AUTHENTICATION: Final[dict[str, tuple[str, str] | None]] = {
    "login": ("110122", "Login"),
    "logout": ("110123", "Logout"),
    "token": None,  # no DICOM code: a token issued to a system client
}
_DICOM_SUBTYPES: Final = {c[0]: name for name, c in AUTHENTICATION.items() if c is not None}
# Data received from outside and stored (DICOM 110107 "Import"): HL7 v2 messages.
IMPORTS: Final = frozenset({"hl7v2-message"})


def coding(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


def event_type(subtype: str) -> dict[str, Any]:
    if subtype in AUTHENTICATION:
        return coding(DICOM, "110114", "User Authentication")
    if subtype in IMPORTS:
        return coding(DICOM, "110107", "Import")
    return coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation")


def subtype_coding(subtype: str) -> dict[str, Any]:
    if subtype in RESTFUL:
        return coding(RESTFUL_INTERACTION, subtype)
    dicom = AUTHENTICATION.get(subtype)
    if dicom is not None:
        return coding(DICOM, dicom[0], dicom[1])
    return coding(EVENT_SUBTYPE, subtype)


def subtype_of(coded: dict[str, Any]) -> str | None:
    """The column value for a subtype coding written by :func:`subtype_coding`."""
    system, code = coded.get("system"), coded.get("code")
    if system == DICOM:
        return _DICOM_SUBTYPES.get(str(code))
    if system in (RESTFUL_INTERACTION, EVENT_SUBTYPE):
        return str(code)
    return None
