"""A synthetic Chinese population for evaluating the patient matcher, with labelled duplicates.

Persons are drawn from real frequency tables (surnames and given-name characters with their
readings, the demo region's GB/T 2260 districts), get valid PRC ID numbers, phones and
addresses, and are registered at one institution. Some are then registered again elsewhere
with exactly one kind of error or variation (``KINDS``), the way it happens at a front desk.
Households add the hard negatives: twins and parent/child pairs who share a surname, an
address and a phone but are different people — these must never be merged.

Everything comes from one seeded ``random.Random``, so a seed always gives the same records.
The look-alike slips use a table of their own (partly overlapping the matcher's), so the
evaluation also shows what happens to slips the matcher does not know.
"""

from __future__ import annotations

import csv
import datetime as dt
import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

from yilian.kernel import prc_id
from yilian.mpi.matching import reference
from yilian.mpi.matching.record import PersonRecord, Sex

DEMO_DATA = Path(__file__).resolve().parents[2] / "src" / "yilian" / "demo" / "data"

KINDS = (
    "copy",  # registered again elsewhere, same data
    "romanisation",  # Hong Kong / Taiwan style spelling (Cheung, Hsieh + Wade–Giles given name)
    "pinyin-only",  # name in pinyin only, various cases, tones, spacing
    "given-first",  # pinyin name in Western order
    "homophone",  # one given-name character replaced by a same-sounding one (input-method slip)
    "lookalike",  # one character replaced by a similar-looking one
    "id-missing",
    "id-typo",  # one digit wrong or two neighbours swapped
    "id-legacy-15",  # the old 15-digit number
    "date-swap",  # day and month swapped
    "date-digit",  # one digit of the birth date wrong
    "moved",  # new address and postcode
    "new-phone",
)
HOUSEHOLD_KINDS = ("twin", "parent-child")

_HOSPITALS = ("H330502A", "H330502B", "H330503A", "H330521A", "H330522A", "H330523A", "C330502X", "C330522Y")
_ROADS = (
    "人民路",
    "解放路",
    "建设路",
    "文化路",
    "新华路",
    "中山路",
    "和平路",
    "健康路",
    "学院路",
    "胜利路",
    "青年路",
    "环城路",
)
# Look-alike pairs for the generator; about half are absent from the matcher's own table.
_LOOKALIKES = (
    ("王", "玉"),
    ("未", "末"),
    ("己", "已"),
    ("日", "曰"),
    ("大", "太"),
    ("天", "夭"),
    ("凤", "风"),
    ("秀", "季"),
    ("清", "倩"),
    ("明", "朋"),
    ("晶", "品"),
    ("玲", "伶"),
    ("婷", "停"),
    ("芳", "方"),
    ("敏", "繁"),
    ("俊", "浚"),
    ("杰", "木"),
    ("华", "毕"),
)


@dataclass(frozen=True, slots=True)
class LabelledRecord:
    record: PersonRecord
    person: int  # the true person: records with the same number are one person
    kind: str  # "original", one of KINDS (a duplicate), or one of HOUSEHOLD_KINDS (a relative's record)
    related_person: int | None = None  # for a relative: the person they live with


@dataclass
class Population:
    records: list[LabelledRecord] = field(default_factory=list)

    def person_records(self) -> list[PersonRecord]:
        return [r.record for r in self.records]

    def truth(self) -> dict[str, int]:
        return {r.record.record_id: r.person for r in self.records}

    def kind_of(self) -> dict[str, str]:
        return {r.record.record_id: r.kind for r in self.records}


@dataclass(frozen=True, slots=True)
class _Person:
    number: int
    family: str
    given: str
    family_py: tuple[str, ...]  # tone-numbered syllables
    given_py: tuple[str, ...]
    sex: Sex
    birth: dt.date
    division: str
    district: str
    prc: str
    phone: str | None
    address: str
    postcode: str


@cache
def _table(name: str) -> tuple[tuple[tuple[str, ...], ...], tuple[float, ...]]:
    with (DEMO_DATA / name).open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if name == "surnames.csv":
        return tuple((r["surname"], r["pinyin"]) for r in rows), tuple(float(r["ppm"]) for r in rows)
    return tuple((r["character"], r["pinyin"], r["gender"]) for r in rows), tuple(
        float(r["ppm"]) for r in rows
    )


@cache
def _districts() -> tuple[tuple[str, str], ...]:
    with (DEMO_DATA / "divisions.csv").open(encoding="utf-8") as fh:
        return tuple(
            (r["code"], r["name"]) for r in csv.DictReader(fh) if r["kind"] in ("district", "county")
        )


@cache
def _homophones() -> dict[str, tuple[str, ...]]:
    """Toneless reading → given-name characters read that way."""
    chars, _ = _table("given_chars.csv")
    out: dict[str, list[str]] = {}
    for ch, py, _g in chars:
        out.setdefault(py.rstrip("012345"), []).append(ch)
    return {k: tuple(v) for k, v in out.items() if len(v) > 1}


def _plain(py: str) -> str:
    return py.rstrip("012345")


class _Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.next_person = 0
        self.next_record = 0
        self.used_ids: set[str] = set()
        self.used_phones: set[str] = set()

    # ---------------------------------------------------------------- people

    def _given(self, sex: Sex, *, first: str | None = None) -> tuple[str, tuple[str, ...]]:
        chars, weights = _table("given_chars.csv")
        n = 1 if self.rng.random() < 0.3 and first is None else 2
        picked: list[tuple[str, str]] = []
        if first is not None:
            picked.append(next((c, p) for c, p, _g in chars if c == first))
        while len(picked) < n:
            c, p, g = self.rng.choices(chars, weights)[0]
            if g and g != ("m" if sex == "male" else "f") and self.rng.random() < 0.9:
                continue
            if all(c != x for x, _ in picked):
                picked.append((c, p))
        return "".join(c for c, _ in picked), tuple(p for _, p in picked)

    def _phone(self) -> str:
        while True:
            phone = f"1{self.rng.choice('3456789')}{self.rng.randrange(10**9):09d}"
            if phone not in self.used_phones:
                self.used_phones.add(phone)
                return phone

    def _prc(self, division: str, birth: dt.date, sex: Sex) -> str:
        while True:
            seq = self.rng.randrange(0, 500) * 2 + (1 if sex == "male" else 0)
            number = prc_id.generate(division, birth, sex, seq)
            if number not in self.used_ids:
                self.used_ids.add(number)
                return number

    def _home(self) -> tuple[str, str, str, str]:
        division, district = self.rng.choice(_districts())
        road = self.rng.choice(_ROADS)
        address = f"{district}{road}{self.rng.randint(1, 399)}号{self.rng.randint(1, 30)}幢{self.rng.randint(101, 2604)}室"
        postcode = f"313{int(division[-2:]) % 10}{self.rng.randint(0, 9)}0"
        return division, district, address, postcode

    def person(self) -> _Person:
        surnames, weights = _table("surnames.csv")
        family, family_py = self.rng.choices(surnames, weights)[0]
        sex: Sex = self.rng.choice(("male", "female"))
        given, given_py = self._given(sex)
        birth = dt.date(1935, 1, 1) + dt.timedelta(days=self.rng.randrange(0, 365 * 88))
        division, district, address, postcode = self._home()
        self.next_person += 1
        return _Person(
            self.next_person,
            family,
            given,
            tuple(family_py.split()),
            given_py,
            sex,
            birth,
            division,
            district,
            self._prc(division, birth, sex),
            self._phone() if self.rng.random() < 0.85 else None,
            address,
            postcode,
        )

    def relative(self, of: _Person, kind: str) -> _Person:
        sex: Sex = self.rng.choice(("male", "female"))
        if kind == "twin":
            birth = of.birth
            # Twins are often named as a pair: the same first character (明华 / 明军).
            first = of.given[0] if len(of.given) == 2 and self.rng.random() < 0.6 else None
        else:
            birth = of.birth + dt.timedelta(days=self.rng.randrange(365 * 22, 365 * 36))
            first = of.given[0] if len(of.given) == 2 and self.rng.random() < 0.5 else None
        while True:
            given, given_py = self._given(sex, first=first)
            if given != of.given:
                break
        self.next_person += 1
        return replace(
            of,
            number=self.next_person,
            given=given,
            given_py=given_py,
            sex=sex,
            birth=birth,
            prc=self._prc(of.division, birth, sex),
        )

    # ---------------------------------------------------------------- records

    def record(self, p: _Person, kind: str, *, full_background: bool = False) -> PersonRecord:
        self.next_record += 1
        source = self.rng.choice(_HOSPITALS)
        keep_id = full_background or self.rng.random() < 0.7
        return PersonRecord(
            record_id=f"r{self.next_record:07d}",
            source=source,
            full_name=p.family + p.given,
            birth_date=p.birth,
            sex=p.sex,
            prc_id=p.prc if keep_id else None,
            phone=p.phone if self.rng.random() < 0.85 else None,
            address_lines=(p.address,) if self.rng.random() < 0.9 else (),
            city="湖州市",
            postcode=p.postcode,
            mrn=f"{self.rng.randrange(10**8):08d}",
        )

    def corrupt(self, p: _Person, kind: str) -> PersonRecord | None:
        r = self.record(p, kind)
        rng = self.rng
        if kind == "copy":
            return r
        if kind == "romanisation":
            spellings = [
                s
                for s, rom in reference.romanisations().items()
                if rom.certain and rom.pinyin == "".join(map(_plain, p.family_py)) and s != rom.pinyin
            ]
            if not spellings:
                return None
            given = "-".join(_wade_giles(_plain(s)) for s in p.given_py)
            name = f"{rng.choice(sorted(spellings)).capitalize()} {given[:1].upper()}{given[1:]}"
            return replace(r, full_name=name.upper() if rng.random() < 0.4 else name)
        if kind == "pinyin-only":
            return replace(r, full_name=_pinyin_name(p, rng))
        if kind == "given-first":
            family = "".join(map(_plain, p.family_py)).capitalize()
            given = "".join(map(_plain, p.given_py)).capitalize()
            return replace(r, full_name=f"{given} {family}")
        if kind == "homophone":
            options = [
                (i, c)
                for i, py in enumerate(p.given_py)
                for c in _homophones().get(_plain(py), ())
                if c != p.given[i]
            ]
            if not options:
                return None
            i, c = rng.choice(options)
            return replace(r, full_name=p.family + p.given[:i] + c + p.given[i + 1 :])
        if kind == "lookalike":
            name = p.family + p.given
            options = [
                (i, b)
                for i, ch in enumerate(name)
                for a, b in (*_LOOKALIKES, *((y, x) for x, y in _LOOKALIKES))
                if a == ch
            ]
            if not options:
                return None
            i, c = rng.choice(options)
            return replace(r, full_name=name[:i] + c + name[i + 1 :])
        if kind == "id-missing":
            return replace(r, prc_id=None)
        if kind == "id-typo":
            return replace(r, prc_id=_digit_slip(p.prc, rng))
        if kind == "id-legacy-15":
            if p.birth.year >= 2000:
                return None
            return replace(r, prc_id=p.prc[:6] + p.prc[8:17])
        if kind == "date-swap":
            if p.birth.day > 12 or p.birth.day == p.birth.month:
                return None
            return replace(r, birth_date=p.birth.replace(month=p.birth.day, day=p.birth.month))
        if kind == "date-digit":
            for _ in range(20):
                text = _digit_slip(p.birth.strftime("%Y%m%d"), rng, transpose=False)
                try:
                    wrong = dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
                except ValueError:
                    continue
                if wrong != p.birth and 1900 < wrong.year <= 2024:
                    return replace(r, birth_date=wrong)
            return None
        if kind == "moved":
            _division, _district, address, postcode = self._home()
            return replace(r, address_lines=(address,), postcode=postcode)
        if kind == "new-phone":
            return replace(r, phone=self._phone())
        raise ValueError(kind)


_WG_INITIALS = (
    ("zh", "ch"),
    ("ch", "ch'"),
    ("sh", "sh"),
    ("j", "ch"),
    ("q", "ch'"),
    ("x", "hs"),
    ("z", "ts"),
    ("c", "ts'"),
    ("r", "j"),
    ("b", "p"),
    ("p", "p'"),
    ("d", "t"),
    ("t", "t'"),
    ("g", "k"),
    ("k", "k'"),
)


def _wade_giles(syllable: str) -> str:
    """A pinyin syllable in (simplified) Wade–Giles; apostrophes are often dropped in practice."""
    initial, final = "", syllable
    for py, wg in _WG_INITIALS:
        if syllable.startswith(py):
            initial, final = wg, syllable[len(py) :]
            break
    if initial in ("ch", "ch'", "sh", "j") and final == "i" and syllable[0] in "zcsr":
        final = "ih"
    elif initial in ("ts", "ts'") and final == "i":
        final = "u"
    final = final.replace("ong", "ung").replace("ian", "ien").replace("ie", "ieh").replace("you", "yu")
    out = initial + final
    return out.replace("'", "") if random.Random(syllable).random() < 0.5 else out


_TONE_MARKS = {"a": "āáǎà", "e": "ēéěè", "i": "īíǐì", "o": "ōóǒò", "u": "ūúǔù", "v": "ǖǘǚǜ"}


def _tone_marked(py: str) -> str:
    tone = int(py[-1]) if py[-1].isdigit() else 5
    text = py.rstrip("012345")
    if tone == 5:
        return text.replace("v", "ü")
    for vowel in ("a", "e", "ou"):
        if vowel in text:
            i = text.index(vowel)
            break
    else:
        i = max(text.rfind(v) for v in "iouv")
    return (text[:i] + _TONE_MARKS[text[i]][tone - 1] + text[i + 1 :]).replace("v", "ü")


def _pinyin_name(p: _Person, rng: random.Random) -> str:
    style = rng.choice(("title", "upper", "tones", "numbers", "spaced", "hyphen"))
    fam = "".join(map(_plain, p.family_py))
    giv = [_plain(s) for s in p.given_py]
    if style == "title":
        return f"{fam.capitalize()} {''.join(giv).capitalize()}"
    if style == "upper":
        return f"{fam.upper()} {''.join(giv).upper()}"
    if style == "tones":
        return " ".join(
            "".join(_tone_marked(s) for s in part).capitalize() for part in (p.family_py, p.given_py)
        )
    if style == "numbers":
        return f"{''.join(p.family_py)} {''.join(p.given_py)}"
    if style == "spaced":
        return " ".join([fam, *giv]).title()
    return f"{fam.capitalize()} {'-'.join(giv).capitalize()}"


def _digit_slip(text: str, rng: random.Random, *, transpose: bool = True) -> str:
    digits = list(text)
    if transpose and rng.random() < 0.4:
        for _ in range(20):
            i = rng.randrange(len(digits) - 2)
            if digits[i] != digits[i + 1]:
                digits[i], digits[i + 1] = digits[i + 1], digits[i]
                return "".join(digits)
    i = rng.randrange(len(digits) - 1)
    digits[i] = rng.choice([d for d in "0123456789" if d != digits[i]])
    return "".join(digits)


def generate(
    persons: int,
    *,
    seed: int = 20240601,
    duplicate_share: float = 0.4,
    household_share: float = 0.06,
    kinds: Sequence[str] = KINDS,
) -> Population:
    """``persons`` persons (plus their relatives), each registered once, a share of them again
    with one labelled kind of variation, a few twice."""
    g = _Generator(seed)
    population = Population()
    for _ in range(persons):
        p = g.person()
        population.records.append(
            LabelledRecord(g.record(p, "original", full_background=False), p.number, "original")
        )
        if g.rng.random() < household_share:
            kind = g.rng.choice(HOUSEHOLD_KINDS)
            rel = g.relative(p, kind)
            population.records.append(LabelledRecord(g.record(rel, kind), rel.number, kind, p.number))
        copies = 0
        if g.rng.random() < duplicate_share:
            copies = 2 if g.rng.random() < 0.15 else 1
        for _ in range(copies):
            for _attempt in range(5):
                kind = g.rng.choice(tuple(kinds))
                dup = g.corrupt(p, kind)
                if dup is not None:
                    population.records.append(LabelledRecord(dup, p.number, kind))
                    break
    return population


@dataclass(frozen=True, slots=True)
class KindStats:
    kind: str
    records: int
    found: int  # duplicates clustered with their person's other records (recall numerator)
    linked_pairs: int  # predicted same-person pairs involving a record of this kind
    correct_pairs: int

    @property
    def recall(self) -> float:
        return self.found / self.records if self.records else 1.0

    @property
    def precision(self) -> float:
        return self.correct_pairs / self.linked_pairs if self.linked_pairs else 1.0


def pair_scores(truth: dict[str, int], clusters: dict[str, str]) -> tuple[float, float, float]:
    """Pairwise precision, recall and F1 of a clustering against the true persons."""

    def pairs(groups: dict[object, list[str]]) -> set[tuple[str, str]]:
        out: set[tuple[str, str]] = set()
        for members in groups.values():
            members = sorted(members)
            out.update((a, b) for i, a in enumerate(members) for b in members[i + 1 :])
        return out

    true_groups: dict[object, list[str]] = {}
    for rid, person in truth.items():
        true_groups.setdefault(person, []).append(rid)
    pred_groups: dict[object, list[str]] = {}
    for rid, cluster in clusters.items():
        pred_groups.setdefault(cluster, []).append(rid)
    t, p = pairs(true_groups), pairs(pred_groups)
    tp = len(t & p)
    precision = tp / len(p) if p else 1.0
    recall = tp / len(t) if t else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def per_kind(population: Population, clusters: dict[str, str]) -> list[KindStats]:
    """Recall and precision per kind of duplicate (and false merges of relatives)."""
    truth = population.truth()
    members: dict[str, list[str]] = {}
    for rid, cluster in clusters.items():
        members.setdefault(cluster, []).append(rid)
    out = []
    for kind in (*KINDS, *HOUSEHOLD_KINDS):
        rows = [r for r in population.records if r.kind == kind]
        if not rows:
            continue
        found = linked = correct = 0
        for r in rows:
            rid = r.record.record_id
            others = [o for o in members.get(clusters[rid], []) if o != rid]
            linked += len(others)
            correct += sum(1 for o in others if truth[o] == r.person)
            if kind in KINDS and any(truth[o] == r.person for o in others):
                found += 1
        out.append(KindStats(kind, len(rows), found, linked, correct))
    return out


def format_table(stats: Sequence[KindStats]) -> str:
    lines = [f"{'kind':<14} {'records':>7} {'recall':>7} {'precision':>9} {'linked':>7}"]
    for s in stats:
        recall = f"{s.recall:.3f}" if s.kind in KINDS else "-"
        lines.append(f"{s.kind:<14} {s.records:>7} {recall:>7} {s.precision:>9.3f} {s.linked_pairs:>7}")
    return "\n".join(lines)
