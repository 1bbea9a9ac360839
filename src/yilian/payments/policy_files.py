"""Where the reimbursement policies come from, and which of them run out.

Policies are data: one YAML file per scheme, pooling region, year and version. The platform
ships the region's current ones (``payments/policies``); a deployment adds its own — next
year's, a mid-year revision, another pooling region's — in the directory named by
``YILIAN_POLICY_DIR``, read at start, with no code change and no new release:

    YILIAN_POLICY_DIR=/etc/yilian/policies   # ncms-330500-2027.yaml, …

Each year's policy ends (``valid_to``). A resident still enrolled afterwards must not be charged
as if uninsured because next year's file was not loaded in time, so a charge in a region and
scheme the platform settles, on a day none of its policies covers, is refused
(``no-policy-in-force``, see :mod:`service`), and :func:`ending` tells the operator weeks
ahead (``yilian payments policies --check``, and a warning when the server starts).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from yilian.kernel.errors import Category, YilianError
from yilian.payments.adjudication import POLICY_DIR, Policy, parse_policy

ENV = "YILIAN_POLICY_DIR"
WARN_DAYS = 45  # how far ahead the end of a scheme's last policy is reported


def directories(env: Mapping[str, str] | None = None) -> list[Path]:
    """The shipped policies' directory, then the deployment's (``YILIAN_POLICY_DIR``), if set."""
    configured = (os.environ if env is None else env).get(ENV, "").strip()
    if not configured:
        return [POLICY_DIR]
    extra = Path(configured).expanduser().resolve()  # absolute: a source names its file wherever it is read
    if not extra.is_dir():
        raise YilianError(Category.INVALID, f"{ENV}={configured}: no such directory")
    if extra == POLICY_DIR.resolve():
        return [POLICY_DIR]
    return [POLICY_DIR, extra]


def _read(path: Path) -> Policy:
    try:
        with path.open(encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise YilianError(Category.INVALID, f"policy {path}: cannot be read ({first})") from None
    if not isinstance(doc, dict):
        raise YilianError(Category.INVALID, f"policy {path}: not a YAML mapping")
    return parse_policy(doc, source=str(path) if path.parent != POLICY_DIR else path.name)


def load(env: Mapping[str, str] | None = None) -> tuple[Policy, ...]:
    """Every policy, shipped and configured, checked: a file that cannot be read or parsed, or two
    files giving the same scheme, region, year and version, stop the start with both names."""
    seen: dict[tuple[str, str, int, int], Policy] = {}
    for directory in directories(env):
        for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
            policy = _read(path)
            key = (policy.scheme, policy.region, policy.year, policy.version)
            if key in seen:
                raise YilianError(
                    Category.INVALID,
                    f"policy {policy.key} is given twice: {seen[key].source} and {policy.source} "
                    "(a revision needs a higher version)",
                )
            seen[key] = policy
    return tuple(sorted(seen.values(), key=lambda p: (p.scheme, p.region, p.valid_from, p.version)))


def _days(n: int) -> str:
    return "1 day" if n == 1 else f"{n} days"


@dataclass(frozen=True)
class Ending:
    """A scheme and region whose last policy ends soon (or has ended) with none after it."""

    scheme: str
    region: str
    name: str
    last: str  # the policy's key
    valid_to: dt.date
    days_left: int  # negative: ended that many days ago

    @property
    def message(self) -> str:
        if self.days_left < 0:
            when = f"ended on {self.valid_to} ({_days(-self.days_left)} ago)"
        else:
            when = f"ends on {self.valid_to} (in {_days(self.days_left)})"
        return (
            f"{self.name} ({self.scheme}, region {self.region}): the last policy, {self.last}, {when}, and none "
            f"follows: from then on the charges of the residents it covers are refused (no-policy-in-force) "
            f"until the next year's file is added to {ENV}"
        )


def ending(policies: Sequence[Policy], *, today: dt.date, within_days: int = WARN_DAYS) -> list[Ending]:
    """Each scheme and region whose policies stop covering days within ``within_days`` of
    ``today``: the end of the last one, where no later policy begins the day after."""
    by_plan: dict[tuple[str, str], list[Policy]] = {}
    for p in policies:
        by_plan.setdefault((p.scheme, p.region), []).append(p)
    out = []
    horizon = today + dt.timedelta(days=within_days)
    for (scheme, region), group in sorted(by_plan.items()):
        # Walk forward from today through contiguous policies: where the cover stops first.
        covered_to = today - dt.timedelta(days=1)
        last: Policy | None = None
        moved = True
        while moved:
            moved = False
            for p in group:
                if p.valid_from <= covered_to + dt.timedelta(days=1) <= p.valid_to:
                    covered_to, last, moved = p.valid_to, p, True
        if last is None:  # nothing covers today: the newest policy that ended before it
            past = [p for p in group if p.valid_to < today]
            if not past:
                continue  # only future policies: the scheme has not started here yet
            last = max(past, key=lambda p: (p.valid_to, p.version))
            covered_to = last.valid_to
        if covered_to <= horizon:
            out.append(Ending(scheme, region, last.name, last.key, covered_to, (covered_to - today).days))
    return out


def summary(endings: Sequence[Ending]) -> list[str]:
    """One line per end date, for a server's start: which schemes stop, and where to look."""
    by_day: dict[dt.date, list[Ending]] = {}
    for e in endings:
        by_day.setdefault(e.valid_to, []).append(e)
    lines = []
    for day, group in sorted(by_day.items()):
        days_left = group[0].days_left
        when = (
            f"ended on {day} ({_days(-days_left)} ago)"
            if days_left < 0
            else f"end on {day} (in {_days(days_left)})"
        )
        plans = ", ".join(f"{e.scheme} {e.region}" for e in group)
        lines.append(
            f"the reimbursement policies of {plans} {when} with none after them: from then on the charges "
            f"of the residents they cover are refused (no-policy-in-force). Add next year's files to "
            f"{ENV}; `yilian payments policies` lists them"
        )
    return lines
