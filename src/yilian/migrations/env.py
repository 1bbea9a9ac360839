"""Alembic environment: runs against the Database handed over in the config's attributes."""

from __future__ import annotations

from alembic import context

import yilian.card.tables
import yilian.exchange.bulk.tables
import yilian.exchange.outbound.tables
import yilian.exchange.tables
import yilian.fhir.store.tables
import yilian.mpi.tables
import yilian.payments.tables
import yilian.security.audit.tables
import yilian.security.tables  # noqa: F401
from yilian.db import metadata

config = context.config
db = config.attributes["database"]

with db.engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=db.is_sqlite,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
