"""``/api/cards``: the resident health card over HTTP.

- ``GET /api/cards/{card_no}``: the front-desk lookup (``r`` on Patient). A member institution's
  desk resolves any card presented to it: a usable card → the person's records the caller may
  see, and the rest of the card only when it may see the record the card was issued on (else a
  registration handle); a card that cannot be used is refused with the reason (409 lost /
  suspended / not activated, 410 replaced / revoked). A resident's token resolves only their own
  and their children's cards: any other number is a 404, whatever its state. Recorded with the
  holder as the patient.
- ``GET /api/cards/{card_no}/history``: the card in any state and every change (who, when, why).
- ``POST /api/cards``: issue a card to a Patient the caller may see (``c`` on Patient; writing the
  card identifier onto the Patient also needs ``u``).
- ``POST /api/cards/{card_no}/{activate|report-lost|suspend|resume|revoke|replace}`` with a reason
  (``u`` on Patient, and the holder's record visible to the caller).
- ``POST /api/cards/batch``: a population-register CSV (``text/csv``); region-wide, so for the
  platform operator only. Answers with the counts and every refused row and why.
- ``GET /api/cards/counts``: the region's indicator counts (``?as_of=`` an ISO date-time);
  platform operator only.

The FHIR paths that resolve a person by a card number (``Patient?identifier=<health card>|<no>``,
chained searches, ``$ihe-pix``, ``Person?identifier=``, ``$match``) refuse a lost, suspended,
replaced or revoked card with the same status and reason code, as an OperationOutcome
(``yilian.card.CardLookupGuard``; docs/identifiers.md, "A withdrawn card finds nobody").

Card numbers are ID numbers: audit records name cards by their internal id, and the audit log
masks any ID number in the request path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field
from starlette.routing import BaseRoute

from yilian import card
from yilian.api.rest import ApiRoutes, Call, Permission, Reply, operator_only
from yilian.api.wiring import platform_settings
from yilian.db import Database, UnitOfWork
from yilian.fhir import FhirContext
from yilian.kernel.errors import Category, YilianError
from yilian.security.policy import policy_for

READ = Permission("r", "Patient")
CREATE = Permission("c", "Patient")
UPDATE = Permission("u", "Patient")
MAX_REGISTER_ROWS = 50_000


class IssueBody(BaseModel):
    patient: str = Field(min_length=1, max_length=64, description="the Patient resource id of the resident")
    district: str | None = Field(
        default=None, pattern=r"^[1-8][0-9]{5}$", description="GB/T 2260 division code"
    )
    residence: str | None = Field(default=None, pattern=r"^(urban|rural)$")
    reason: str | None = Field(default=None, max_length=2000)


class ReasonBody(BaseModel):
    reason: str = Field(min_length=2, max_length=2000, description="why: every change of a card is recorded")


Change = Callable[..., card.CardView]


class _Handlers:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.settings = platform_settings()

    def ctx(self, call: Call[Any]) -> FhirContext:
        return FhirContext(settings=self.settings, policy=policy_for(call.principal, self.db))

    def lookup(self, uow: UnitOfWork, call: Call[Any]) -> Reply:
        ctx = self.ctx(call)
        found = card.resolve(uow, ctx, call.params["card_no"], front_desk=ctx.policy.front_desk)
        # The holder is recorded whatever the caller was shown: the resident learns who looked
        # their card up.
        patients = sorted({found.card.patient_id, *found.records})
        return Reply(found.to_json(), patients=patients, entity=f"Card/{found.card.card_id}")

    def history(self, uow: UnitOfWork, call: Call[Any]) -> Reply:
        ctx = self.ctx(call)
        view = card.get_card(uow, ctx, call.params["card_no"])
        events = card.card_history(uow, ctx, view.card_no)
        body = {**view.to_json(), "history": [e.to_json() for e in events]}
        return Reply(body, patients=[view.patient_id], entity=f"Card/{view.card_id}")

    def issue(self, uow: UnitOfWork, call: Call[IssueBody]) -> Reply:
        b = call.require_body()
        view = card.issue_card(
            uow,
            self.ctx(call),
            patient_id=b.patient,
            actor=call.principal.identity,
            reason=b.reason,
            district=b.district,
            residence=b.residence,
        )
        return Reply(view.to_json(), status=201, patients=[view.patient_id], entity=f"Card/{view.card_id}")

    def change(
        self, use_case: Change, *, created: bool = False
    ) -> Callable[[UnitOfWork, Call[ReasonBody]], Reply]:
        def handler(uow: UnitOfWork, call: Call[ReasonBody]) -> Reply:
            view = use_case(
                uow,
                self.ctx(call),
                card_no=call.params["card_no"],
                actor=call.principal.identity,
                reason=call.require_body().reason,
            )
            return Reply(
                view.to_json(),
                status=201 if created else 200,
                patients=[view.patient_id],
                entity=f"Card/{view.card_id}",
            )

        return handler

    def batch(self, uow: UnitOfWork, call: Call[Any]) -> Reply:
        kind = call.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("text/csv", "text/plain"):
            raise YilianError(Category.UNSUPPORTED, "send the population register as text/csv (UTF-8)")
        try:
            text = call.raw_body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise YilianError(Category.INVALID, "the register file is not UTF-8 text") from None
        rows: list[card.RegisterRow] = []
        report = card.BatchReport()
        for item in card.read_register(text.splitlines(keepends=True)):
            if isinstance(item, card.Refusal):
                report.rows.append(card.RowOutcome(item.line, "refused", item.name, item.reason))
            else:
                rows.append(item)
            if len(rows) + len(report.rows) > MAX_REGISTER_ROWS:
                raise YilianError(
                    Category.TOO_LARGE,
                    f"send at most {MAX_REGISTER_ROWS} rows per request (or use `yilian card issue-batch`)",
                )
        report.rows += card.issue_from_register(uow, self.ctx(call), rows=rows, actor=call.principal.identity)
        report.rows.sort(key=lambda r: r.line)
        patients = sorted({r.patient_id for r in report.rows if r.patient_id})
        return Reply(report.to_json(), patients=patients, entity="Card/batch")

    def counts(self, uow: UnitOfWork, call: Call[Any]) -> Reply:
        raw = call.query.get("as_of")
        as_of: dt.datetime | None = None
        if raw:
            try:
                as_of = dt.datetime.fromisoformat(raw)
            except ValueError:
                raise YilianError(
                    Category.INVALID, "as_of must be an ISO 8601 date-time with a time zone"
                ) from None
            if as_of.tzinfo is None:
                raise YilianError(
                    Category.INVALID, "as_of needs a time zone (e.g. 2026-12-31T23:59:59+08:00)"
                )
        return Reply(card.card_counts(uow, as_of=as_of).to_json(), entity="Card/counts")


def routes(api: ApiRoutes) -> list[BaseRoute]:
    h = _Handlers(api.db)
    changes: list[tuple[str, Change, bool]] = [
        ("activate", card.activate_card, False),
        ("report-lost", card.report_lost, False),
        ("suspend", card.suspend_card, False),
        ("resume", card.resume_card, False),
        ("revoke", card.revoke_card, False),
        ("replace", card.replace_card, True),
    ]
    return [
        # Fixed paths first: "counts" and "batch" must not be taken for card numbers.
        # Region-wide totals (by district, by status) are the health commission's indicators.
        api.route(
            "/api/cards/counts",
            h.counts,
            method="GET",
            permission=READ,
            subtype="card-counts",
            check=operator_only,
        ),
        api.route(
            "/api/cards/batch",
            h.batch,
            method="POST",
            permission=CREATE,
            subtype="card-issue-batch",
            check=operator_only,
        ),
        api.route(
            "/api/cards", h.issue, method="POST", permission=CREATE, body=IssueBody, subtype="card-issue"
        ),
        api.route("/api/cards/{card_no}", h.lookup, method="GET", permission=READ, subtype="card-lookup"),
        api.route(
            "/api/cards/{card_no}/history", h.history, method="GET", permission=READ, subtype="card-history"
        ),
        *(
            api.route(
                f"/api/cards/{{card_no}}/{name}",
                h.change(use_case, created=created),
                method="POST",
                permission=UPDATE,
                body=ReasonBody,
                subtype=f"card-{name}",
            )
            for name, use_case, created in changes
        ),
    ]
