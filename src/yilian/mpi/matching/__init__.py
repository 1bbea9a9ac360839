"""Matching engine of the master patient index: who is this registration?

Pure Python on plain records (:class:`PersonRecord`), no database and no FHIR, so the same
engine serves the FHIR ``$match`` operation, registration-time matching, the CLI's bulk
commands and the review queue.

- :class:`Matcher` scores one pair: Chinese-name-aware comparison vectors, deterministic
  rules (same valid ID number; household guard), a Fellegi–Sunter :class:`MatchModel`.
- :class:`MatchIndex` is the real-time index: ``add``/``update``/``remove`` and
  ``match(record) -> [Candidate]``.
- :func:`dedupe` and :func:`link` are the bulk runs; :func:`load_column_map` reads CSV files.
- :func:`train` learns a model (EM) from records; the model is JSON (``to_json``/``from_json``).

See ``docs/decisions/0005-mpi-matching.md`` for the model and what was measured.
"""

from yilian.mpi.matching.bulk import DedupeResult, Link, dedupe, link
from yilian.mpi.matching.column_map import ColumnMap, load_column_map, shipped_map
from yilian.mpi.matching.features import Features, prepare
from yilian.mpi.matching.index import Candidate, MatchIndex
from yilian.mpi.matching.matcher import FieldEvidence, Matcher, PairScore
from yilian.mpi.matching.model import GRADES, Grade, MatchModel, Thresholds
from yilian.mpi.matching.names import Name, normalise_name
from yilian.mpi.matching.record import Identifier, PersonRecord, Sex
from yilian.mpi.matching.training import train

__all__ = [
    "GRADES",
    "Candidate",
    "ColumnMap",
    "DedupeResult",
    "Features",
    "FieldEvidence",
    "Grade",
    "Identifier",
    "Link",
    "MatchIndex",
    "MatchModel",
    "Matcher",
    "Name",
    "PairScore",
    "PersonRecord",
    "Sex",
    "Thresholds",
    "dedupe",
    "link",
    "load_column_map",
    "normalise_name",
    "prepare",
    "shipped_map",
    "train",
]
