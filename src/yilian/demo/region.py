"""Put the demo region together and cut it into transaction bundles."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from dataclasses import dataclass

from yilian.demo import coverage, duplicates, geography, immunizations, patients, visits
from yilian.demo.duplicates import KnownDuplicate
from yilian.demo.elements import Entry, Json, transaction
from yilian.demo.population import Person, build_population
from yilian.demo.registry import Registry, build_registry
from yilian.kernel import errors

# The demo is dated, not "now": the same seed must give the same bytes on any day.
DEMO_AS_OF = dt.date(2026, 12, 1)
RESIDENTS_PER_BUNDLE = 20


@dataclass(frozen=True, slots=True)
class ResidentGroup:
    """The entries of a household (a resident, or a mother and her children, with any duplicate
    registrations of them): kept in one bundle so their ``urn:uuid`` references resolve."""

    people: tuple[str, ...]
    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class DemoRegion:
    seed: int
    as_of: dt.date
    city: str  # GB/T 2260 code of the demo city
    city_name: str
    registry: Registry
    groups: tuple[ResidentGroup, ...]
    known_duplicates: tuple[KnownDuplicate, ...]
    # fullUrls of the Patient records of residents who hold a health card: once the region is
    # loaded, the card system issues theirs (``yilian.card``), so the numbers follow its rules.
    card_holders: frozenset[str] = frozenset()
    # Who pays (``coverage``): the medical security bureau, committed with the registry so that
    # the residents' Coverage can refer to it.
    payors: tuple[Entry, ...] = ()

    def bundles(self) -> list[Json]:
        """Transaction bundles to POST in order: the registry (and the payor) first, then ~20 residents each.

        Later bundles refer to registry resources by conditional reference
        (``Organization?identifier=…``), so the registry bundle must be committed first.
        """
        out = [transaction([*self.registry.entries, *self.payors])]
        batch: list[Entry] = []
        people = 0
        for group in self.groups:
            batch.extend(group.entries)
            people += len(group.people)
            if people >= RESIDENTS_PER_BUNDLE:
                out.append(transaction(batch))
                batch, people = [], 0
        if batch:
            out.append(transaction(batch))
        return out

    def entries(self) -> list[Entry]:
        return [*self.registry.entries, *self.payors, *(e for g in self.groups for e in g.entries)]

    def summary(self) -> dict[str, int]:
        """Number of resources per type, by type name."""
        counts = Counter(e.resource_type for e in self.entries())
        return dict(sorted(counts.items()))


def build_demo_region(seed: int = 2026, residents: int = 300, *, as_of: dt.date = DEMO_AS_OF) -> DemoRegion:
    """A deterministic demo region: the same ``seed``, ``residents`` and ``as_of`` give the same output."""
    if residents < 10:
        raise errors.invalid("the demo region needs at least 10 residents")
    registry = build_registry(seed, as_of)
    population = build_population(seed, residents, as_of, registry)
    dups = duplicates.build_duplicates(seed, population, registry, as_of)
    dups_of: dict[str, list[duplicates.DuplicateRecord]] = {}
    for d in dups:
        dups_of.setdefault(d.person.key, []).append(d)

    groups = []
    for household in population.households():
        entries: list[Entry] = []
        for person in household:
            entries.extend(_resident_entries(seed, registry, person, as_of))
            if person.mother:
                mother = population.by_key(person.mother)
                entries.append(patients.mother_entry(seed, person, mother))
            for dup in dups_of.get(person.key, ()):
                entries.append(dup.entry)
                rng = random.Random(f"{seed}:visits:{dup.key}")
                hospital = registry.institution(dup.institution)
                planned = visits.plan_hospital_visit(rng, registry, person, hospital, as_of, dup.key)
                entries.extend(visits.render(seed, person, planned, dup.entry.full_url, as_of))
        groups.append(ResidentGroup(tuple(p.key for p in household), tuple(entries)))

    city = geography.city()
    holders = frozenset(patients.patient_url(seed, p.key) for p in population.people if p.health_card)
    return DemoRegion(
        seed,
        as_of,
        city.code,
        city.name,
        registry,
        tuple(groups),
        tuple(d.known for d in dups),
        holders,
        tuple(coverage.payor_entries(seed)),
    )


def _resident_entries(seed: int, registry: Registry, person: Person, as_of: dt.date) -> list[Entry]:
    url = patients.patient_url(seed, person.key)
    out = [patients.patient_entry(seed, person, registry.institution(person.home))]
    out.extend(coverage.coverage_entries(seed, person, url, as_of))
    rng = random.Random(f"{seed}:visits:{person.key}")
    out.extend(
        visits.render(seed, person, visits.plan_visits(rng, registry, person, as_of, person.key), url, as_of)
    )
    if person.age(as_of) <= 6:
        rng = random.Random(f"{seed}:immunizations:{person.key}")
        out.extend(immunizations.render(seed, rng, registry, person, url, as_of))
    return out
