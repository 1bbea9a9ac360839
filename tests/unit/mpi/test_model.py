"""The model: JSON round trip, grades, and frequency-weighted names."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from yilian.kernel.errors import YilianError
from yilian.mpi.matching.matcher import Matcher
from yilian.mpi.matching.model import MatchModel, Thresholds
from yilian.mpi.matching.record import PersonRecord


def test_json_round_trip() -> None:
    model = MatchModel.default().with_thresholds(Thresholds(0.98, 0.8, 0.4))
    again = MatchModel.from_json(model.to_json())
    assert again.to_dict() == model.to_dict()
    data = json.loads(model.to_json())
    assert data["format"] == "yilian-mpi-model"
    assert [f["name"] for f in data["fields"]][:3] == ["family_name", "given_name", "birth_date"]
    assert set(data["fields"][0]["levels"][0]) == {"level", "m", "u", "tf"}


def test_malformed_documents_are_refused() -> None:
    data = MatchModel.default().to_dict()
    data["fields"][0]["levels"].pop()
    with pytest.raises(YilianError):
        MatchModel.from_dict(data)
    with pytest.raises(YilianError):
        MatchModel.from_dict({"format": "something else"})
    with pytest.raises(YilianError, match="expected a JSON object"):
        MatchModel.from_json("[1, 2]")


def test_a_version_1_model_scores_every_pair_as_it_did() -> None:
    """Models stored by `yilian mpi train` before the postcode's slip level still load; a slipped
    postcode weighs what "different" weighed then, so no stored decision changes on upgrade."""
    current = MatchModel.default()
    old = current.to_dict()
    old["version"] = 1
    for f in old["fields"]:
        if f["name"] == "postcode":
            exact, slip, different = f["levels"]
            f["levels"] = [
                exact,
                {**different, "m": slip["m"] + different["m"], "u": slip["u"] + different["u"]},
            ]
    upgraded = MatchModel.from_dict(old)
    postcode = next(f for f in upgraded.fields if f.name == "postcode")
    assert postcode.levels == ("exact", "slip", "different")
    assert postcode.weight(1) == pytest.approx(postcode.weight(2))
    assert postcode.weight(0) == next(f for f in current.fields if f.name == "postcode").weight(0)
    assert sum(postcode.m) == pytest.approx(1.0) and sum(postcode.u) == pytest.approx(1.0)
    assert json.loads(upgraded.to_json())["version"] == 2
    with pytest.raises(YilianError):
        MatchModel.from_dict({**old, "version": 3})
    # A broken version-1 document is refused with a reason, not a crash in the upgrade.
    for f in old["fields"]:
        if f["name"] == "postcode":
            del f["levels"][1]["m"]
    with pytest.raises(YilianError, match="malformed version 1"):
        MatchModel.from_dict(old)


def test_grades_follow_thresholds() -> None:
    t = Thresholds(0.99, 0.9, 0.5)
    assert [t.grade(p) for p in (0.995, 0.95, 0.6, 0.1)] == [
        "certain",
        "probable",
        "possible",
        "certainly-not",
    ]


def test_common_surname_is_weaker_evidence_than_a_rare_one() -> None:
    born = dt.date(1970, 1, 2)
    m = Matcher()

    def weight(name: str, other: str) -> float:
        return m.compare_records(
            PersonRecord("a", full_name=name, birth_date=born),
            PersonRecord("b", full_name=other, birth_date=born),
        ).weight

    assert weight("王伟", "王伟") < weight("欧阳伟", "欧阳伟")
    assert weight("李明", "李明") < weight("诸葛明", "诸葛明")


def test_evidence_lists_every_field() -> None:
    s = Matcher().compare_records(
        PersonRecord("a", full_name="张伟"), PersonRecord("b", full_name="Zhang Wei")
    )
    assert [e.field for e in s.evidence][:2] == ["family_name", "given_name"]
    assert s.evidence[0].level == "pinyin"
    assert s.evidence[2].level is None and s.evidence[2].weight == 0.0
