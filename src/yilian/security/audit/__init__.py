"""The tamper-evident audit log: every access, one FHIR AuditEvent, append-only, hash-chained.

Writing:
- :func:`record` ``(uow, AuditRecord(...))`` — in the caller's transaction (creates, updates,
  deletes, denials): committed or rolled back with the change it describes;
- :class:`AuditWriter` — group commit for reads: ``await writer.record(r)`` /
  ``writer.record_sync(r)`` return once the row is committed.

Sealing and checking: :func:`seal` chains committed rows in id order (:class:`Sealer` does it
every second in the server), :func:`verify` recomputes the chain and names every edited,
removed or reordered row, :func:`prune` removes rows past retention (never younger than
:data:`RETENTION_DAYS` days) behind a checkpoint. The database refuses any other UPDATE or
DELETE of the log (triggers, on SQLite and PostgreSQL).

Reading, for auditors: :func:`search_audit` (FHIR AuditEvent search parameters, newest
first, keyset-paged) and :func:`read_audit`; :meth:`AuditRow.resource` is the AuditEvent served.
"""

from yilian.security.audit.chain import GAP_GRACE_S, Sealer, seal
from yilian.security.audit.event import to_audit_event
from yilian.security.audit.model import RETENTION_DAYS, AuditRecord, AuditRow
from yilian.security.audit.recorder import flush, record
from yilian.security.audit.retention import PruneResult, check_cutoff, earliest_allowed, prune
from yilian.security.audit.search import AuditPage, read_audit, search_audit
from yilian.security.audit.verify import Problem, VerifyReport, verify
from yilian.security.audit.writer import AuditWriter

__all__ = [
    "GAP_GRACE_S",
    "RETENTION_DAYS",
    "AuditPage",
    "AuditRecord",
    "AuditRow",
    "AuditWriter",
    "Problem",
    "PruneResult",
    "Sealer",
    "VerifyReport",
    "check_cutoff",
    "earliest_allowed",
    "flush",
    "prune",
    "read_audit",
    "record",
    "seal",
    "search_audit",
    "to_audit_event",
    "verify",
]
