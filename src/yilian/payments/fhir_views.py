"""FHIR views of the ledger's facts for member systems, read-only: ``Claim`` and ``ClaimResponse``
(a charge and its adjudication), ``Account`` (a resident's card wallet) and
``PaymentReconciliation`` (a closed day's clearing batch).

They are computed from the payments tables on every read, so they can never disagree with the
ledger. Served as *virtual types* (``FhirSettings.virtual_types``) — reads and searches only,
through the same access policy as stored resources (scope check, then the patient compartment).
``ChargeItem`` is deliberately not virtual: hospitals store their own ChargeItems in the shared
record, and a virtual type would hide them.

Money in FHIR is a JSON decimal (``12.34``); it is written from integer fen as an exact decimal
text (``orjson.Fragment``), never through a float.

Ids: ``Claim/{charge_id}``, ``ClaimResponse/{charge_id}``, ``Account/{patient_id}`` (the wallet is
the resident's, see docs/payments.md), ``PaymentReconciliation/{YYYY-MM-DD}``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from sqlalchemy import select

from yilian.db import UnitOfWork
from yilian.fhir import bundles
from yilian.fhir.access import READ, SEARCH, require
from yilian.fhir.interactions.context import FhirContext
from yilian.fhir.interactions.outcome import Resource
from yilian.fhir.router import FhirResponse, resource_headers
from yilian.kernel import naming
from yilian.kernel.clock import fhir_instant
from yilian.kernel.errors import Category, YilianError
from yilian.payments import tables as t
from yilian.payments.coverage import SCHEME_SYSTEM
from yilian.payments.model import BEIJING, from_us, wallet_account

ITEM_SYSTEM = naming.PLATFORM_CODE_SYSTEM + "charge-item"
SHARE_SYSTEM = naming.PLATFORM_CODE_SYSTEM + "payment-share"
BALANCE_EXT = naming.PLATFORM_EXTENSION + "account-balance"
HELD_EXT = naming.PLATFORM_EXTENSION + "account-held"
CHARGE_ITEM_EXT = (
    naming.PLATFORM_EXTENSION + "claim-item-charge-item"
)  # Claim.item has no ChargeItem link in R4
MAX_RESULTS = 200


def money(fen: int) -> dict[str, Any]:
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return {"value": orjson.Fragment(f"{sign}{yuan}.{cents:02d}".encode()), "currency": "CNY"}


def _gone(resource_type: str, resource_id: str) -> YilianError:
    return YilianError(Category.NOT_FOUND, f"{resource_type}/{resource_id} does not exist")


def _claim(row: Any) -> dict[str, Any]:
    detail = orjson.loads(row.adjudication)
    items = orjson.loads(row.items)
    claim: dict[str, Any] = {
        "resourceType": "Claim",
        "id": row.charge_id,
        "status": "active",
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/claim-type",
                    "code": "institutional" if row.setting == "inpatient" else "professional",
                }
            ]
        },
        "use": "claim",
        "patient": {"reference": f"Patient/{row.patient_id}"},
        "created": from_us(row.at).astimezone(BEIJING).isoformat(timespec="seconds"),
        "provider": {"reference": f"Organization/{row.org}"},
        "priority": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]
        },
        # Claim.insurance is 1..*: a charge with no coverage in force says so in a display-only reference.
        "insurance": [
            {"sequence": n, "focal": n == 1, "coverage": {"reference": c["coverage"]}}
            for n, c in enumerate(detail.get("coverage") or [], start=1)
        ]
        or [{"sequence": 1, "focal": True, "coverage": {"display": "自费 self-pay: no coverage in force"}}],
        "item": [
            {
                "sequence": n,
                "category": {"coding": [{"system": ITEM_SYSTEM + "-category", "code": item["category"]}]},
                "productOrService": {
                    "coding": [{"system": ITEM_SYSTEM, "code": item["code"]}],
                    "text": item["name"] or item["code"],
                },
                "quantity": {"value": item["quantity"]},
                "unitPrice": money(item["unit_price_fen"]),
                "net": money(item["amount_fen"]),
                **(
                    {
                        "extension": [
                            {"url": CHARGE_ITEM_EXT, "valueReference": {"reference": item["charge_item"]}}
                        ]
                    }
                    if item.get("charge_item")
                    else {}
                ),
            }
            for n, item in enumerate(items, start=1)
        ],
        "total": money(row.total_fen),
    }
    if row.encounter:
        for entry in claim["item"]:
            entry["encounter"] = [{"reference": f"Encounter/{row.encounter}"}]
    if detail.get("diagnoses"):
        claim["diagnosis"] = [
            {
                "sequence": n,
                "diagnosisCodeableConcept": {"coding": [{"system": naming.ICD10_CN, "code": code}]},
            }
            for n, code in enumerate(detail["diagnoses"], start=1)
        ]
    return claim


def _share(code: str, fen: int) -> dict[str, Any]:
    return {"category": {"coding": [{"system": SHARE_SYSTEM, "code": code}]}, "amount": money(fen)}


def _claim_response(row: Any) -> dict[str, Any]:
    detail = orjson.loads(row.adjudication)
    coverage = detail.get("coverage") or []
    payor = next((c.get("payor") for c in coverage if c.get("payor")), None)
    response: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "id": row.charge_id,
        "status": "active",
        "type": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/claim-type",
                    "code": "institutional" if row.setting == "inpatient" else "professional",
                }
            ]
        },
        "use": "claim",
        "patient": {"reference": f"Patient/{row.patient_id}"},
        "created": from_us(row.at).astimezone(BEIJING).isoformat(timespec="seconds"),
        "request": {"reference": f"Claim/{row.charge_id}"},
        "requestor": {"reference": f"Organization/{row.org}"},
        "outcome": "complete",
        "disposition": detail["steps"][-1]["detail"] if detail.get("steps") else "adjudicated",
        "total": [
            _share("submitted", row.total_fen),
            _share("insurer", row.insurer_fen),
            _share("medical-aid", row.aid_fen),
            _share("self-pay", row.self_pay_fen),
            _share("refunded", row.refunded_insurer_fen + row.refunded_aid_fen + row.refunded_self_fen),
        ],
        "payment": {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/ex-paymenttype", "code": "complete"}
                ]
            },
            "amount": money(row.insurer_fen + row.aid_fen),
        },
        "processNote": [
            {"number": n, "type": "display", "text": f"[{step['rule']}] {step['detail']}"}
            for n, step in enumerate(detail.get("steps") or [], start=1)
        ],
    }
    if payor:
        response["insurer"] = {"reference": payor}
    schemes = [c["scheme"] for c in coverage]
    if schemes:
        response["subType"] = {"coding": [{"system": SCHEME_SYSTEM, "code": s} for s in schemes]}
    return response


def _account(patient_id: str, balance: int, held: int) -> dict[str, Any]:
    return {
        "resourceType": "Account",
        "id": patient_id,
        "extension": [
            {"url": BALANCE_EXT, "valueMoney": money(balance)},
            {"url": HELD_EXT, "valueMoney": money(held)},
        ],
        "status": "active",
        "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PBILLACCT"}]
        },
        "name": "居民健康卡钱包 card wallet",
        "subject": [{"reference": f"Patient/{patient_id}"}],
    }


def _reconciliation(row: Any) -> dict[str, Any]:
    report = orjson.loads(row.report)
    total = sum(line["amount_fen"] for line in report["lines"])
    return {
        "resourceType": "PaymentReconciliation",
        "id": row.business_date,
        "status": "active",
        "period": {"start": row.business_date, "end": row.business_date},
        "created": fhir_instant(from_us(row.closed_at)),
        "outcome": "complete",
        "disposition": f"clearing of business day {row.business_date}: {report['transactions']} transactions",
        "paymentDate": row.business_date,
        "paymentAmount": money(total),
        "detail": [
            {
                "identifier": {
                    "system": naming.PLATFORM_SID + "settlement-line",
                    "value": str(line["line_id"]),
                },
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/payment-type", "code": "payment"}
                    ]
                },
                "submitter": {"display": line["payer"]},
                "payee": {"reference": f"Organization/{line['payee']}"},
                "date": row.business_date,
                "amount": money(line["amount_fen"]),
            }
            for line in report["lines"]
        ],
    }


def _resource(res_type: str, res_id: str, at_us: int, body: dict[str, Any], patient: str | None) -> Resource:
    return Resource(res_type, res_id, 1, at_us, orjson.dumps(body), patient_key=patient)


class _View:
    resource_type = ""

    def _rows(self, uow: UnitOfWork, ids: list[str] | None, patients: list[str] | None) -> list[Resource]:
        raise NotImplementedError

    def search(
        self, uow: UnitOfWork, ctx: FhirContext, pairs: list[tuple[str, str]], *, path: str
    ) -> FhirResponse:
        require(ctx.policy, SEARCH, self.resource_type)
        ids: list[str] | None = None
        patients: list[str] | None = None
        used = []
        for name, value in pairs:
            if name in ("_format", "_pretty", "_count"):
                continue
            if name == "_id":
                ids = value.split(",")
            elif name in ("patient", "subject"):
                patients = [v.removeprefix("Patient/") for v in value.split(",")]
            else:
                raise YilianError(
                    Category.UNSUPPORTED,
                    f"{self.resource_type} views are searched by _id or patient, not {name}",
                )
            used.append((name, value))
        if ids is None and patients is None:
            raise YilianError(Category.UNSUPPORTED, f"search {self.resource_type} by _id or patient")
        found = [
            r
            for r in self._rows(uow, ids, patients)
            if ctx.policy.can_see(uow, self.resource_type, r.patient_key)
        ]
        body = bundles.searchset(
            ctx,
            path=path,
            used=used,
            matches=found[:MAX_RESULTS],
            included=[],
            total=len(found),
            next_cursor=None,
        )
        return FhirResponse(200, body, patients=frozenset(r.patient_key for r in found if r.patient_key))

    def read(self, uow: UnitOfWork, ctx: FhirContext, resource_id: str) -> FhirResponse:
        require(ctx.policy, READ, self.resource_type)
        rows = self._rows(uow, [resource_id], None)
        if not rows or not ctx.policy.can_see(uow, self.resource_type, rows[0].patient_key):
            raise _gone(self.resource_type, resource_id)
        r = rows[0]
        return FhirResponse(200, r.content, resource_headers(r, ctx), r)


class _ChargeView(_View):
    def _rows(self, uow: UnitOfWork, ids: list[str] | None, patients: list[str] | None) -> list[Resource]:
        c = t.charge
        stmt = select(c).order_by(c.c.at.desc()).limit(MAX_RESULTS + 1)
        if ids is not None:
            stmt = stmt.where(c.c.charge_id.in_(ids))
        if patients is not None:
            stmt = stmt.where(c.c.patient_id.in_(patients))
        build = _claim if self.resource_type == "Claim" else _claim_response
        return [
            _resource(self.resource_type, row.charge_id, row.at, build(row), row.patient_id)
            for row in uow.conn.execute(stmt)
        ]


class ClaimView(_ChargeView):
    resource_type = "Claim"


class ClaimResponseView(_ChargeView):
    resource_type = "ClaimResponse"


class AccountView(_View):
    resource_type = "Account"

    def _rows(self, uow: UnitOfWork, ids: list[str] | None, patients: list[str] | None) -> list[Resource]:
        wanted = set(ids or []) if patients is None else set(patients) & set(ids or patients)
        a = t.account
        accounts = [wallet_account(p) for p in sorted(wanted)]
        rows = uow.conn.execute(
            select(a.c.owner, a.c.balance, a.c.held, a.c.created).where(a.c.account_id.in_(accounts))
        )
        return [
            _resource("Account", r.owner, r.created, _account(r.owner, int(r.balance), int(r.held)), r.owner)
            for r in rows
        ]


class PaymentReconciliationView(_View):
    resource_type = "PaymentReconciliation"

    def _rows(self, uow: UnitOfWork, ids: list[str] | None, patients: list[str] | None) -> list[Resource]:
        if patients is not None:
            return []  # a clearing batch belongs to no patient
        d = t.day
        days = []
        for value in ids or []:
            try:
                days.append(dt.date.fromisoformat(value).isoformat())
            except ValueError:
                continue
        stmt = select(d).where(d.c.business_date.in_(days), d.c.status == "closed")
        return [
            _resource("PaymentReconciliation", r.business_date, r.closed_at, _reconciliation(r), None)
            for r in uow.conn.execute(stmt)
        ]


def virtual_types() -> dict[str, Any]:
    """What ``FhirSettings.virtual_types`` needs to serve the views (the platform wiring adds it)."""
    return {
        "Claim": ClaimView(),
        "ClaimResponse": ClaimResponseView(),
        "Account": AccountView(),
        "PaymentReconciliation": PaymentReconciliationView(),
    }
