"""Master patient index (MPI): every resident once, across every member institution.

``yilian.mpi.matching`` is the matching engine (normalisation, Fellegi–Sunter scoring, the
in-memory index for benchmarks and bulk runs); it knows nothing of FHIR or storage. The rest
wires it to the platform:

- :class:`PatientIndexObserver` registers every Patient write (REST, transaction, import, HL7,
  CSV) in the write's own transaction: certain match → linked, probable → a review task,
  otherwise a new person;
- ``Patient/$match``, ``Patient/$ihe-pix`` and the read-only ``Person`` type (:func:`operations`,
  :func:`virtual_types`);
- the steward's use cases: :func:`link_record`, :func:`unlink_record`, :func:`merge_persons`,
  :func:`unmerge`, the review queue, :func:`history`, :func:`train_and_store`;
- :func:`on_person_change` for the systems that must know when a person changes (subscriptions
  on ``Person``), and :func:`flush_person_changes` for the write observer that tells them.
"""

from yilian.mpi.changes import flush as flush_person_changes
from yilian.mpi.changes import on_person_change
from yilian.mpi.fhir_ops import PatientIndexObserver, cross_reference, operations, virtual_types
from yilian.mpi.service import (
    Candidate,
    IndexCounts,
    PersonView,
    Registered,
    Review,
    accept_review,
    check_configuration,
    counts,
    find_candidates,
    history,
    link_record,
    list_reviews,
    merge_persons,
    person_of,
    person_view,
    records_of,
    register,
    reject_review,
    train_and_store,
    unlink_record,
    unmerge,
)

__all__ = [
    "Candidate",
    "IndexCounts",
    "PatientIndexObserver",
    "PersonView",
    "Registered",
    "Review",
    "accept_review",
    "check_configuration",
    "counts",
    "cross_reference",
    "find_candidates",
    "flush_person_changes",
    "history",
    "link_record",
    "list_reviews",
    "merge_persons",
    "on_person_change",
    "operations",
    "person_of",
    "person_view",
    "records_of",
    "register",
    "reject_review",
    "train_and_store",
    "unlink_record",
    "unmerge",
    "virtual_types",
]
