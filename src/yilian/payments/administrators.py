"""Which institution administers which fund: what lets an insurer's own client read its lines
of the daily clearing.

A fund is a ledger account named by its policy (``fund_account: fund:ncms:330500``); the body
that runs it (the city's medical insurance bureau, the civil-affairs office for medical aid) is
an Organization of the shared record like a hospital, with its own system clients. The mapping
is deployment configuration, as the Organization ids are the region's:

    YILIAN_FUND_ADMINISTRATORS="fund:ncms:330500=org-hz-ybj,aid:medical-aid:330500=org-hz-mz"

Such a client then reads the lines its funds pay (``GET /api/settlement/days/{date}``), besides
any it is paid as an institution; it moves no money on the funds' behalf.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from yilian.kernel.errors import Category, YilianError

ENV = "YILIAN_FUND_ADMINISTRATORS"


def fund_administrators(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """fund account → the administering Organization's id, from ``YILIAN_FUND_ADMINISTRATORS``."""
    raw = (os.environ if env is None else env).get(ENV, "").strip()
    out: dict[str, str] = {}
    for n, item in enumerate(filter(None, (part.strip() for part in raw.split(","))), start=1):
        fund, sep, org = (x.strip() for x in item.partition("="))
        if not sep or not fund or not org:
            raise YilianError(
                Category.INVALID, f"{ENV}: entry {n} must look like <fund account>=<Organization id>"
            )
        if fund in out:
            raise YilianError(Category.INVALID, f"{ENV}: fund {fund!r} is named twice")
        out[fund] = org.removeprefix("Organization/")
    return out


def check_administrators(known_funds: Iterable[str], env: Mapping[str, str] | None = None) -> None:
    """Refuse a mapping that names a fund no policy has (a typo would hide the lines silently)."""
    known = set(known_funds)
    unknown = sorted(set(fund_administrators(env)) - known)
    if unknown:
        raise YilianError(
            Category.INVALID,
            f"{ENV} names funds no policy has: {', '.join(unknown)} (the policies' funds: {', '.join(sorted(known))})",
        )


def funds_of(org_id: str, env: Mapping[str, str] | None = None) -> frozenset[str]:
    """The funds ``org_id`` administers (empty for a hospital)."""
    return frozenset(fund for fund, org in fund_administrators(env).items() if org == org_id)
