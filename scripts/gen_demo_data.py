"""Derive the small reference tables the demo region ships, from the shared third-party data.

Reads ``../shared/data`` (Chinese names, administrative divisions, Chinese ICD-10, the 2021
NIP schedule) and writes ``src/yilian/demo/data/*.csv``: only the rows and columns the demo
generator needs, so the installed package never reads the originals. The tables that are
not a plain subset (surname readings, gender hints, the diagnosis shortlist and its SNOMED
codes, vaccine code mappings) are curated here, in code, where a reviewer can see them;
``src/yilian/demo/data/SOURCE.md`` says which is which.

Dev-time only: needs ``xlrd`` (the .xls files) and ``openpyxl`` (the .xlsx), which are not
runtime dependencies. The output is deterministic; re-running it must leave the tree clean.

Usage:  python scripts/gen_demo_data.py [--source DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from pathlib import Path

import openpyxl  # type: ignore[import-untyped]  # dev-time dependency
import xlrd  # type: ignore[import-untyped]  # dev-time dependency

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = Path(os.environ.get("YILIAN_SHARED_DATA") or ROOT.parent / "shared" / "data")
DEFAULT_OUT = ROOT / "src" / "yilian" / "demo" / "data"

# ---------------------------------------------------------------- administrative divisions

# 湖州市, Zhejiang: two urban districts and three rural counties, which gives the demo
# both community health centres and township/village clinics under one city.
CITY_CODE = "330500"
PROVINCE_CODE = "330000"
COUNTY_LEVEL = {"330502", "330503", "330521", "330522", "330523"}

# ---------------------------------------------------------------- names

N_SURNAMES = 300
N_GIVEN = 800

# Genuine compound surnames (复姓). The ORCID-derived list also has multi-character
# "surnames" that are Japanese (山口, 野村) or given names parsed as surnames (浩然).
COMPOUND_SURNAMES = {
    "欧阳", "上官", "皇甫", "司马", "诸葛", "司徒", "令狐", "宇文", "呼延", "乐正", "鲜于",
    "南荣", "赫连", "东方", "仲长", "慕容", "宗政", "濮阳", "夏侯", "段干", "闻人", "公玉",
}  # fmt: skip

# Single characters in the surname list that are given-name characters mis-parsed as
# surnames in the source (e.g. 小, 颖, 琪), or a variant spelling (候 for 侯).
NOT_SURNAMES = set("小洋旭颖星佳倩晶丽莹欣瑶迪睿琪爽聪月欢航莉坤静敏波丹可银青岩候阿虎鲜元瑜")

# Rarer surnames kept regardless of rank because their reading is a known trap (区 is Ōu).
ALWAYS_SURNAMES = {"区"}

# Surname readings that differ from the reading the given-name table records for the same
# character (单 is shàn as a surname, dān otherwise), or characters the given-name table lacks.
# Tone-numbered, as in the source; compounds are written per syllable.
SURNAME_READINGS = {
    "单": "shan4", "曾": "zeng1", "解": "xie4", "仇": "qiu2", "区": "ou1", "查": "zha1",
    "朴": "piao2", "盖": "ge3", "乐": "yue4", "覃": "qin2", "翟": "zhai2", "纪": "ji3",
    "任": "ren2", "华": "hua4", "燕": "yan1", "缪": "miao4", "种": "chong2", "秘": "bi4",
    "召": "shao4", "员": "yun4", "尉": "wei4", "万": "wan4", "于": "yu2", "向": "xiang4",
    "和": "he2", "柏": "bai3", "薄": "bo2", "宿": "su4", "都": "du1", "相": "xiang4",
    "应": "ying1", "车": "che1", "曲": "qu1", "沈": "shen3", "石": "shi2", "葛": "ge3",
    "那": "na1", "佘": "she2", "卜": "bu3", "阚": "kan4", "郇": "huan2", "莘": "xin1", "能": "nai4",
    "长孙": "zhang3 sun1", "乐正": "yue4 zheng4", "仲长": "zhong4 chang2", "令狐": "ling2 hu2",
    "诸葛": "zhu1 ge3", "尉迟": "yu4 chi2", "万俟": "mo4 qi2", "单于": "chan2 yu2",
    "上官": "shang4 guan1", "段干": "duan4 gan1", "闻人": "wen2 ren2", "鲜于": "xian1 yu2",
    "呼延": "hu1 yan2", "皇甫": "huang2 fu3",
}  # fmt: skip

# The ORCID given-name counts include family names filed as given names: a pure surname
# shows up there at roughly a third of its surname frequency (王, 董, 郑…), while a real
# given-name character is far more frequent as a given name (林, 文, 华). Characters whose
# surname frequency is at least this multiple of their given-name frequency are left out.
SURNAME_ARTEFACT_RATIO = 1.9

# Characters conventionally read as feminine or masculine in given names. Used only to
# bias sampling (a 伟 for a girl is possible, just rare). Everything else is unisex.
FEMININE = set(
    "丽婷娟芳燕霞敏静秀英玲梅琳娜萍红艳雪倩颖慧洁琴兰凤莉丹晶蕾璐瑶怡欣悦琪梦妍媛婉娇妮"
    "姗嫣薇菲莎蓉淑惠珍珠翠桂菊莲露月彤璇雯岚茜芸芬黛娴婕婧姝媚娥妹姣晴韵馨香巧爱瑾琼瑛"
    "萱蔓蓓蕊佩环碧霏璐莹冰清柔"
)
MASCULINE = set(
    "伟强军杰勇刚鹏磊涛斌波辉峰超龙建国平东海亮飞浩俊凯健彬坤栋彪虎豪雄武威鑫锋钢铁帅"
    "壮猛毅权山川志兵剑光宏洪生发财根福贵德顺成才旺雷松柏森林岩石冬庆广义良忠"
)

# ---------------------------------------------------------------- diagnoses

# (ICD-10 China extension code, use, SNOMED CT code, SNOMED CT display). The Chinese name
# and the 3-character category come from the national tables; "use" tells the generator
# where a diagnosis plausibly occurs. SNOMED codes only where the concept is the same.
DIAGNOSES: list[tuple[str, str, str, str]] = [
    ("I10.x00", "chronic", "59621000", "Essential hypertension"),
    ("I11.900", "chronic", "64715009", "Hypertensive heart disease"),
    ("E11.900", "chronic", "44054006", "Diabetes mellitus type 2"),
    ("E11.700", "chronic", "", ""),
    ("E78.500", "chronic", "55822004", "Hyperlipidemia"),
    ("I25.103", "chronic", "53741008", "Coronary arteriosclerosis"),
    ("I63.900", "chronic", "432504007", "Cerebral infarction"),
    ("I64.x00", "chronic", "230690007", "Cerebrovascular accident"),
    ("J44.900", "chronic", "13645005", "Chronic obstructive lung disease"),
    ("J45.900", "chronic", "195967001", "Asthma"),
    ("M17.900", "chronic", "239873007", "Osteoarthritis of knee"),
    ("M81.901", "chronic", "64859006", "Osteoporosis"),
    ("K29.500", "chronic", "8493009", "Chronic gastritis"),
    ("K21.900", "chronic", "235595009", "Gastroesophageal reflux disease"),
    ("E66.900", "chronic", "414916001", "Obesity"),
    ("E03.900", "chronic", "40930008", "Hypothyroidism"),
    ("F32.900", "chronic", "35489007", "Depressive disorder"),
    ("K80.200", "chronic", "", ""),
    ("H52.100", "chronic", "57190000", "Myopia"),
    ("J00.x00", "acute", "82272006", "Common cold"),
    ("J02.900", "acute", "363746003", "Acute pharyngitis"),
    ("J03.900", "acute", "17741008", "Acute tonsillitis"),
    ("J06.900", "acute", "54150009", "Upper respiratory infection"),
    ("J11.101", "acute", "6142004", "Influenza"),
    ("J18.900", "acute", "233604007", "Pneumonia"),
    ("J20.900", "acute", "10509002", "Acute bronchitis"),
    ("A09.901", "acute", "25374005", "Gastroenteritis"),
    ("K30.x00", "acute", "162031009", "Indigestion"),
    ("K59.000", "acute", "14760008", "Constipation"),
    ("K25.900", "acute", "397825006", "Gastric ulcer"),
    ("N39.000", "acute", "68566005", "Urinary tract infectious disease"),
    ("M54.502", "acute", "279039007", "Low back pain"),
    ("D50.900", "acute", "87522002", "Iron deficiency anemia"),
    ("G43.900", "acute", "37796009", "Migraine"),
    ("H10.900", "acute", "9826008", "Conjunctivitis"),
    ("J18.000", "child", "396285007", "Bronchopneumonia"),
    ("A09.903", "child", "", ""),
    ("L20.804", "child", "", ""),
    ("B01.900", "child", "38907003", "Varicella"),
    ("K02.900", "child", "80967001", "Dental caries"),
    ("R50.900", "child", "386661006", "Fever"),
]

# ---------------------------------------------------------------- vaccines

# NIP abbreviation -> WS 364 CV08.50.001 vaccine name code (one code per antigen group).
VACCINE_CODES = {
    "HepB": "01", "BCG": "02", "IPV": "03", "bOPV": "03", "DTaP": "04", "DT": "10", "MMR": "11",
    "JE-L": "06", "JE-I": "06", "MPSV-A": "07", "MPSV-AC": "07", "HepA-L": "15", "HepA-I": "15",
}  # fmt: skip
# Route as written in the schedule -> (CV06.00.102 code, HL7 v3 RouteOfAdministration code).
ROUTES = {
    "肌内注射": ("403", "IM"),
    "皮下注射": ("401", "SQ"),
    "皮内注射": ("402", "IDINJ"),
    "口服": ("1", "PO"),
}


def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _fmt_ppm(value: str) -> str:
    # Four significant decimals are plenty for sampling weights and keep the files small.
    return f"{float(value):.4f}"


def divisions(source: Path) -> str:
    book = xlrd.open_workbook(str(source / "cn-standards/admin-divisions/全国县级以上行政区划代码.xls"))
    sheet = book.sheet_by_index(0)
    names: dict[str, str] = {}
    for r in range(1, sheet.nrows):
        code, name = str(sheet.cell_value(r, 0)).strip(), str(sheet.cell_value(r, 1)).strip()
        names[code] = name
    rows = [[PROVINCE_CODE, names[PROVINCE_CODE], "province"], [CITY_CODE, names[CITY_CODE], "city"]]
    city = names[CITY_CODE]
    for code in sorted(COUNTY_LEVEL):
        # This list prefixes some counties with the city name (湖州市德清县); the 2009 list does not.
        name = names[code].removeprefix(city)
        kind = "district" if name.endswith("区") else "county"
        rows.append([code, name, kind])
    _check_against_2009_list(source, rows)
    return _csv_text(["code", "name", "kind"], rows)


def _check_against_2009_list(source: Path, rows: list[list[str]]) -> None:
    book = openpyxl.load_workbook(
        source / "cn-standards/admin-divisions/中国行政区划代码(截至2009年12月31日).xlsx", read_only=True
    )
    listed = {
        str(code): str(name).strip("\u3000 ")
        for code, name in book.worksheets[0].iter_rows(min_row=1, max_col=2, values_only=True)
        if code
    }
    for code, name, _ in rows:
        if listed.get(code) != name:
            sys.exit(f"division {code} {name} does not match the 2009 list ({listed.get(code)})")


def names(source: Path) -> tuple[str, str]:
    base = source / "chinese-names/sinonym"
    with (base / "givenname_orcid.csv").open(encoding="utf-8") as fh:
        given = list(csv.DictReader(fh))
    readings = {row["character"]: row["pinyin"] for row in given}
    with (base / "familyname_orcid.csv").open(encoding="utf-8") as fh:
        family = list(csv.DictReader(fh))

    surname_rows: list[list[str]] = []
    singles = 0
    for row in family:  # the source is sorted by frequency
        name = row["surname"]
        if len(name) > 1 and name not in COMPOUND_SURNAMES:
            continue
        if len(name) == 1 and name not in ALWAYS_SURNAMES and (name in NOT_SURNAMES or singles >= N_SURNAMES):
            continue
        if name in SURNAME_READINGS:
            reading = SURNAME_READINGS[name]
        else:
            missing = [c for c in name if c not in readings and c not in SURNAME_READINGS]
            if missing:
                sys.exit(f"no reading for surname {name}: add it to SURNAME_READINGS")
            reading = " ".join(SURNAME_READINGS.get(c) or readings[c] for c in name)
        singles += len(name) == 1
        surname_rows.append([name, reading, _fmt_ppm(row["ppm"])])

    surname_ppm = {row["surname"]: float(row["ppm"]) for row in family}
    given_rows: list[list[str]] = []
    for row in given:
        char = row["character"]
        if len(char) != 1 or surname_ppm.get(char, 0.0) >= SURNAME_ARTEFACT_RATIO * float(row["ppm"]):
            continue
        hint = "f" if char in FEMININE else "m" if char in MASCULINE else ""
        given_rows.append([char, row["pinyin"], _fmt_ppm(row["ppm"]), hint])
        if len(given_rows) == N_GIVEN:
            break
    return (
        _csv_text(["surname", "pinyin", "ppm"], surname_rows),
        _csv_text(["character", "pinyin", "ppm", "gender"], given_rows),
    )


def diagnoses(source: Path) -> str:
    base = source / "cn-standards/icd10-cn"
    ext = xlrd.open_workbook(str(base / "6位扩展代码表.xls"), encoding_override="cp936").sheet_by_index(0)
    extension = {
        str(ext.cell_value(r, 1)).strip(): str(ext.cell_value(r, 3)).strip() for r in range(2, ext.nrows)
    }
    cat = xlrd.open_workbook(
        str(base / "3位代码类目表（ICD-10）.xls"), encoding_override="cp936"
    ).sheet_by_index(0)
    category = {
        str(cat.cell_value(r, 0)).strip(): str(cat.cell_value(r, 1)).strip() for r in range(2, cat.nrows)
    }
    rows = []
    for code, use, snomed, snomed_display in DIAGNOSES:
        if code not in extension:
            sys.exit(f"{code} is not in the national ICD-10 extension table")
        rows.append([code, extension[code], code[:3], category[code[:3]], use, snomed, snomed_display])
    return _csv_text(["code", "name", "category", "category_name", "use", "snomed", "snomed_display"], rows)


def _vaccine_names(source: Path) -> dict[str, str]:
    """WS 364 CV08.50.001 (疫苗名称代码表): code -> name, from the value-domain workbook."""
    book = openpyxl.load_workbook(
        source / "cn-standards/ws363-364-data-elements/卫生信息数据元值域代码本地版.xlsx", read_only=True
    )
    rows = book["CV08.50.001"].iter_rows(min_row=2, max_col=2, values_only=True)
    return {str(code).strip(): str(name).strip() for code, name in rows if code is not None}


def vaccines(source: Path) -> str:
    cv_names = _vaccine_names(source)
    with (source / "immunization/china-nip-2021/china-nip-2021-schedule.csv").open(encoding="utf-8") as fh:
        schedule = list(csv.DictReader(fh))
    rows = []
    for row in schedule:
        abbr = row["abbreviation"]
        cv_route, v3_route = ROUTES[row["route_zh"]]
        rows.append(
            [
                abbr,
                row["vaccine_zh"],
                row["vaccine_en"],
                row["disease_zh"].split("(")[0],
                row["series"],
                row["dose_number"],
                row["recommended_age_months"],
                row["recommended_age_zh"],
                row["route_zh"],
                cv_route,
                v3_route,
                row["dose_amount"],
                VACCINE_CODES[abbr],
                cv_names[VACCINE_CODES[abbr]],
            ]
        )
    header = [
        "abbreviation", "vaccine_zh", "vaccine_en", "disease_zh", "series", "dose_number", "age_months",
        "age_zh", "route_zh", "route_cv", "route_v3", "dose_amount", "vaccine_cv", "vaccine_cv_name",
    ]  # fmt: skip
    return _csv_text(header, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    surnames, given = names(args.source)
    outputs = {
        "divisions.csv": divisions(args.source),
        "surnames.csv": surnames,
        "given_chars.csv": given,
        "diagnoses.csv": diagnoses(args.source),
        "nip_schedule.csv": vaccines(args.source),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in outputs.items():
        (args.out / name).write_text(text, encoding="utf-8", newline="\n")
        print(f"{name}: {len(text.encode())} bytes, {text.count(chr(10)) - 1} rows")


if __name__ == "__main__":
    main()
