"""Legacy CSV migration: a declarative YAML mapping from a legacy system's CSV tables to FHIR R4.

- :func:`load_mapping` reads and checks a mapping file (or a shipped one by name: ``synthea``)
  into a :class:`Plan`; a wrong mapping fails here with every problem listed;
- :func:`migrate` runs a plan over a folder of CSV files through the FHIR core and returns a
  :class:`MigrationReport` (counts per table, and every row that did not land, with its reason).

See docs/migrate.md for the mapping file reference.
"""

from __future__ import annotations

from yilian.exchange.migrate.plan import Plan, TablePlan, compile_text, shipped_mappings
from yilian.exchange.migrate.plan import load as load_mapping
from yilian.exchange.migrate.report import MigrationReport, Problem, TableReport
from yilian.exchange.migrate.runner import CHUNK, Listener, migrate

__all__ = [
    "CHUNK",
    "Listener",
    "MigrationReport",
    "Plan",
    "Problem",
    "TablePlan",
    "TableReport",
    "compile_text",
    "load_mapping",
    "migrate",
    "shipped_mappings",
]
