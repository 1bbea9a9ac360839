"""Build the compact FHIR R4 definitions that Yilian ships, from the official ones.

Reads the official 4.0.1 StructureDefinitions, value sets, search parameters and
compartment definitions in ``../shared/data/fhir-r4-definitions`` and writes
``src/yilian/fhir/definitions/*.json.gz``: only what the server needs at run time
(the element model, required-binding code sets, search parameters, compartments),
so that the installed package never reads the 57 MB originals.

The output is deterministic: ``tests/unit/fhir/test_definitions.py`` regenerates it
and checks that the shipped files are up to date.

Usage:  python scripts/gen_definitions.py [--source DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = (
    Path(os.environ.get("YILIAN_SHARED_DATA") or ROOT.parent / "shared" / "data") / "fhir-r4-definitions"
)
DEFAULT_OUT = ROOT / "src" / "yilian" / "fhir" / "definitions"

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
FHIR_VERSION = "4.0.1"
SYSTEM_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}


def _load(path: Path) -> Any:
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


def _type_code(t: dict[str, Any]) -> str:
    code: str = t["code"]
    for ext in t.get("extension", []):
        if ext.get("url") == FHIR_TYPE_EXT:
            return str(ext["valueUrl"])
    return SYSTEM_TYPES.get(code, code)


def _cap(word: str) -> str:
    return word[:1].upper() + word[1:]


def _structures(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "StructureDefinition"]


def _with_differential(sd: dict[str, Any]) -> list[dict[str, Any]]:
    """The snapshot's elements, and any of the differential's that the snapshot lacks.

    The packaging we read from (see SOURCE.md) ships one resource, EvidenceVariable, with a
    later version's snapshot: its R4 elements (``characteristic.definition[x]``,
    ``usageContext``, ``participantEffective[x]``, ``timeFromStart``, ``groupMeasure``) are
    only in the differential, which defines the type. Each missing one is put back after the
    last snapshot element under the same parent, so the official examples that use them are
    valid; the snapshot's foreign elements stay flagged (``nonstandard``) below.
    """
    elements: list[dict[str, Any]] = list(sd["snapshot"]["element"])
    present = {el["path"] for el in elements}
    for el in sd.get("differential", {}).get("element", []):
        path = el["path"]
        if path in present:
            continue
        parent = path.rpartition(".")[0]
        at = max(
            (i for i, e in enumerate(elements) if e["path"] == parent or e["path"].startswith(parent + ".")),
            default=len(elements) - 1,
        )
        elements.insert(at + 1, el)
        present.add(path)
    return elements


def build_model(source: Path) -> dict[str, Any]:
    """The element model: every resource, data type and backbone element with its children."""
    sds = _structures(_load(source / "profiles-types.json")) + _structures(
        _load(source / "profiles-resources.json")
    )
    primitives: dict[str, Any] = {}
    types: dict[str, Any] = {}
    for sd in sds:
        if sd.get("derivation") == "constraint":
            # SimpleQuantity, MoneyQuantity: profiles on Quantity, same shape.
            continue
        name: str = sd["id"]
        kind: str = sd["kind"]
        base = sd.get("baseDefinition", "").rsplit("/", 1)[-1] or None
        if kind == "logical":
            continue
        elements = _with_differential(sd)
        if kind == "primitive-type":
            regex = None
            for el in elements:
                if el["path"] == f"{name}.value":
                    for t in el.get("type", []):
                        for ext in t.get("extension", []):
                            if ext.get("url") == REGEX_EXT:
                                regex = ext["valueString"]
            primitives[name] = {"base": base, "regex": regex}
            continue
        structs: dict[str, dict[str, Any]] = {
            name: {
                "kind": "resource" if kind == "resource" else "datatype",
                "base": base,
                "abstract": bool(sd.get("abstract")),
                "elements": {},
            }
        }
        # The packaging we read from (see SOURCE.md) adds a few things that are not
        # FHIR 4.0.1: R4B's SubscriptionStatus and server-specific Meta/ObservationDefinition
        # elements. They stay in the model, flagged, so a strict R4 validator can refuse them.
        foreign = sd.get("fhirVersion", FHIR_VERSION) != FHIR_VERSION
        own = {el["path"] for el in sd.get("differential", {}).get("element", [])}
        if foreign:
            structs[name]["nonstandard"] = True
        for el in elements[1:]:
            path: str = el["path"]
            parent, _, leaf = path.rpartition(".")
            if parent not in structs:
                # Children of a primitive's value or of an element we skipped.
                continue
            choice = leaf.endswith("[x]")
            leaf = leaf[:-3] if choice else leaf
            spec: dict[str, Any] = {
                "min": el.get("min", 0),
                "max": -1 if el.get("max") == "*" else int(el.get("max", "1")),
                # Position among its siblings: the files are written with sorted keys,
                # and the definition order is the canonical JSON property order.
                "order": len(structs[parent]["elements"]),
            }
            if el.get("isSummary"):
                spec["summary"] = True
            if path not in own and el.get("base", {}).get("path", "").split(".")[0] == name:
                # Added to the snapshot by the redistributor (see SOURCE.md): the
                # differential, which defines the type's own elements, does not have it.
                spec["nonstandard"] = True
            if el.get("isModifier"):
                spec["modifier"] = True
            if "contentReference" in el:
                ref_path = el["contentReference"].lstrip("#")
                spec["types"] = [ref_path]
            else:
                codes = [_type_code(t) for t in el.get("type", [])]
                if kind == "resource" and path == f"{name}.id":
                    # A resource's logical id is an ``id`` (the R4 spec's element tables say
                    # so); the snapshot gives its System.String the FHIR type ``string``, as
                    # for an element's id. FHIRPath then types ``Patient.id`` as id, as the
                    # official FHIRPath suite expects.
                    codes = ["id"]
                if codes in (["BackboneElement"], ["Element"]):
                    # An inline structure: its children follow with this path as prefix.
                    structs[path] = {
                        "kind": "backbone",
                        "base": codes[0],
                        "abstract": False,
                        "elements": {},
                    }
                    if foreign:
                        structs[path]["nonstandard"] = True
                    codes = [path]
                spec["types"] = codes
                targets: list[str] = []
                for t in el.get("type", []):
                    for prof in t.get("targetProfile", []):
                        targets.append(prof.rsplit("/", 1)[-1])
                if targets:
                    spec["targets"] = sorted(set(targets))
            if choice:
                spec["choice"] = True
            binding = el.get("binding")
            if binding and binding.get("strength") == "required" and binding.get("valueSet"):
                spec["binding"] = binding["valueSet"].split("|", 1)[0]
            structs[parent]["elements"][leaf] = spec
        for sname, struct in structs.items():
            # The element named after the type is the root, not a child.
            types[sname] = struct
    # Backbone structures reached through contentReference keep their own path name.
    return {"fhirVersion": "4.0.1", "primitives": primitives, "types": types}


def _code_systems(source: Path) -> dict[str, list[str]]:
    systems: dict[str, list[str]] = {}

    def walk(concepts: list[dict[str, Any]], out: list[str]) -> None:
        for c in concepts:
            out.append(c["code"])
            walk(c.get("concept", []), out)

    for fname in ("valuesets.json", "v3-codesystems.json"):
        for e in _load(source / fname)["entry"]:
            r = e["resource"]
            if r["resourceType"] == "CodeSystem" and r.get("content") == "complete":
                codes: list[str] = []
                walk(r.get("concept", []), codes)
                systems[r["url"]] = codes
    return systems


def _value_sets(source: Path) -> dict[str, dict[str, Any]]:
    sets: dict[str, dict[str, Any]] = {}
    for fname in ("valuesets.json", "v3-codesystems.json"):
        for e in _load(source / fname)["entry"]:
            r = e["resource"]
            if r["resourceType"] == "ValueSet":
                sets[r["url"]] = r
    return sets


def build_bindings(source: Path, model: dict[str, Any]) -> dict[str, Any]:
    """Codes allowed by each required binding that can be enumerated from the definitions.

    A value set that draws on an external system (BCP-47 languages, MIME types, UCUM)
    cannot be enumerated here; it is left out and documented as not checked.
    """
    wanted: set[str] = set()
    for struct in model["types"].values():
        for spec in struct["elements"].values():
            if "binding" in spec:
                wanted.add(spec["binding"])
    systems = _code_systems(source)
    sets = _value_sets(source)

    def expand(url: str, seen: frozenset[str]) -> set[str] | None:
        vs = sets.get(url)
        if vs is None or url in seen:
            return None
        codes: set[str] = set()
        compose = vs.get("compose", {})
        for inc in compose.get("include", []):
            part: set[str] | None
            if "concept" in inc:
                part = {c["code"] for c in inc["concept"]}
            elif "filter" in inc:
                return None
            elif "system" in inc:
                found = systems.get(inc["system"])
                part = set(found) if found is not None else None
            else:
                part = set()
            for ref in inc.get("valueSet", []):
                sub = expand(ref.split("|", 1)[0], seen | {url})
                if sub is None:
                    return None
                part = sub if part is None or not inc.get("system") else part & sub
            if part is None:
                return None
            codes |= part
        for exc in compose.get("exclude", []):
            codes -= {c["code"] for c in exc.get("concept", [])}
        if not compose and "expansion" in vs:
            codes = {c["code"] for c in vs["expansion"].get("contains", [])}
        return codes or None

    out: dict[str, Any] = {}
    for url in sorted(wanted):
        codes = expand(url, frozenset())
        if codes:
            out[url] = sorted(codes)
    return out


def build_binding_codes(source: Path, model: dict[str, Any]) -> dict[str, Any]:
    """For each enumerable required binding: code system URL -> the codes it contributes.

    ``build_bindings`` says which codes a value set allows; a Coding also names its
    system, and on a CodeableConcept only the codings from the value set's own systems
    are held to the binding (codings from other systems are translations).
    """
    wanted: set[str] = set()
    for struct in model["types"].values():
        for spec in struct["elements"].values():
            if "binding" in spec:
                wanted.add(spec["binding"])
    systems = _code_systems(source)
    sets = _value_sets(source)

    def expand(url: str, seen: frozenset[str]) -> dict[str, set[str]] | None:
        vs = sets.get(url)
        if vs is None or url in seen:
            return None
        out: dict[str, set[str]] = {}
        compose = vs.get("compose", {})
        for inc in compose.get("include", []):
            system = inc.get("system")
            part: dict[str, set[str]] | None
            if "filter" in inc:
                return None
            if system and "concept" in inc:
                part = {system: {c["code"] for c in inc["concept"]}}
            elif system:
                found = systems.get(system)
                part = {system: set(found)} if found is not None else None
            else:
                part = {}
            for ref in inc.get("valueSet", []):
                sub = expand(ref.split("|", 1)[0], seen | {url})
                if sub is None:
                    return None
                if part is None or not system:
                    part = {s: set(c) for s, c in sub.items()}
                else:
                    part = {system: part.get(system, set()) & sub.get(system, set())}
            if part is None:
                return None
            for s, codes in part.items():
                out.setdefault(s, set()).update(codes)
        for exc in compose.get("exclude", []):
            dropped = {c["code"] for c in exc.get("concept", [])}
            for s in [exc["system"]] if exc.get("system") in out else list(out):
                out[s] -= dropped
        if not compose and "expansion" in vs:
            for c in vs["expansion"].get("contains", []):
                out.setdefault(c.get("system", ""), set()).add(c["code"])
        return {s: codes for s, codes in out.items() if codes} or None

    result: dict[str, Any] = {}
    for url in sorted(wanted):
        by_system = expand(url, frozenset())
        if by_system:
            result[url] = {s: sorted(codes) for s, codes in sorted(by_system.items())}
    return result


def build_binding_systems(source: Path, model: dict[str, Any]) -> dict[str, str]:
    """Value set URL -> its code system, for required bindings drawn from exactly one system.

    Lets the indexer store the implied system of a plain ``code`` (Patient.gender is
    ``http://hl7.org/fhir/administrative-gender|male``), as other FHIR servers do.
    """
    wanted: set[str] = set()
    for struct in model["types"].values():
        for spec in struct["elements"].values():
            if "binding" in spec:
                wanted.add(spec["binding"])
    sets = _value_sets(source)
    out: dict[str, str] = {}
    for url in sorted(wanted):
        vs = sets.get(url)
        if vs is None:
            continue
        systems = {inc.get("system") for inc in vs.get("compose", {}).get("include", [])}
        if len(systems) == 1 and None not in systems:
            out[url] = str(systems.pop())
    return out


def build_search_parameters(source: Path) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for e in _load(source / "search-parameters.json")["entry"]:
        r = e["resource"]
        if r["resourceType"] != "SearchParameter":
            continue
        p: dict[str, Any] = {
            "url": r["url"],
            "id": r["id"],
            "code": r["code"],
            "base": r["base"],
            "type": r["type"],
            "expression": r.get("expression"),
        }
        for key in ("target", "modifier", "comparator", "multipleOr", "multipleAnd", "chain"):
            if key in r:
                p[key] = r[key]
        if "component" in r:
            p["component"] = [
                {"definition": c["definition"], "expression": c["expression"]} for c in r["component"]
            ]
        params.append(p)
    params.sort(key=lambda p: p["url"])
    return params


def build_compartments(source: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("patient", "encounter", "practitioner", "relatedperson", "device"):
        r = _load(source / f"compartmentdefinition-{name}.json")
        out[r["code"]] = {res["code"]: res.get("param", []) for res in r.get("resource", [])}
    return out


def _write(out: Path, name: str, data: Any) -> None:
    raw = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    # mtime=0 keeps the gzip bytes identical from one run to the next.
    with (out / name).open("wb") as fh, gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw)


def generate(source: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(source)
    _write(out, "model.json.gz", model)
    _write(out, "bindings.json.gz", build_bindings(source, model))
    _write(out, "binding-systems.json.gz", build_binding_systems(source, model))
    _write(out, "binding-codes.json.gz", build_binding_codes(source, model))
    _write(out, "search-parameters.json.gz", build_search_parameters(source))
    _write(out, "compartments.json.gz", build_compartments(source))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    generate(args.source, args.out)
    print(f"wrote definitions to {args.out}")


if __name__ == "__main__":
    main()
