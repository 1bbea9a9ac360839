"""Storage of bulk data jobs (``$export``, ``$import``).

One row per job: who started it (so that only that client may poll it or fetch its files),
what was asked, where it stands, and what it produced. The files themselves live in a
directory per job under the bulk directory (``YILIAN_BULK_DIR``); the row is what lets a
restarted server pick an unfinished job up again and find, expire and remove finished ones.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from yilian.db.schema import metadata

bulk_job = Table(
    "bulk_job",
    metadata,
    Column("job_id", String(36), primary_key=True),
    Column("kind", String(8), nullable=False),  # export | import
    # accepted -> running -> completed | failed; cancelled by the owner's DELETE at any point.
    Column("state", String(16), nullable=False),
    # Who may see the job (the caller's identity, e.g. "system:<client id>").
    Column("owner", String(200), nullable=False),
    # The caller as the entry point needs it to rebuild the access decision after a restart (JSON).
    Column("caller", Text, nullable=False),
    Column("request", Text, nullable=False),  # the kick-off URL, echoed in the manifest
    Column("params", Text, nullable=False),  # JSON: level, types, since, group, inputs…
    Column("transaction_time", BigInteger, nullable=False),  # µs since epoch
    Column("created", BigInteger, nullable=False),
    # Heartbeat of the worker running it: a running job whose heartbeat is stale was abandoned
    # (the server stopped) and is taken up again.
    Column("updated", BigInteger, nullable=False),
    Column("worker", String(64), nullable=True),  # which worker runs it (heartbeats are its own)
    Column("expires", BigInteger, nullable=True),
    Column("processed", Integer, nullable=False, default=0),
    Column("total", Integer, nullable=True),
    Column("output", Text, nullable=False, default="[]"),  # JSON [{type, file, count}]
    Column("errors", Text, nullable=False, default="[]"),  # JSON [{type, file, count}] or messages
    Column("message", Text, nullable=True),  # why a job failed
    Index("ix_bulk_job_state", "state"),
    Index("ix_bulk_job_owner", "owner"),
)
