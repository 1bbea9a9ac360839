"""history: of one resource, of a type, of the whole system; ``_since``, ``_at``, ``_count``, paging."""

from __future__ import annotations

from dataclasses import dataclass

from yilian.db import UnitOfWork
from yilian.fhir.access import ALLOW_ALL, READ, AccessPolicy, not_visible, require
from yilian.fhir.interactions import writes
from yilian.fhir.interactions.outcome import Resource
from yilian.fhir.interactions.read import check_type
from yilian.fhir.interactions.search import decode_cursor, encode_cursor
from yilian.fhir.model import model
from yilian.fhir.search.values import date_range
from yilian.fhir.store import repository as repo
from yilian.fhir.store.tables import resource_version
from yilian.kernel.errors import Category, YilianError

MAX_COUNT = 1000


@dataclass
class HistoryPage:
    entries: list[Resource]
    total: int
    next_cursor: str | None
    used: list[tuple[str, str]]


def _instant(name: str, value: str, *, upper: bool) -> int:
    r = date_range(value)
    if r is None:
        raise YilianError(
            Category.INVALID, f"{name} must be a FHIR instant (e.g. 2026-01-01T00:00:00Z), not {value!r}"
        )
    return r[1] if upper else r[0]


def history(
    uow: UnitOfWork,
    *,
    res_type: str | None,
    res_id: str | None,
    pairs: list[tuple[str, str]],
    default_count: int = 50,
    policy: AccessPolicy = ALLOW_ALL,
) -> HistoryPage:
    if res_type is not None:
        check_type(res_type)
        require(policy, READ, res_type)
    writes.flush(uow)
    since = at = None
    count = default_count
    cursor = None
    used: list[tuple[str, str]] = []
    for name, value in pairs:
        if name == "_since":
            since = _instant(name, value, upper=False)
            used.append((name, value))
        elif name == "_at":
            at = _instant(name, value, upper=True)
            used.append((name, value))
        elif name == "_count":
            try:
                count = max(0, min(int(value), MAX_COUNT))
            except ValueError:
                raise YilianError(Category.INVALID, f"_count must be a whole number, not {value!r}") from None
            used.append((name, str(count)))
        elif name == "_cursor":
            cursor = value
        elif name in ("_format", "_pretty"):
            continue
        else:
            raise YilianError(Category.INVALID, f"history does not take the parameter {name!r}")
    if res_id is not None and res_type is not None:
        current = repo.get_current(uow.conn, res_type, res_id)
        if current is None or not policy.can_see(uow, res_type, current.patient_key, res_id):
            raise not_visible(res_type, res_id)
    # History is filtered like reads: by compartment (each version's own) and by type scopes.
    visible = policy.row_filter(resource_version)
    allowed_types = None
    if res_type is None:
        every = sorted(model().resource_types)
        permitted = [t for t in every if policy.allows(READ, t)]
        allowed_types = None if len(permitted) == len(every) else permitted
    sig = f"h:{res_type}:{res_id}:{sorted(used)}"
    before = None
    if cursor:
        vals = decode_cursor(cursor, sig)
        before = (int(vals[0]), int(vals[1]), int(vals[2]))
    total = repo.history_count(
        uow.conn, res_type=res_type, res_id=res_id, since=since, at=at, visible=visible, types=allowed_types
    )
    rows = repo.history(
        uow.conn,
        res_type=res_type,
        res_id=res_id,
        since=since,
        at=at,
        before=before,
        limit=count + 1,
        visible=visible,
        types=allowed_types,
    )
    more = len(rows) > count
    rows = rows[:count]
    nxt = None
    if more and rows:
        last = rows[-1]
        nxt = encode_cursor([last.last_updated, last.pk, last.version], sig)
    return HistoryPage([Resource.of(r) for r in rows], total, nxt, used)
