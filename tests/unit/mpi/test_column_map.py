"""CSV column maps, including the shipped FEBRL map."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.support.paths import SHARED
from yilian.kernel.errors import YilianError
from yilian.mpi.matching.column_map import column_map_from_dict, load_column_map, shipped_map

FEBRL = SHARED / "record-linkage" / "febrl"


def test_febrl_map_reads_dataset1() -> None:
    records = load_column_map(shipped_map("febrl")).read_csv(FEBRL / "dataset1.csv")
    assert len(records) == 1000
    first = records[0]
    assert first.record_id == "rec-223-org"
    assert (first.family_name, first.given_name) == ("waller", None)
    assert first.birth_date == dt.date(1908, 12, 9)
    assert first.postcode == "4011"
    assert first.prc_id is None  # soc_sec_id is an Australian number, not a PRC ID
    assert [i.value for i in first.identifiers] == ["6988048"]
    assert first.address_lines == ("6", "tullaroop street", "willaroo")


def test_a_chinese_map(tmp_path: Path) -> None:
    (tmp_path / "map.yaml").write_text(
        """
record_id: 病案号
source: {value: 县医院}
full_name: 姓名
birth_date: {column: 出生日期, format: "%Y/%m/%d"}
sex: {column: 性别, values: {男: male, 女: female, 9: female}}
prc_id: 身份证号
phone: 电话
address_lines: 住址
postcode: 邮编
mrn: 病案号
identifiers: [{system: "urn:insurance", column: 医保号}]
""",
        encoding="utf-8",
    )
    (tmp_path / "data.csv").write_text(
        "病案号,姓名,出生日期,性别,身份证号,电话,住址,邮编,医保号\nA1,张伟,1980/03/04,男,,13800138000,人民路1号,313000,\nA2,李娜,1980/02/31,9,,,,,Y9\n",
        encoding="utf-8",
    )
    records = load_column_map(tmp_path / "map.yaml").read_csv(tmp_path / "data.csv")
    assert (
        records[0].full_name == "张伟"
        and records[0].sex == "male"
        and records[0].birth_date == dt.date(1980, 3, 4)
    )
    assert records[0].mrn == "A1" and records[0].source == "县医院" and records[0].identifiers == ()
    assert records[1].birth_date is None  # an impossible date is unknown, not a failure
    assert records[1].sex == "female" and records[1].identifiers[0].value == "Y9"


@pytest.mark.parametrize(
    "bad",
    [
        {},
        {"record_id": "id", "colour": "x"},
        {"record_id": "id", "sex": {"column": "s", "values": {"M": "man"}}},
        {"record_id": ["a"]},
    ],
)
def test_bad_maps_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(YilianError):
        column_map_from_dict(bad)
