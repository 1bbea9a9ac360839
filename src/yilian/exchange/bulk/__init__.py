"""Bulk data (HL7 Bulk Data Access IG v2): ``$export`` and ``$import`` as background jobs.

- :func:`parse_request`, :func:`allowed_types`, :func:`group_members` check a kick-off;
- :func:`create_job` / :func:`load_job` / :func:`cancel` keep jobs in the ``bulk_job`` table;
- :class:`BulkWorker` runs them in a thread of the server process (and resumes them after a restart);
- :func:`write_export` streams an export into NDJSON files; :func:`load_lines` loads NDJSON.
"""

from __future__ import annotations

from yilian.exchange.bulk.export import (
    AUDIT_PATIENTS,
    GROUP,
    NDJSON_FORMATS,
    PATIENT,
    SYSTEM,
    ExportRequest,
    allowed_types,
    group_members,
    parse_request,
    write_export,
)
from yilian.exchange.bulk.importer import Line, load_lines, read_lines
from yilian.exchange.bulk.jobs import (
    ACCEPTED,
    CANCELLED,
    COMPLETED,
    FAILED,
    RUNNING,
    Job,
    cancel,
    create_job,
    get_job,
    load_job,
)
from yilian.exchange.bulk.operations import bulk_operations
from yilian.exchange.bulk.worker import BulkWorker

__all__ = [
    "ACCEPTED",
    "AUDIT_PATIENTS",
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "GROUP",
    "NDJSON_FORMATS",
    "PATIENT",
    "RUNNING",
    "SYSTEM",
    "BulkWorker",
    "ExportRequest",
    "Job",
    "Line",
    "allowed_types",
    "bulk_operations",
    "cancel",
    "create_job",
    "get_job",
    "group_members",
    "load_job",
    "load_lines",
    "parse_request",
    "read_lines",
    "write_export",
]
