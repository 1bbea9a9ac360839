"""Where the demo's people and institutions are: the city, its districts and counties, and the
streets, townships, communities and villages inside them.

County-level divisions and their GB/T 2260 codes are real (``data/divisions.csv``); everything
below county level is generic and invented, because the shared data has no sub-county codes.
Village names match the village clinics of the registry, so a rural resident's clinic is in
their own village.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from yilian.demo import reference
from yilian.demo.elements import Json, coding
from yilian.demo.reference import Division
from yilian.kernel import naming


@dataclass(frozen=True, slots=True)
class Area:
    """A street (街道) with its communities, or a township (乡/镇) with its villages."""

    name: str
    places: tuple[str, ...]
    rural: bool


@dataclass(frozen=True, slots=True)
class District:
    division: Division
    areas: tuple[Area, ...]
    urban_share: float  # share of residents living in the urban areas
    population_weight: float


ROADS = ("人民路", "解放路", "建设路", "文化路", "新华路", "中山路", "和平路", "健康路", "学院路", "胜利路")
_COMMUNITIES = (
    "幸福社区",
    "阳光社区",
    "和谐社区",
    "光明社区",
    "春晖社区",
    "团结社区",
    "长乐社区",
    "安康社区",
)

# Villages with a clinic in the registry (安吉县溪口乡, 长兴县白沙镇) come first in their township.
ANJI_VILLAGES = ("青山村", "竹林村", "石桥村", "桃园村")
CHANGXING_VILLAGES = ("荷花村", "大树村", "新塘村", "白沙村")

_LAYOUT: dict[str, tuple[tuple[Area, ...], float, float]] = {
    "330502": (  # 吴兴区: the city centre
        (
            Area("东风街道", _COMMUNITIES[:4], False),
            Area("新华街道", _COMMUNITIES[4:], False),
            Area("城东镇", ("城东村", "杨家村"), True),
        ),
        0.85,
        0.32,
    ),
    "330503": (  # 南浔区
        (Area("和平街道", _COMMUNITIES[:3], False), Area("石港镇", ("石港村", "万兴村"), True)),
        0.6,
        0.2,
    ),
    "330521": (  # 德清县: no primary-care member yet, residents register at the city hospital
        (Area("城关街道", _COMMUNITIES[2:5], False), Area("新桥镇", ("东村", "西村"), True)),
        0.45,
        0.08,
    ),
    "330522": (  # 长兴县
        (Area("城关街道", _COMMUNITIES[5:], False), Area("白沙镇", CHANGXING_VILLAGES, True)),
        0.35,
        0.2,
    ),
    "330523": (  # 安吉县
        (Area("递铺街道", _COMMUNITIES[1:4], False), Area("溪口乡", ANJI_VILLAGES, True)),
        0.35,
        0.2,
    ),
}


@functools.cache
def province() -> Division:
    return next(d for d in reference.divisions() if d.kind == "province")


@functools.cache
def city() -> Division:
    return next(d for d in reference.divisions() if d.kind == "city")


@functools.cache
def districts() -> tuple[District, ...]:
    out = []
    for division in reference.divisions():
        if division.kind in ("district", "county"):
            areas, urban_share, weight = _LAYOUT[division.code]
            out.append(District(division, areas, urban_share, weight))
    return tuple(out)


def district(code: str) -> District:
    return next(d for d in districts() if d.division.code == code)


def address(district: District, area: Area | None, place: str | None, line: str, *, use: str) -> Json:
    """A FHIR Address in Chinese order (province → city → district → street/township → place)."""
    locality = (area.name if area else "") + (place or "")
    text = f"{province().name}{city().name}{district.division.name}{locality}{line}"
    return {
        "extension": [
            {
                "url": naming.EXT_ADDRESS_DIVISION,
                "valueCoding": coding(naming.ADMIN_DIVISION, district.division.code, district.division.name),
            }
        ],
        "use": use,
        "type": "physical",
        "text": text,
        "line": [part for part in (locality, line) if part],
        "city": city().name,
        "district": district.division.name,
        "state": province().name,
        "country": "CN",
    }
