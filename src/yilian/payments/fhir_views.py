"""The FHIR resources that show the ledger's facts to member systems, built from the payments
tables: ``Claim`` and ``ClaimResponse`` (a charge and its adjudication), ``Account`` (a
resident's card wallet) and ``PaymentReconciliation`` (one party's part of a closed day's
clearing). :mod:`yilian.payments.publication` writes them as stored resources.

Each carries a platform identifier (the charge id, the wallet's patient id, the day and party),
which is how the publisher finds the resource it wrote before; the FHIR ids are the server's.
``ChargeItem`` is not built here: hospitals store their own, and a charge line links to them.

Money in FHIR is a JSON decimal (``12.34``); it is written from integer fen as an exact decimal
text (``orjson.Fragment``), never through a float.
"""

from __future__ import annotations

from typing import Any

import orjson

from yilian.kernel import naming
from yilian.kernel.clock import fhir_instant
from yilian.payments.coverage import SCHEME_SYSTEM
from yilian.payments.model import BEIJING, from_us

ITEM_SYSTEM = naming.PLATFORM_CODE_SYSTEM + "charge-item"
SHARE_SYSTEM = naming.PLATFORM_CODE_SYSTEM + "payment-share"
BALANCE_EXT = naming.PLATFORM_EXTENSION + "account-balance"
HELD_EXT = naming.PLATFORM_EXTENSION + "account-held"
# A batch line's payment: the transfer's reference (valueIdentifier), once it is recorded.
PAYOUT_EXT = naming.PLATFORM_EXTENSION + "settlement-payout"
TRANSFER_SID = naming.PLATFORM_SID + "transfer"
CHARGE_ITEM_EXT = (
    naming.PLATFORM_EXTENSION + "claim-item-charge-item"
)  # Claim.item has no ChargeItem link in R4
CHARGE_SID = naming.PLATFORM_SID + "card-charge"  # Claim and ClaimResponse: the charge id
WALLET_SID = naming.PLATFORM_SID + "card-wallet"  # Account: the wallet's patient id
SETTLEMENT_SID = naming.PLATFORM_SID + "settlement"  # PaymentReconciliation: "<day>/<party>"


def money(fen: int) -> dict[str, Any]:
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return {"value": orjson.Fragment(f"{sign}{yuan}.{cents:02d}".encode()), "currency": "CNY"}


def charge_identifier(charge_id: str) -> list[dict[str, str]]:
    return [{"system": CHARGE_SID, "value": charge_id}]


def claim(row: Any) -> dict[str, Any]:
    """A charge (a ``pay_charge`` row) as the Claim the institution made for it."""
    detail = orjson.loads(row.adjudication)
    items = orjson.loads(row.items)
    claim: dict[str, Any] = {
        "resourceType": "Claim",
        "identifier": charge_identifier(row.charge_id),
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


def claim_response(row: Any, claim_id: str) -> dict[str, Any]:
    """The charge's adjudication: each share, what was refunded, and every rule applied."""
    detail = orjson.loads(row.adjudication)
    coverage = detail.get("coverage") or []
    payor = next((c.get("payor") for c in coverage if c.get("payor")), None)
    response: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "identifier": charge_identifier(row.charge_id),
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
        "request": {"reference": f"Claim/{claim_id}"},
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
    # ClaimResponse.insurer is 1..1 in R4: a self-pay charge names no insurer, in words.
    response["insurer"] = {"reference": payor} if payor else {"display": "自费 self-pay: no insurer"}
    schemes = [c["scheme"] for c in coverage]
    if schemes:
        response["subType"] = {"coding": [{"system": SCHEME_SYSTEM, "code": s} for s in schemes]}
    return response


def account(patient_id: str, balance: int, held: int) -> dict[str, Any]:
    """The resident's card wallet: balance and deposits held, in extensions (R4 has no element)."""
    return {
        "resourceType": "Account",
        "identifier": [{"system": WALLET_SID, "value": patient_id}],
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


def settlement_key(business_date: str, party: str, administers: bool) -> str:
    """A party's statement of a day: ``DAY/ORG`` for what it is paid, ``DAY/ORG/funds`` for what
    the funds it administers pay (an institution can be both, and gets both)."""
    return f"{business_date}/{party}" + ("/funds" if administers else "")


def _payout(line: dict[str, Any]) -> dict[str, Any]:
    paid = line.get("payout")
    if not paid:
        return {}
    transfer = {"system": TRANSFER_SID, "value": paid["reference"]}
    return {"extension": [{"url": PAYOUT_EXT, "valueIdentifier": transfer}]}


def reconciliation(row: Any, party: str, lines: list[dict[str, Any]], *, administers: bool) -> dict[str, Any]:
    """One party's statement of a closed day: the lines it is paid, or (``administers``) the
    lines the funds it administers pay."""
    total = sum(line["amount_fen"] for line in lines)
    body: dict[str, Any] = {
        "resourceType": "PaymentReconciliation",
        "identifier": [
            {"system": SETTLEMENT_SID, "value": settlement_key(row.business_date, party, administers)}
        ],
        "status": "active",
        "period": {"start": row.business_date, "end": row.business_date},
        "created": fhir_instant(from_us(row.closed_at)),
        "outcome": "complete",
        "disposition": (
            f"clearing of business day {row.business_date} for Organization/{party}: "
            f"{len(lines)} line(s), {sum(line['txn_count'] for line in lines)} transaction(s)"
        ),
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
            | _payout(line)
            for line in lines
        ],
    }
    if administers:
        body["paymentIssuer"] = {"reference": f"Organization/{party}"}
    return body
