"""A resident's own card wallet (我的一卡通): the balance, what deposits hold, and the newest
movements — for the resident and for the children on their record (a parent keeps a child's
card topped up).

Only a resident's session sees it, and only the wallets of the Patients their session carries
(``Principal.patient_keys``: their own record and their children's). Each view is audited as a
read of those patients' records, like any other access.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from yilian import payments
from yilian.db import Database, UnitOfWork
from yilian.fhir import FhirContext, FhirRequest, dispatch
from yilian.kernel.errors import YilianError
from yilian.kernel.money import format_fen
from yilian.payments.model import BEIJING
from yilian.portal.i18n import translator
from yilian.portal.login import SESSION_COOKIE, lang_of, page
from yilian.security.audit import AuditRecord, AuditWriter
from yilian.security.people import session_principal
from yilian.security.principal import RESIDENT

PATH = "/portal/wallet"
MOVEMENTS = 20
# A trusted in-process read of the holder's name: the session already limits whose wallets show.
_CTX = FhirContext(base_url="urn:yilian:portal")
KIND_KEYS = {
    "top-up": "kind_top_up",
    "charge": "kind_charge",
    "refund": "kind_refund",
    "hold-post": "kind_hold",
}


@dataclass(frozen=True)
class Movement:
    at: str
    what: str
    where: str  # the institution's name (and department, for a payment)
    detail: str  # a payment's whole bill and what insurance and aid paid of it
    amount: str
    after: str
    credit: bool


@dataclass(frozen=True)
class Wallet:
    name: str
    balance: str
    held: str
    available: str
    movements: list[Movement]


def _name(uow: UnitOfWork, reference: str) -> str:
    """A Patient's or an Organization's name as the record gives it (the id when it has none)."""
    try:
        body = dispatch(uow, _CTX, FhirRequest("GET", reference)).body
    except YilianError:
        return reference.split("/")[-1]
    doc: dict[str, Any] = orjson.loads(body or b"{}")
    name = doc.get("name")
    if isinstance(name, str):
        return name
    first: dict[str, Any] = (name or [{}])[0]
    given = "".join(first.get("given") or [])
    return str(first.get("text") or (first.get("family", "") + given) or reference.split("/")[-1])


def _movement(uow: UnitOfWork, line: payments.StatementLine, t: Any, places: dict[str, str]) -> Movement:
    where = ""
    if line.org:
        if line.org not in places:
            places[line.org] = _name(uow, f"Organization/{line.org}")
        where = places[line.org]
    detail = ""
    if line.kind == "charge" and line.ref:
        bill = payments.get_charge(uow, charge_id=line.ref)
        where = f"{where} · {bill.department}" if where else str(bill.department)
        parts = [f"{t('bill')} {format_fen(bill.total_fen)}"]
        if bill.insurer_fen:
            parts.append(f"{t('insurer_paid')} {format_fen(bill.insurer_fen)}")
        if bill.aid_fen:
            parts.append(f"{t('aid_paid')} {format_fen(bill.aid_fen)}")
        detail = " · ".join(parts)
    return Movement(
        at=line.at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M"),
        what=t(KIND_KEYS[line.kind]) if line.kind in KIND_KEYS else line.kind,
        where=where,
        detail=detail,
        amount=("+" if line.amount_fen > 0 else "") + format_fen(line.amount_fen),
        after=format_fen(line.balance_after_fen or 0),
        credit=line.amount_fen > 0,
    )


def _wallets(db: Database, patient_ids: list[str], t: Any) -> list[Wallet]:
    out = []
    places: dict[str, str] = {}
    with UnitOfWork(db) as uow:
        for pid in patient_ids:
            balance, held, lines = payments.own_wallet(uow, patient_id=pid, limit=MOVEMENTS)
            out.append(
                Wallet(
                    _name(uow, f"Patient/{pid}"),
                    format_fen(balance),
                    format_fen(held),
                    format_fen(balance - held),
                    [_movement(uow, line, t, places) for line in lines],
                )
            )
    return out


def routes(db: Database, writer: AuditWriter | None = None) -> list[Route]:
    async def wallet_page(request: Request) -> Response:
        cookie = request.cookies.get(SESSION_COOKIE)
        principal = await run_in_threadpool(session_principal, db, cookie) if cookie else None
        if principal is None:
            return RedirectResponse("/auth/login?" + urlencode({"next": PATH}), status_code=303)
        t = translator(lang_of(request))
        if principal.kind != RESIDENT or not principal.patient_keys:
            return page(request, "error.html", 403, heading=t("wallet"), message=t("wallet_residents_only"))
        patients = sorted(principal.patient_keys)
        wallets = await run_in_threadpool(_wallets, db, patients, t)
        if writer is not None:
            await writer.record(
                AuditRecord(
                    action="R",
                    subtype="payment-statement",
                    agent_kind="patient",
                    agent_id=principal.subject[:128],
                    patient_keys=tuple(patients),
                    query=PATH,
                    source_ip=request.client.host if request.client else None,
                    user_agent=request.headers.get("user-agent"),
                )
            )
        return page(request, "wallet.html", wallets=wallets)

    return [Route(PATH, wallet_page, methods=["GET"])]
