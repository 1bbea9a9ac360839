"""The access-decision interface the FHIR core applies on every path that returns or changes data.

The core does not know who is asking or why they may see a record; the security system does.
It hands the core an :class:`AccessPolicy` with each request (in the :class:`FhirContext`), and
the core consults it at the few places where data leaves or enters storage: search (as a SQL
condition on every resource alias, so chains, ``_has``, counts and paging see only what the
caller may see), includes, reads, history, ``$everything``, and writes. One decision, made
in one place, applied everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import ColumnElement
from sqlalchemy.sql.expression import FromClause

from yilian.kernel.errors import Category, YilianError

# Interactions as SMART scopes see them: c(reate) r(ead) u(pdate) d(elete) s(earch).
CREATE, READ, UPDATE, DELETE, SEARCH = "c", "r", "u", "d", "s"

# The patient key of a resource that holds the data of more than one patient (a stored Bundle
# collecting several patients' records): no institution has a reason for it as a whole, so only
# callers who see every record (the platform operator, break-the-glass) see it. A valid FHIR id
# (it can reach the audit log), reserved: no Patient may have it.
SEVERAL_PATIENTS = "several.patients"


@dataclass(frozen=True)
class Write:
    """One write as the access decision sees it, before anything is stored."""

    resource_type: str
    resource_id: str
    resource: dict[str, Any] | None  # what will be stored; None: a deletion
    patient_key: str | None  # the compartment it goes into (SEVERAL_PATIENTS: more than one)
    patients: frozenset[str]  # every patient whose data it holds (empty: registry data)
    is_new: bool  # no version of it was ever stored (not even a deleted one)
    previous: bytes | None = None  # the current version's JSON it replaces, if any
    previous_key: str | None = None


@dataclass(frozen=True)
class WriteRefusal:
    """Why a write is refused. ``message`` None: the caller has no reason for a patient the write
    names, and is answered exactly as if that patient did not exist (nothing tells it apart)."""

    message: str | None = None


class AccessPolicy(Protocol):
    """What the caller of one request may do. Implementations must be cheap to consult."""

    def allows(self, permission: str, resource_type: str) -> bool:
        """Scope check: may the caller ``permission`` (c r u d s) resources of this type at all?"""
        ...

    def row_filter(self, r: FromClause) -> ColumnElement[bool] | None:
        """A condition on a ``resource`` alias keeping only rows the caller may see (None: all)."""
        ...

    def can_see(
        self, uow: Any, resource_type: str, patient_key: str | None, resource_id: str | None = None
    ) -> bool:
        """Whether one stored resource (of this type, in this patient's compartment) is visible.

        Consulted inside the request's unit of work, so what the request itself wrote counts.
        ``resource_id`` is needed for types whose resources belong to their creator (a
        Subscription); a caller that does not pass it is refused those.
        """
        ...

    def check_write(self, uow: Any, write: Write) -> WriteRefusal | None:
        """Whether the caller may make this write (None: it may).

        Writing into a patient's record needs the same reason as reading it, or the write would
        create the access it needs (docs/decisions/0015). Consulted in the write's unit of work
        before anything is stored; the policy may record what the write claims (the audit log).
        """
        ...

    @property
    def identity(self) -> str:
        """Who the policy is for (binds paging cursors to their caller)."""
        ...

    @property
    def front_desk(self) -> bool:
        """Whether the caller identifies people who present themselves (a member institution,
        the platform operator): it is told why a number it looks a person up by was withdrawn (a
        lost card) even before it has a reason to see that person — that is what its desk must
        refuse the number for. A resident is not: a number that is not theirs (or their
        children's) answers as unknown, so nothing tells whether somebody else holds it."""
        ...


class AllowAll:
    """The policy of trusted in-process callers (migrations, the CLI's own loaders, unit tests)."""

    def allows(self, permission: str, resource_type: str) -> bool:
        return True

    def row_filter(self, r: FromClause) -> ColumnElement[bool] | None:
        return None

    def can_see(
        self, uow: Any, resource_type: str, patient_key: str | None, resource_id: str | None = None
    ) -> bool:
        return True

    def check_write(self, uow: Any, write: Write) -> WriteRefusal | None:
        return None

    @property
    def identity(self) -> str:
        return "trusted"

    @property
    def front_desk(self) -> bool:
        return True


ALLOW_ALL = AllowAll()


class WriteObserver(Protocol):
    """Something that must know about every write as it happens, in the same transaction:
    access grants derived from data, the patient index, subscriptions, forwarding."""

    def on_write(
        self,
        uow: Any,
        ctx: Any,
        resource_type: str,
        resource_id: str,
        resource: dict[str, Any] | None,
        patient_key: str | None,
    ) -> None:
        """``resource`` is the stored JSON (None for a deletion)."""
        ...


class PreparingWriteObserver(WriteObserver, Protocol):
    """An observer that also sees a resource before it is stored (optional): it may put values
    into their normal form, in place, or refuse the write (raise). Every write path calls it —
    create, update, patch, transaction entries, bulk loads — before the resource is stamped,
    sealed and indexed, so what it changes is what is stored."""

    def before_write(self, uow: Any, ctx: Any, resource_type: str, resource: dict[str, Any]) -> None: ...


class LookupGuard(Protocol):
    """Told of every identifier a request looks resources up by — search (also chained, ``_has``,
    ``:identifier`` references, conditional interactions) and the operations that resolve a
    person by identifier (``$match``, PIX) — before anything is found: the system that issues
    an identifier refuses lookups by a number it has withdrawn (the card system: a lost or
    revoked card) by raising, with the reason. ``system`` is None for a value given without one.
    A caller who is not at a front desk (``policy.front_desk``) is told the reason only for a
    number of a person it may see; for any other number the guard stays silent and the lookup
    finds nothing, as for a number never issued."""

    def check_lookup(self, uow: Any, system: str | None, value: str, policy: AccessPolicy) -> None: ...


def check_lookups(
    guards: Iterable[LookupGuard],
    uow: Any,
    identifiers: Iterable[tuple[str | None, str]],
    policy: AccessPolicy,
) -> None:
    """Ask every guard about every (system, value) a request looks up by."""
    guards = tuple(guards)
    if not guards:
        return
    for system, value in identifiers:
        for guard in guards:
            guard.check_lookup(uow, system, value, policy)


def is_first_version(resource: dict[str, Any] | None) -> bool:
    """Whether an observed write made version 1: nothing derived from earlier versions can exist
    (a deleted and re-created resource goes on counting), so an observer can skip its clean-up."""
    meta = resource.get("meta") if resource is not None else None
    return isinstance(meta, dict) and meta.get("versionId") == "1"


class BatchWriteObserver(WriteObserver, Protocol):
    """An observer that can take a bulk load's new resources together (optional).

    ``on_new_many`` receives resources that had never been stored before (no earlier version,
    not even a deleted one), as ``(type, id, resource, patient_key)``, in the same transaction;
    it must leave the database as ``on_write`` called for each would. Bulk loads call it
    instead of ``on_write`` when an observer has it.
    """

    def on_new_many(
        self, uow: Any, ctx: Any, items: list[tuple[str, str, dict[str, Any], str | None]]
    ) -> None: ...


class VirtualType(Protocol):
    """A resource type another system keeps in storage of its own and serves read-only."""

    def search(self, uow: Any, ctx: Any, pairs: list[tuple[str, str]], *, path: str) -> Any:
        """A searchset response (``FhirResponse``)."""
        ...

    def read(self, uow: Any, ctx: Any, resource_id: str) -> Any:
        """One resource's response (``FhirResponse``)."""
        ...


class Operation(Protocol):
    """A FHIR operation another system provides (``Patient/$match`` from the patient index).

    ``name`` without the ``$``; ``resource_type`` None for a system-level operation; ``instance``
    True when it runs on ``Type/{id}/$name``. ``affects_state`` False means a POST only reads.
    """

    name: str
    resource_type: str | None
    instance: bool
    affects_state: bool
    definition: str  # canonical URL of its OperationDefinition, for the CapabilityStatement

    def run(self, uow: Any, ctx: Any, req: Any, resource_id: str | None) -> Any:
        """The response (``FhirResponse``)."""
        ...


def require(policy: AccessPolicy, permission: str, resource_type: str) -> None:
    """Refuse outright when the caller's scopes do not cover the interaction."""
    if not policy.allows(permission, resource_type):
        names = {CREATE: "create", READ: "read", UPDATE: "update", DELETE: "delete", SEARCH: "search"}
        raise YilianError(
            Category.FORBIDDEN,
            f"the access token does not allow {names.get(permission, permission)} of {resource_type}",
        )


def check_write(policy: AccessPolicy, uow: Any, write: Write) -> WriteRefusal | None:
    """``policy.check_write``; a policy without write rules of its own lets a caller write only
    where it can see (every patient the write names)."""
    check = getattr(policy, "check_write", None)
    if check is not None:
        return check(uow, write)  # type: ignore[no-any-return]
    seen = all(policy.can_see(uow, write.resource_type, k, write.resource_id) for k in write.patients)
    return None if seen else WriteRefusal()


def not_visible(resource_type: str, resource_id: str) -> YilianError:
    """What a caller without a reason is told: the same as if the resource did not exist."""
    return YilianError(Category.NOT_FOUND, f"{resource_type}/{resource_id} does not exist")
