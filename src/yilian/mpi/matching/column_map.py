"""Reading legacy CSV files into :class:`PersonRecord` through a YAML column map.

Every legacy system names its columns differently; the map says which column is which::

    csv: {delimiter: ",", encoding: utf-8, skip_initial_space: true}
    record_id: rec_id
    source: {value: legacy-his}          # a constant, or {column: hospital}
    family_name: surname
    given_name: given_name
    full_name: null
    birth_date: {column: date_of_birth, format: "%Y%m%d"}
    sex: {column: gender, values: {M: male, F: female, 1: male, 2: female}}
    prc_id: id_number
    phone: mobile
    address_lines: [street_number, address_1, address_2]
    city: suburb
    district: null
    postcode: postcode
    mrn: null
    identifiers: [{system: "https://…/sid/insurance", column: insurance_no}]

A value is a column name, ``{column: …}`` or ``{value: …}`` (a constant). ``maps/febrl.yaml``
is the documented example for the FEBRL benchmark files.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from yilian.kernel.errors import Category, YilianError
from yilian.mpi.matching.dates import parse_date
from yilian.mpi.matching.record import Identifier, PersonRecord, Sex

_KNOWN_KEYS = frozenset(
    {
        "csv",
        "record_id",
        "source",
        "family_name",
        "given_name",
        "full_name",
        "birth_date",
        "sex",
        "prc_id",
        "phone",
        "address_lines",
        "city",
        "district",
        "postcode",
        "mrn",
        "identifiers",
    }
)
_DEFAULT_SEX_VALUES: Mapping[str, Sex] = {
    "m": "male",
    "male": "male",
    "男": "male",
    "1": "male",
    "f": "female",
    "female": "female",
    "女": "female",
    "2": "female",
}


@dataclass(frozen=True, slots=True)
class Column:
    """One source of a value: a CSV column, or a constant."""

    column: str | None = None
    value: str | None = None

    def get(self, row: Mapping[str, str]) -> str:
        if self.column is not None:
            return (row.get(self.column) or "").strip()
        return self.value or ""


def _column(spec: Any, key: str) -> Column | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        return Column(column=spec)
    if isinstance(spec, Mapping) and ("column" in spec or "value" in spec):
        return Column(
            column=spec.get("column"), value=None if spec.get("value") is None else str(spec["value"])
        )
    raise YilianError(
        Category.INVALID, f"column map: {key} must be a column name, {{column: …}} or {{value: …}}"
    )


@dataclass(frozen=True)
class ColumnMap:
    record_id: Column
    source: Column | None = None
    family_name: Column | None = None
    given_name: Column | None = None
    full_name: Column | None = None
    birth_date: Column | None = None
    birth_date_format: str = "%Y-%m-%d"
    sex: Column | None = None
    sex_values: Mapping[str, Sex] = field(default_factory=lambda: dict(_DEFAULT_SEX_VALUES))
    prc_id: Column | None = None
    phone: Column | None = None
    address_lines: tuple[Column, ...] = ()
    city: Column | None = None
    district: Column | None = None
    postcode: Column | None = None
    mrn: Column | None = None
    identifiers: tuple[tuple[str, Column], ...] = ()
    delimiter: str = ","
    encoding: str = "utf-8"
    skip_initial_space: bool = False

    def record(self, row: Mapping[str, str]) -> PersonRecord:
        def opt(col: Column | None) -> str | None:
            return (col.get(row) or None) if col is not None else None

        record_id = self.record_id.get(row)
        if not record_id:
            raise YilianError(Category.INVALID, "column map: a row has no record id")
        birth_text = opt(self.birth_date)
        sex_text = (opt(self.sex) or "").lower()
        return PersonRecord(
            record_id=record_id,
            source=opt(self.source),
            family_name=opt(self.family_name),
            given_name=opt(self.given_name),
            full_name=opt(self.full_name),
            birth_date=parse_date(birth_text, self.birth_date_format) if birth_text else None,
            sex=self.sex_values.get(sex_text) if sex_text else None,
            prc_id=opt(self.prc_id),
            phone=opt(self.phone),
            address_lines=tuple(v for v in (c.get(row) for c in self.address_lines) if v),
            city=opt(self.city),
            district=opt(self.district),
            postcode=opt(self.postcode),
            mrn=opt(self.mrn),
            identifiers=tuple(Identifier(system, v) for system, c in self.identifiers if (v := c.get(row))),
        )

    def records(self, rows: Iterable[Mapping[str, str]]) -> Iterator[PersonRecord]:
        for row in rows:
            yield self.record(row)

    def read_csv(self, path: Path) -> list[PersonRecord]:
        with path.open(encoding=self.encoding, newline="") as fh:
            reader = csv.DictReader(fh, delimiter=self.delimiter, skipinitialspace=self.skip_initial_space)
            if reader.fieldnames is not None:
                reader.fieldnames = [name.strip() for name in reader.fieldnames]
            return list(self.records(reader))


def column_map_from_dict(data: Mapping[str, Any]) -> ColumnMap:
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        raise YilianError(Category.INVALID, f"column map: unknown keys {sorted(unknown)}")
    record_id = _column(data.get("record_id"), "record_id")
    if record_id is None:
        raise YilianError(Category.INVALID, "column map: record_id is required")
    birth = data.get("birth_date")
    birth_format = "%Y-%m-%d"
    if isinstance(birth, Mapping) and "format" in birth:
        birth_format = str(birth["format"])
    sex = data.get("sex")
    sex_values = dict(_DEFAULT_SEX_VALUES)
    if isinstance(sex, Mapping) and "values" in sex:
        for raw, target in sex["values"].items():
            if target not in ("male", "female"):
                raise YilianError(
                    Category.INVALID, f"column map: sex value {raw!r} must map to male or female"
                )
            sex_values[str(raw).lower()] = target
    identifiers = []
    for spec in data.get("identifiers") or ():
        if not isinstance(spec, Mapping) or "system" not in spec:
            raise YilianError(Category.INVALID, "column map: each identifier needs a system and a column")
        col = _column({k: v for k, v in spec.items() if k != "system"}, "identifiers")
        if col is not None:
            identifiers.append((str(spec["system"]), col))
    options = data.get("csv") or {}
    lines = data.get("address_lines") or ()
    if isinstance(lines, str):
        lines = [lines]
    return ColumnMap(
        record_id=record_id,
        source=_column(data.get("source"), "source"),
        family_name=_column(data.get("family_name"), "family_name"),
        given_name=_column(data.get("given_name"), "given_name"),
        full_name=_column(data.get("full_name"), "full_name"),
        birth_date=_column(
            {k: v for k, v in birth.items() if k != "format"} if isinstance(birth, Mapping) else birth,
            "birth_date",
        ),
        birth_date_format=birth_format,
        sex=_column(
            {k: v for k, v in sex.items() if k != "values"} if isinstance(sex, Mapping) else sex, "sex"
        ),
        sex_values=sex_values,
        prc_id=_column(data.get("prc_id"), "prc_id"),
        phone=_column(data.get("phone"), "phone"),
        address_lines=tuple(c for c in (_column(x, "address_lines") for x in lines) if c is not None),
        city=_column(data.get("city"), "city"),
        district=_column(data.get("district"), "district"),
        postcode=_column(data.get("postcode"), "postcode"),
        mrn=_column(data.get("mrn"), "mrn"),
        identifiers=tuple(identifiers),
        delimiter=str(options.get("delimiter", ",")),
        encoding=str(options.get("encoding", "utf-8")),
        skip_initial_space=bool(options.get("skip_initial_space", False)),
    )


def load_column_map(path: Path) -> ColumnMap:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise YilianError(Category.INVALID, f"column map {path.name}: not valid YAML ({exc})") from None
    if not isinstance(data, Mapping):
        raise YilianError(Category.INVALID, f"column map {path.name}: expected a mapping at the top level")
    return column_map_from_dict(data)


def shipped_map(name: str) -> Path:
    """Path of a column map shipped with the package (``febrl``)."""
    return Path(__file__).with_name("maps") / f"{name}.yaml"
