"""Telling the rest of the platform that a person changed: linked, unlinked, merged, unmerged,
created for a new record, or left without records.

Every identity decision (:func:`yilian.mpi.service._event`) names the persons it changed. Other
systems that must know — subscriptions on ``Person`` in ``yilian.exchange.outbound`` — register
a listener with :func:`on_person_change`; the patient index cannot import them (they build on
it), so they come to it.

When: a steward's decision (link, unlink, merge, unmerge, a review accepted, an HL7 merge) tells
the listeners at once, in the decision's transaction. A decision taken *while a Patient record
is written* (the index registering it) is held until :func:`flush` — which the platform's last
write observer calls after the other observers have run — so that what the write itself derives
(the access grant that lets the hospital see its new patient) already counts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from yilian.db import UnitOfWork

Listener = Callable[[UnitOfWork, frozenset[str]], None]

_listeners: list[Listener] = []
_PENDING = "mpi.changed_persons"
_HELD = "mpi.hold_person_changes"


def on_person_change(listener: Listener) -> None:
    """Call ``listener(uow, persons)`` with the persons each identity decision changed (once per
    listener, however often registered)."""
    if listener not in _listeners:
        _listeners.append(listener)


def changed(uow: UnitOfWork, *persons: str | None) -> None:
    pending: set[str] = uow.state.setdefault(_PENDING, set())
    pending.update(p for p in persons if p)
    if not uow.state.get(_HELD):
        flush(uow)


@contextmanager
def held(uow: UnitOfWork) -> Iterator[None]:
    """Hold the changes made inside until :func:`flush` (the write observers' turn)."""
    before = uow.state.get(_HELD)
    uow.state[_HELD] = True
    try:
        yield
    finally:
        uow.state[_HELD] = before


def flush(uow: UnitOfWork) -> None:
    """Tell the listeners of the changes held so far in ``uow``."""
    pending: set[str] | None = uow.state.pop(_PENDING, None)
    if not pending or not _listeners:
        return
    persons = frozenset(pending)
    for listener in list(_listeners):
        listener(uow, persons)
