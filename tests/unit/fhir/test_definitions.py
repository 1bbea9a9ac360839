"""The shipped definitions are exactly what the generator makes from the official files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.paths import ROOT, SHARED
from yilian.fhir.model import model
from yilian.fhir.search.registry import registry


def test_shipped_definitions_are_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "gen_definitions.py"),
            "--source",
            str(SHARED / "fhir-r4-definitions"),
            "--out",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    shipped = ROOT / "src" / "yilian" / "fhir" / "definitions"
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == sorted(p.name for p in shipped.glob("*.json.gz"))
    for name in generated:
        assert (tmp_path / name).read_bytes() == (shipped / name).read_bytes(), (
            f"re-run scripts/gen_definitions.py ({name})"
        )


def test_model_covers_every_r4_resource_type() -> None:
    assert len(model().resource_types) >= 145
    assert {"Patient", "Observation", "Bundle", "Immunization", "Claim"} <= model().resource_types


def test_every_type_has_the_common_search_parameters() -> None:
    for rtype, tp in registry().items():
        assert {"_id", "_lastUpdated", "_tag", "_profile", "_security", "_source", "_content"} <= set(
            tp.params
        ), rtype
