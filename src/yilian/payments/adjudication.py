"""Instant reimbursement (即时结报): a policy, the person's year-to-date usage and the items of one
charge → each share (insurance fund, medical aid, the patient) with the reasons.

Pure: no storage, no clock. Policies are data — one YAML file per scheme, region and year in
``policies/`` — read into :class:`Policy`. The order of the rules is the order a county's NCMS
office computes a claim by hand:

1. catalogue: items outside the scheme's catalogue (and non-medical ones: canteen, parking) are
   the patient's; the rest is the *eligible* amount;
2. deductible (起付线) by setting and institution level, annual or per visit, less what the
   person has already met this year / this visit — waived for a listed major disease when the
   policy says so;
3. ratio by institution level (township / county / city), or the major-disease ratio for a
   listed diagnosis, less the out-of-region reduction when the institution is outside the
   policy's pooling region; rounded down to the fen;
4. annual cap (封顶线): the fund pays at most what is left of it this year, across every
   institution in the region;
5. medical aid (医疗救助), for eligible residents, applies its own deductible, ratio and cap to
   what remains of the eligible amount after the fund;
6. the patient pays the rest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from yilian.kernel.errors import Category, YilianError
from yilian.kernel.money import apply_ratio, format_fen, parse_ratio
from yilian.payments.model import LEVELS, SETTINGS, Item, Shares, Step

POLICY_DIR = Path(__file__).resolve().parent / "policies"

LEVEL_NAMES = {"township": "乡镇级 township", "county": "县级 county", "city": "市级 city"}


@dataclass(frozen=True)
class SettingRule:
    """Deductible and ratios for one setting (outpatient or inpatient)."""

    deductible_scope: str  # annual | per-visit
    deductible_fen: Mapping[str, int]  # by level
    ratio_bp: Mapping[str, int]  # by level


@dataclass(frozen=True)
class Policy:
    scheme: str  # insurance scheme code (ncms, urban-employee, urban-resident, medical-aid)
    kind: str  # insurance | aid
    name: str
    region: str  # the pooling region (统筹区), a GB/T 2260 code
    year: int
    version: int
    valid_from: dt.date
    valid_to: dt.date
    fund_account: str
    annual_cap_fen: int
    covered_categories: frozenset[str]
    excluded_codes: frozenset[str]
    settings: Mapping[str, SettingRule]
    major_disease_codes: tuple[str, ...] = ()
    major_disease_ratio_bp: int | None = None
    major_disease_waives_deductible: bool = False
    out_of_region_reduction_bp: int = 0
    insurance_type: str | None = None  # the CV02.01.204 code a Coverage may carry instead of the scheme
    source: str = ""

    @property
    def key(self) -> str:
        """Which text was applied (recorded with every charge)."""
        return f"{self.scheme}/{self.region}/{self.year}/v{self.version}"

    @property
    def usage_key(self) -> str:
        """What year-to-date usage counts against: a new version mid-year keeps the year's usage."""
        return f"{self.scheme}/{self.region}/{self.year}"

    def covers(self, item: Item) -> bool:
        return item.category in self.covered_categories and item.code not in self.excluded_codes

    def major_disease(self, diagnoses: Sequence[str]) -> str | None:
        for code in diagnoses:
            normal = code.strip().upper()
            for listed in self.major_disease_codes:
                if normal.startswith(listed.upper()):
                    return code
        return None


def _by_level(raw: Any, what: str, convert: Any) -> dict[str, int]:
    if not isinstance(raw, dict) or set(raw) != set(LEVELS):
        raise YilianError(Category.INVALID, f"{what} must give township, county and city")
    return {level: convert(raw[level]) for level in LEVELS}


def _fen(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise YilianError(Category.INVALID, f"amounts in policies are whole fen, got {value!r}")
    return value


def parse_policy(doc: Mapping[str, Any], *, source: str = "") -> Policy:
    """One policy document (the YAML's content). Refuses anything ambiguous: money is in fen, ratios
    in percent with at most two decimals, every level given."""
    try:
        settings = {
            name: SettingRule(
                deductible_scope=str(doc[name]["deductible_scope"]),
                deductible_fen=_by_level(doc[name]["deductible_fen"], f"{name}.deductible_fen", _fen),
                ratio_bp=_by_level(doc[name]["ratio"], f"{name}.ratio", parse_ratio),
            )
            for name in SETTINGS
        }
        for name, rule in settings.items():
            if rule.deductible_scope not in ("annual", "per-visit"):
                raise YilianError(Category.INVALID, f"{name}.deductible_scope must be annual or per-visit")
        major = doc.get("major_diseases") or {}
        out = doc.get("out_of_region") or {}
        policy = Policy(
            scheme=str(doc["scheme"]),
            kind=str(doc.get("kind", "insurance")),
            name=str(doc["name"]),
            region=str(doc["region"]),
            year=int(doc["year"]),
            version=int(doc["version"]),
            valid_from=dt.date.fromisoformat(str(doc["valid_from"])),
            valid_to=dt.date.fromisoformat(str(doc["valid_to"])),
            fund_account=str(doc["fund_account"]),
            annual_cap_fen=_fen(doc["annual_cap_fen"]),
            covered_categories=frozenset(str(c) for c in doc["covered_categories"]),
            excluded_codes=frozenset(str(c) for c in doc.get("excluded_codes") or ()),
            settings=settings,
            major_disease_codes=tuple(str(c) for c in major.get("codes") or ()),
            major_disease_ratio_bp=parse_ratio(major["ratio"]) if "ratio" in major else None,
            major_disease_waives_deductible=bool(major.get("waive_deductible", False)),
            out_of_region_reduction_bp=parse_ratio(out.get("ratio_reduction", 0)),
            insurance_type=str(doc["insurance_type"]) if "insurance_type" in doc else None,
            source=source,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise YilianError(Category.INVALID, f"policy {source or '?'} is malformed: {exc!r}") from None
    if policy.kind not in ("insurance", "aid"):
        raise YilianError(Category.INVALID, f"policy {source}: kind must be insurance or aid")
    if policy.valid_from > policy.valid_to:
        raise YilianError(Category.INVALID, f"policy {source}: valid_from is after valid_to")
    return policy


def load_policies(directory: Path = POLICY_DIR) -> list[Policy]:
    out = []
    for path in sorted(directory.glob("*.yaml")):
        with path.open(encoding="utf-8") as fh:
            out.append(parse_policy(yaml.safe_load(fh), source=path.name))
    return out


def policy_in_force(policies: Sequence[Policy], *, scheme: str, region: str, on: dt.date) -> Policy | None:
    """The newest version of the scheme's policy for the region that is in force on the date."""
    found = [
        p for p in policies if p.scheme == scheme and p.region == region and p.valid_from <= on <= p.valid_to
    ]
    return max(found, key=lambda p: p.version, default=None)


@dataclass(frozen=True)
class Claim:
    """What adjudication needs to know about one charge besides its items."""

    setting: str  # outpatient | inpatient
    level: str  # township | county | city
    institution_region: str  # the institution's GB/T 2260 county code
    visit: str  # what a per-visit deductible is counted against (the encounter, else the charge)
    diagnoses: tuple[str, ...] = ()


def deductible_bucket(policy: Policy, claim: Claim) -> str:
    rule = policy.settings[claim.setting]
    if rule.deductible_scope == "annual":
        return f"deductible:{claim.setting}"
    return f"deductible:{claim.setting}:{claim.visit}"


def usage_buckets(policy: Policy, claim: Claim) -> list[tuple[str, str]]:
    """The year-to-date counters adjudication reads (and the service locks): cap and deductible."""
    return [(policy.usage_key, "fund"), (policy.usage_key, deductible_bucket(policy, claim))]


def in_region(policy: Policy, institution_region: str) -> bool:
    """Pooling is city-wide (市级统筹) when the region code ends in 00, else county-wide."""
    prefix = policy.region[:4] if policy.region.endswith("00") else policy.region
    return institution_region.startswith(prefix)


def _layer(
    policy: Policy,
    claim: Claim,
    base: int,
    used: Mapping[tuple[str, str], int],
    steps: list[Step],
    usage: dict[tuple[str, str], int],
    label: str,
) -> tuple[int, int]:
    """One payer's layer on ``base`` fen: (what it pays, the deductible consumed)."""
    rule = policy.settings[claim.setting]
    prefix = "" if policy.kind == "insurance" else "aid-"
    major = policy.major_disease(claim.diagnoses)
    bucket = deductible_bucket(policy, claim)
    deductible = rule.deductible_fen[claim.level]
    if major is not None and policy.major_disease_waives_deductible:
        deductible = 0
        steps.append(
            Step(f"{prefix}deductible", 0, f"{label}: 起付线 deductible waived for major disease {major}")
        )
    met = used.get((policy.usage_key, bucket), 0)
    remaining = max(0, deductible - met)
    consumed = min(base, remaining)
    if deductible:
        scope = "this year" if rule.deductible_scope == "annual" else "this visit"
        steps.append(
            Step(
                f"{prefix}deductible",
                consumed,
                f"{label}: 起付线 deductible {format_fen(deductible)} ({claim.setting}, {LEVEL_NAMES[claim.level]}),"
                f" {format_fen(met)} met earlier {scope}; {format_fen(consumed)} applied to this charge",
            )
        )
    payable = base - consumed
    ratio = rule.ratio_bp[claim.level]
    why = f"{LEVEL_NAMES[claim.level]} {claim.setting} ratio"
    if major is not None and policy.major_disease_ratio_bp is not None:
        ratio = policy.major_disease_ratio_bp
        why = f"major-disease (大病) ratio for {major}"
    if not in_region(policy, claim.institution_region) and policy.out_of_region_reduction_bp:
        ratio = max(0, ratio - policy.out_of_region_reduction_bp)
        why += f", less {policy.out_of_region_reduction_bp / 100:g} points out of region (异地)"
    share = apply_ratio(payable, ratio)
    steps.append(
        Step(
            f"{prefix}ratio",
            share,
            f"{label}: {ratio / 100:g}% ({why}) of {format_fen(payable)} = {format_fen(share)}",
        )
    )
    cap_used = used.get((policy.usage_key, "fund"), 0)
    cap_left = max(0, policy.annual_cap_fen - cap_used)
    if share > cap_left:
        steps.append(
            Step(
                f"{prefix}cap",
                cap_left,
                f"{label}: 封顶线 annual cap {format_fen(policy.annual_cap_fen)}, {format_fen(cap_used)} paid earlier"
                f" this year; pays {format_fen(cap_left)} instead of {format_fen(share)}",
            )
        )
        share = cap_left
    if share:
        usage[(policy.usage_key, "fund")] = share
    if consumed:
        usage[(policy.usage_key, bucket)] = consumed
    return share, consumed


def adjudicate(
    items: Sequence[Item],
    claim: Claim,
    *,
    insurance: Policy | None,
    aid: Policy | None,
    used: Mapping[tuple[str, str], int],
    no_cover: str | None = None,
) -> Shares:
    """The shares of one charge. ``used`` maps (policy key, bucket) to the person's usage so far;
    ``no_cover`` says why no policy applies, when none does (the patient's own choice)."""
    if claim.setting not in SETTINGS or claim.level not in LEVELS:
        raise YilianError(Category.INVALID, f"setting must be one of {SETTINGS}, level one of {LEVELS}")
    total = sum(i.amount_fen for i in items)
    steps: list[Step] = []
    usage: dict[tuple[str, str], int] = {}
    if insurance is None and aid is None:
        why = no_cover or "no insurance coverage in force: the patient pays everything"
        steps.append(Step("self-pay", total, why))
        return Shares(total, 0, 0, total, steps=tuple(steps))
    # What the catalogue covers is the first payer's catalogue; aid pays only on covered items too.
    catalogue = insurance or aid
    assert catalogue is not None
    eligible = sum(i.amount_fen for i in items if catalogue.covers(i))
    outside = total - eligible
    if outside:
        names = ", ".join(sorted({i.name or i.code for i in items if not catalogue.covers(i)}))
        steps.append(
            Step(
                "catalogue", outside, f"outside the {catalogue.name} catalogue, paid by the patient: {names}"
            )
        )
    insurer = deductible = 0
    if insurance is not None:
        insurer, deductible = _layer(insurance, claim, eligible, used, steps, usage, insurance.name)
    else:
        steps.append(Step("ratio", 0, "no basic insurance in force"))
    aid_share = aid_deductible = 0
    remaining = eligible - insurer
    if aid is not None and remaining:
        aid_share, aid_deductible = _layer(aid, claim, remaining, used, steps, usage, aid.name)
    self_pay = total - insurer - aid_share
    steps.append(
        Step("self-pay", self_pay, f"the patient pays {format_fen(self_pay)} of {format_fen(total)}")
    )
    return Shares(
        total_fen=total,
        insurer_fen=insurer,
        aid_fen=aid_share,
        self_pay_fen=self_pay,
        insurer_policy=insurance.key if insurance else None,
        aid_policy=aid.key if aid else None,
        deductible_fen=deductible,
        aid_deductible_fen=aid_deductible,
        steps=tuple(steps),
        usage=usage,
    )
