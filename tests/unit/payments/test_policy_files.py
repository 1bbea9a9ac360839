"""Where policies come from (shipped, and the deployment's YILIAN_POLICY_DIR) and which run out."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from yilian.kernel.errors import YilianError
from yilian.payments import policy_files
from yilian.payments.adjudication import POLICY_DIR

SHIPPED = sorted(p.name for p in POLICY_DIR.glob("*.yaml"))


def shipped(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((POLICY_DIR / name).read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def next_year(name: str, **changes: Any) -> dict[str, Any]:
    """A shipped policy carried into the following year, as a deployment would write it."""
    doc = shipped(name)
    year = int(doc["year"]) + 1
    return {**doc, "year": year, "valid_from": f"{year}-01-01", "valid_to": f"{year}-12-31", **changes}


def write(directory: Path, name: str, doc: object) -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def test_without_a_directory_the_shipped_policies_are_loaded() -> None:
    loaded = policy_files.load({})
    assert sorted(p.source for p in loaded) == SHIPPED
    assert policy_files.directories({}) == [POLICY_DIR]


def test_the_deployments_directory_adds_its_policies(tmp_path: Path) -> None:
    write(tmp_path, "ncms-330500-next.yaml", next_year("ncms-330500-2026.yaml"))
    loaded = policy_files.load({policy_files.ENV: str(tmp_path)})
    assert len(loaded) == len(SHIPPED) + 1
    added = [p for p in loaded if p.source == str(tmp_path / "ncms-330500-next.yaml")]
    assert [p.key for p in added] == ["ncms/330500/2027/v1"]


def test_the_same_policy_twice_is_refused_naming_both_files(tmp_path: Path) -> None:
    write(tmp_path, "copy.yaml", shipped("ncms-330500-2026.yaml"))
    with pytest.raises(YilianError) as err:
        policy_files.load({policy_files.ENV: str(tmp_path)})
    assert "ncms/330500/2026/v1 is given twice" in err.value.message
    assert "ncms-330500-2026.yaml" in err.value.message and str(tmp_path / "copy.yaml") in err.value.message


def test_a_revision_with_a_higher_version_is_accepted(tmp_path: Path) -> None:
    doc = {**shipped("ncms-330500-2026.yaml"), "version": 2, "valid_from": "2026-07-01"}
    write(tmp_path, "ncms-330500-2026-v2.yaml", doc)
    keys = [p.key for p in policy_files.load({policy_files.ENV: str(tmp_path)})]
    assert "ncms/330500/2026/v1" in keys and "ncms/330500/2026/v2" in keys


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("scheme: [unclosed", "cannot be read"),
        ("- just\n- a list\n", "not a YAML mapping"),
        ("scheme: ncms\n", "is malformed"),
    ],
)
def test_a_bad_file_is_refused_with_its_path(tmp_path: Path, content: str, says: str) -> None:
    (tmp_path / "broken.yaml").write_text(content, encoding="utf-8")
    with pytest.raises(YilianError) as err:
        policy_files.load({policy_files.ENV: str(tmp_path)})
    assert says in err.value.message and "broken.yaml" in err.value.message


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(YilianError) as err:
        policy_files.load({policy_files.ENV: str(tmp_path / "nowhere")})
    assert "no such directory" in err.value.message


def test_ending_warns_of_each_scheme_without_a_successor(tmp_path: Path) -> None:
    write(tmp_path, "ncms-next.yaml", next_year("ncms-330500-2026.yaml"))
    policies = policy_files.load({policy_files.ENV: str(tmp_path)})
    soon = policy_files.ending(policies, today=dt.date(2026, 12, 6), within_days=45)
    # NCMS goes on into the next year; every other scheme stops at the year's end.
    assert sorted(e.scheme for e in soon) == sorted(
        str(shipped(n)["scheme"]) for n in SHIPPED if n != "ncms-330500-2026.yaml"
    )
    assert {(e.valid_to, e.days_left) for e in soon} == {(dt.date(2026, 12, 31), 25)}
    assert "ends on 2026-12-31 (in 25 days)" in soon[0].message
    # Far enough ahead, nothing yet; NCMS's own end comes a year later.
    assert policy_files.ending(policies, today=dt.date(2026, 6, 1), within_days=45) == []
    late = policy_files.ending(policies, today=dt.date(2027, 12, 1), within_days=45)
    assert [(e.scheme, e.last, e.valid_to) for e in late if e.scheme == "ncms"] == [
        ("ncms", "ncms/330500/2027/v1", dt.date(2027, 12, 31))
    ]


def test_ending_reports_a_scheme_already_without_policy_and_not_one_yet_to_start(tmp_path: Path) -> None:
    write(
        tmp_path,
        "far.yaml",
        next_year("ncms-330500-2026.yaml", year=2029, valid_from="2029-01-01", valid_to="2029-12-31"),
    )
    policies = policy_files.load({policy_files.ENV: str(tmp_path)})
    gap = [e for e in policy_files.ending(policies, today=dt.date(2027, 3, 1)) if e.scheme == "ncms"]
    assert [(e.last, e.days_left) for e in gap] == [("ncms/330500/2026/v1", -60)]
    assert "ended on 2026-12-31 (60 days ago)" in gap[0].message
    only_future = [p for p in policies if p.year == 2029]
    assert policy_files.ending(only_future, today=dt.date(2027, 3, 1)) == []


def test_the_servers_start_gets_one_line_per_end_date(tmp_path: Path) -> None:
    write(tmp_path, "ncms-next.yaml", next_year("ncms-330500-2026.yaml"))
    policies = policy_files.load({policy_files.ENV: str(tmp_path)})
    lines = policy_files.summary(policy_files.ending(policies, today=dt.date(2026, 12, 20)))
    assert len(lines) == 1
    assert "end on 2026-12-31 (in 11 days)" in lines[0] and "ncms" not in lines[0]
    assert all(f"{s} 330500" in lines[0] for s in ("medical-aid", "urban-employee", "urban-resident"))
    late = policy_files.summary(policy_files.ending(policies, today=dt.date(2027, 12, 30)))
    assert [line.split(" end")[0] for line in late] == [
        "the reimbursement policies of medical-aid 330500, urban-employee 330500, urban-resident 330500",
        "the reimbursement policies of ncms 330500",
    ]
    assert "ended on 2026-12-31 (364 days ago)" in late[0] and "end on 2027-12-31 (in 1 day)" in late[1]
    assert policy_files.summary([]) == []


def test_a_relative_directory_names_its_files_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "ncms-next.yaml", next_year("ncms-330500-2026.yaml"))
    monkeypatch.chdir(tmp_path)
    added = [p for p in policy_files.load({policy_files.ENV: "."}) if p.year == 2027]
    assert [p.source for p in added] == [str((tmp_path / "ncms-next.yaml").resolve())]
