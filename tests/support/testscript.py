"""A runner for FHIR R4 TestScript resources (http://hl7.org/fhir/R4/testscript.html).

A TestScript names fixtures (resources to send or compare with), variables, and ``setup``,
``test`` and ``teardown`` actions: *operations* (HTTP requests to the server under test) and
*asserts* on those requests and their responses. :class:`TestScriptRunner` executes one over
an ``httpx.Client`` — the Starlette ``TestClient`` around the app runs it in process, through
the real HTTP layer (content negotiation, headers, status codes), without a server process.

Where the specification leaves room, this runner does what common TestScript engines do:

- **Destinations.** Every ``destination`` is the one server under test; the runner is the
  ``origin``.
- **Fixtures.** ``#id`` is a contained resource of the script; ``file.json`` / ``file.xml`` is
  read next to the script, else by file name from the official examples folder; ``Type/id``
  (what the published R4 scripts use, e.g. ``Patient/example``) is the official example with
  that type and id, found through the examples' ``INDEX.csv``.
- **Formats.** ``accept`` / ``contentType`` codes are FHIR's (``json`` → ``application/fhir+json``,
  ``xml`` → ``application/fhir+xml``). When a script asks for a format the server's
  CapabilityStatement does not list, the request goes in JSON and the asserts that are about
  that format (``contentType: xml``, a request's ``Accept``/``Content-Type`` header) are
  *skipped* with the format named; every other assert (status, resource type, values) still
  runs on the JSON exchange. A format the server does claim is asked for as written. Request
  bodies are always sent as JSON (this runner has no XML serializer).
- **Interactions.** An operation whose interaction the CapabilityStatement does not list for
  its resource type is still sent, but the asserts on its response are skipped, naming it.
- **update** puts the id of the URL into the body, as the FHIR clients TestScript engines are
  built on do: a fixture is a template (``Patient/pat1`` updated as ``Patient/example``), and
  FHIR requires a body id equal to the URL's.
- **path** holds XPath in the published scripts (``fhir:Patient/fhir:name/fhir:family/@value``,
  ``Patient/id``); the simple element paths they use are translated to FHIRPath
  (``Patient.name.family``) and, as XPath's string value of a node set, the first node counts.
  ``expression`` is FHIRPath (``yilian.fhir.fhirpath``); with neither ``value``,
  ``compareToSourceId`` nor an ``empty``/``notEmpty`` operator it must evaluate to ``true``.
  A ``compareToSourceExpression``/``compareToSourcePath`` without an ``expression``/``path`` of
  its own compares the same element of both resources.
- **validateProfileId** for a base profile (``http://hl7.org/fhir/StructureDefinition/T``):
  the response parses as a resource of type ``T``.
- **minimumId**: every element and value of the fixture is in the response (repeating
  elements matched in any order), apart from ``meta.versionId``/``meta.lastUpdated``, which
  the server assigns.
- **navigationLinks**: the response is a Bundle with a ``self`` link, and every link has a
  relation and an absolute URL.
- **Variables** are evaluated when used (a ``headerField`` of a response captured later is
  then available); values given to the runner (what a tester types for a ``hint``) win,
  ``defaultValue`` is the fallback.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import orjson

from yilian.fhir.fhirpath import FHIRPathError, evaluate

JSON = "application/fhir+json"
XML = "application/fhir+xml"
MIME_OF_CODE = {"json": JSON, "xml": XML, "ttl": "application/fhir+turtle"}
_FORMAT_ALIASES = {
    "json": ("json", JSON, "application/json", "application/json+fhir"),
    "xml": ("xml", XML, "application/xml", "application/xml+fhir", "text/xml"),
    "ttl": ("ttl", "application/fhir+turtle", "text/turtle"),
}

# TestScript operation codes (http://terminology.hl7.org/CodeSystem/testscript-operation-codes).
METHOD_OF_OPERATION = {
    "read": "GET",
    "vread": "GET",
    "search": "GET",
    "history": "GET",
    "capabilities": "GET",
    "create": "POST",
    "update": "PUT",
    "updateCreate": "PUT",
    "patch": "PATCH",
    "delete": "DELETE",
    "deleteCondSingle": "DELETE",
    "deleteCondMultiple": "DELETE",
    "transaction": "POST",
    "batch": "POST",
}
RESPONSE_CODES = {
    "okay": 200,
    "created": 201,
    "noContent": 204,
    "notModified": 304,
    "bad": 400,
    "forbidden": 403,
    "notFound": 404,
    "methodNotAllowed": 405,
    "conflict": 409,
    "gone": 410,
    "preconditionFailed": 412,
    "unprocessable": 422,
}
BASE_PROFILE = "http://hl7.org/fhir/StructureDefinition/"
_VARIABLE = re.compile(r"\$\{([^}]+)\}")
_XPATH_STEP = re.compile(r"(?:fhir:)?([A-Za-z][A-Za-z0-9_]*)")

PASS, FAIL, WARNING, SKIP = "pass", "fail", "warning", "skip"


class RunnerError(Exception):
    """The script asks for something this runner cannot do or resolve (reported as a failure)."""


@dataclass(frozen=True)
class Feature:
    """A capability a server may or may not claim in its CapabilityStatement."""

    kind: str  # "format" | "interaction"
    code: str  # "xml" | "read", "history-instance", "search-type"…
    resource: str | None = None

    def __str__(self) -> str:
        if self.kind == "format":
            return f"the {self.code.upper()} format (not in CapabilityStatement.format)"
        on = f"{self.resource}" if self.resource else "the system"
        return f"the {self.code} interaction on {on} (not in the CapabilityStatement)"


def format_code(media_type: str) -> str | None:
    """``xml`` for ``application/fhir+xml; charset=utf-8`` and the like, ``json``, ``ttl``, or None."""
    media = media_type.split(";")[0].strip().lower()
    for code, names in _FORMAT_ALIASES.items():
        if media in names:
            return code
    return None


def claims(capability: dict[str, Any], feature: Feature) -> bool:
    """Whether the CapabilityStatement says the server has ``feature``."""
    if feature.kind == "format":
        return any(format_code(f) == feature.code for f in capability.get("format", []))
    if feature.kind == "interaction":
        for rest in capability.get("rest", []):
            if feature.resource is None:
                codes = [i.get("code") for i in rest.get("interaction", [])]
            else:
                codes = [
                    i.get("code")
                    for r in rest.get("resource", [])
                    if r.get("type") == feature.resource
                    for i in r.get("interaction", [])
                ]
            if feature.code in codes:
                return True
        return False
    raise ValueError(feature.kind)


class Skip(Exception):
    def __init__(self, feature: Feature) -> None:
        super().__init__(str(feature))
        self.feature = feature


@dataclass(frozen=True)
class AssertResult:
    """The outcome of one assert (or of an operation that could not be sent)."""

    section: str  # "setup", "test 01-ReadPatient", "teardown"
    number: int  # position of the action in its section, from 1
    label: str
    outcome: str  # pass | fail | warning | skip
    detail: str = ""
    feature: Feature | None = None  # what a skipped assert needs

    def __str__(self) -> str:
        extra = f" — {self.detail}" if self.detail else ""
        return f"{self.outcome.upper():7} {self.section} #{self.number}: {self.label}{extra}"


@dataclass
class Report:
    script: str
    results: list[AssertResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def with_outcome(self, outcome: str) -> list[AssertResult]:
        return [r for r in self.results if r.outcome == outcome]

    def counts(self) -> dict[str, int]:
        return {o: len(self.with_outcome(o)) for o in (PASS, FAIL, WARNING, SKIP)}

    def __str__(self) -> str:
        head = f"{self.script}: " + ", ".join(f"{n} {o}" for o, n in self.counts().items())
        return "\n".join([head, *(f"  {r}" for r in self.results), *(f"  note: {n}" for n in self.notes)])


@dataclass
class Exchange:
    """One request the runner sent and the response it got."""

    method: str
    url: str
    request_headers: dict[str, str]  # lower-case names
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    asked_format: str | None = None  # the format the script asked for when it was sent as JSON instead
    unsupported: Feature | None = None  # the interaction the server does not claim

    @cached_property
    def resource(self) -> Any:
        if not self.body:
            return None
        if format_code(self.headers.get("content-type", "")) == "json":
            try:
                return orjson.loads(self.body)
            except orjson.JSONDecodeError:
                return None
        if format_code(self.headers.get("content-type", "")) == "xml":
            from tests.support.fhir_xml import parse_resource

            try:
                return parse_resource(self.body)
            except Exception:  # malformed XML parses as nothing, which the asserts then report
                return None
        return None


Source = Exchange | dict[str, Any]


def resource_of(source: Source) -> Any:
    return source.resource if isinstance(source, Exchange) else source


def xpath_to_fhirpath(path: str) -> str:
    """``fhir:Patient/fhir:name/fhir:family/@value`` (or ``Patient/id``) → ``Patient.name.family``."""
    steps = [s for s in path.strip().split("/") if s]
    if steps and steps[-1] == "@value":
        steps.pop()
    names = []
    for step in steps:
        m = _XPATH_STEP.fullmatch(step)
        if m is None:
            raise RunnerError(f"path {path!r}: only plain element paths (fhir:A/fhir:b/@value) are supported")
        names.append(m.group(1))
    if not names:
        raise RunnerError(f"path {path!r} names no element")
    return ".".join(names)


def _text(value: Any) -> str | None:
    """A FHIRPath result item as the text an assert compares."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, Decimal)):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return orjson.dumps(value).decode()


def _number(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except (InvalidOperation, ValueError):
        return None


def compare(actual: str | None, expected: str | None, operator: str) -> tuple[bool, str]:
    """Apply an assert ``operator``; the detail says what was compared."""
    detail = f"{operator}: expected {expected!r}, got {actual!r}"
    if operator == "empty":
        return actual in (None, ""), detail
    if operator == "notEmpty":
        return actual not in (None, ""), detail
    if expected is None:
        raise RunnerError(f"operator {operator} needs a value to compare with")
    if operator == "equals":
        return actual == expected, detail
    if operator == "notEquals":
        return actual != expected, detail
    if operator in ("in", "notIn"):
        inside = actual is not None and actual in [x.strip() for x in expected.split(",")]
        return inside == (operator == "in"), detail
    if operator in ("contains", "notContains"):
        found = actual is not None and expected in actual
        return found == (operator == "contains"), detail
    if operator in ("greaterThan", "lessThan"):
        if actual is None:
            return False, detail
        a, e = _number(actual), _number(expected)
        ordered: bool = (
            (a > e if operator == "greaterThan" else a < e)
            if a is not None and e is not None
            else (actual > expected if operator == "greaterThan" else actual < expected)
        )
        return ordered, detail
    raise RunnerError(f"operator {operator!r} is not supported by this runner")


def _same_value(actual: Any, expected: Any) -> bool:
    if isinstance(expected, (int, float, Decimal)) and not isinstance(expected, bool):
        return (
            isinstance(actual, (int, float, Decimal))
            and not isinstance(actual, bool)
            and Decimal(str(actual)) == Decimal(str(expected))
        )
    return bool(actual == expected)


def missing_from(actual: Any, minimum: Any, path: str = "") -> list[str]:
    """What of ``minimum`` is not in ``actual`` (element paths); empty when all of it is."""
    if isinstance(minimum, dict):
        if not isinstance(actual, dict):
            return [path or "(resource)"]
        out: list[str] = []
        for key, value in minimum.items():
            if not path and key == "meta" and isinstance(value, dict):
                value = {k: v for k, v in value.items() if k not in ("versionId", "lastUpdated")}
                if not value:
                    continue
            out += missing_from(actual.get(key), value, f"{path}.{key}" if path else key)
        return out
    if isinstance(minimum, list):
        if not isinstance(actual, list):
            return [path]
        remaining = list(actual)
        out = []
        for i, want in enumerate(minimum):
            for j, have in enumerate(remaining):
                if not missing_from(have, want, path):
                    del remaining[j]
                    break
            else:
                out.append(f"{path}[{i}]")
        return out
    return [] if _same_value(actual, minimum) else [f"{path} (expected {minimum!r}, got {actual!r})"]


class TestScriptRunner:
    """Runs TestScripts against the FHIR server at ``base_url`` through ``client``."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        client: httpx.Client,
        base_url: str,
        *,
        examples: Path | None = None,
        variables: dict[str, str] | None = None,
    ) -> None:
        self.client = client
        self.base = base_url.rstrip("/")
        self.examples = examples
        self.variables = dict(variables or {})

    @cached_property
    def capability(self) -> dict[str, Any]:
        resp = self.client.get(f"{self.base}/metadata", headers={"Accept": JSON})
        if resp.status_code != 200:
            raise RunnerError(f"GET metadata answered {resp.status_code}")
        statement: dict[str, Any] = orjson.loads(resp.content)
        return statement

    @cached_property
    def _example_index(self) -> dict[tuple[str, str], str]:
        if self.examples is None or not (self.examples / "INDEX.csv").is_file():
            return {}
        with (self.examples / "INDEX.csv").open(newline="", encoding="utf-8") as fh:
            return {(row["resourceType"], row["id"]): row["file"] for row in csv.DictReader(fh)}

    def run(self, script: dict[str, Any], *, folder: Path) -> Report:
        return _Execution(self, script, folder).run()

    def load_fixture(
        self, reference: str, *, folder: Path, contained: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """The resource a fixture reference names (see the module documentation)."""
        if reference.startswith("#"):
            for res in contained or []:
                if res.get("id") == reference[1:]:
                    return res
            raise RunnerError(f"fixture {reference}: no contained resource with that id")
        if reference.endswith((".json", ".xml")):
            candidates = [folder / reference]
            if self.examples is not None:
                candidates.append(self.examples / Path(reference).name)
            for path in candidates:
                if path.is_file():
                    return _read_resource(path)
            raise RunnerError(f"fixture {reference}: no such file next to the script or among the examples")
        rtype, _, rid = reference.partition("/")
        name = self._example_index.get((rtype, rid))
        if name is None or self.examples is None:
            raise RunnerError(f"fixture {reference}: not among the official examples")
        return _read_resource(self.examples / name)


def _read_resource(path: Path) -> dict[str, Any]:
    if path.suffix == ".xml":
        from tests.support.fhir_xml import load_resource

        return load_resource(path)
    doc: dict[str, Any] = orjson.loads(path.read_bytes())
    return doc


class _Execution:
    """One run of one script: its fixtures, captured responses and results."""

    def __init__(self, runner: TestScriptRunner, script: dict[str, Any], folder: Path) -> None:
        self.runner = runner
        self.script = script
        self.folder = folder
        self.report = Report(str(script.get("id") or script.get("name")))
        self.fixtures: dict[str, Source] = {}
        self.variables = {v["name"]: v for v in script.get("variable", [])}
        self.profiles = {p["id"]: p.get("reference", "") for p in script.get("profile", [])}
        self.last: Exchange | None = None
        self.autodelete: list[str] = []

    # -- running ---------------------------------------------------------------------------

    def run(self) -> Report:
        if len({d.get("index") for d in self.script.get("destination", [])}) > 1:
            self.report.notes.append("every destination is the server under test")
        self._load_fixtures()
        for section, actions in self._sections():
            for number, action in enumerate(actions, start=1):
                if "operation" in action:
                    self._operation(section, number, action["operation"])
                elif "assert" in action:
                    self._assert(section, number, action["assert"])
        for url in self.autodelete:
            self.runner.client.delete(url, headers={"Accept": JSON})
        return self.report

    def _sections(self) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        yield "setup", (self.script.get("setup") or {}).get("action", [])
        for test in self.script.get("test", []):
            yield f"test {test.get('id') or test.get('name')}", test.get("action", [])
        yield "teardown", (self.script.get("teardown") or {}).get("action", [])

    def _load_fixtures(self) -> None:
        for number, fixture in enumerate(self.script.get("fixture", []), start=1):
            ref = (fixture.get("resource") or {}).get("reference", "")
            try:
                res = self.runner.load_fixture(
                    ref, folder=self.folder, contained=self.script.get("contained")
                )
            except RunnerError as err:
                self.report.results.append(
                    AssertResult("fixtures", number, f"fixture {fixture.get('id')}", FAIL, str(err))
                )
                continue
            self.fixtures[fixture["id"]] = res
            if fixture.get("autocreate"):
                self._autocreate(number, fixture["id"], res)

    def _autocreate(self, number: int, fixture_id: str, res: dict[str, Any]) -> None:
        rtype, rid = res.get("resourceType"), res.get("id")
        url = f"{self.runner.base}/{rtype}" + (f"/{rid}" if rid else "")
        resp = self.runner.client.request(
            "PUT" if rid else "POST",
            url,
            headers={"Content-Type": JSON, "Accept": JSON},
            content=orjson.dumps(res),
        )
        if resp.status_code not in (200, 201):
            self.report.results.append(
                AssertResult(
                    "fixtures", number, f"autocreate {fixture_id}", FAIL, f"answered {resp.status_code}"
                )
            )
            return
        created = orjson.loads(resp.content) if resp.content else res
        self.fixtures[fixture_id] = created
        if any(f.get("id") == fixture_id and f.get("autodelete") for f in self.script.get("fixture", [])):
            self.autodelete.append(f"{self.runner.base}/{rtype}/{created.get('id', rid)}")

    # -- variables and sources ---------------------------------------------------------------

    def source(self, source_id: str | None) -> Source:
        if source_id is None:
            if self.last is None:
                raise RunnerError("no response to assert on yet")
            return self.last
        found = self.fixtures.get(source_id)
        if found is None:
            raise RunnerError(f"no fixture or captured response {source_id!r}")
        return found

    def subst(self, text: str) -> str:
        return _VARIABLE.sub(lambda m: self.variable(m.group(1)), text)

    def variable(self, name: str) -> str:
        if name in self.runner.variables:
            return self.runner.variables[name]
        var = self.variables.get(name)
        if var is None:
            raise RunnerError(f"${{{name}}} is not a variable of this script")
        value: str | None = None
        if any(k in var for k in ("headerField", "expression", "path")):
            src = self.source(var.get("sourceId"))
            if "headerField" in var:
                value = src.headers.get(var["headerField"].lower()) if isinstance(src, Exchange) else None
            else:
                expr = var.get("expression") or xpath_to_fhirpath(var["path"])
                value = _text(next(iter(self._evaluate(resource_of(src), expr)), None))
        if value is None:
            value = var.get("defaultValue")
        if value is None:
            hint = var.get("hint") or var.get("description") or "a value from the tester"
            raise RunnerError(f"variable {name} has no value (it needs {hint})")
        return str(value)

    @staticmethod
    def _evaluate(resource: Any, expression: str) -> list[Any]:
        if resource is None:
            return []
        try:
            return evaluate(resource, expression)
        except FHIRPathError as err:
            raise RunnerError(f"FHIRPath {expression!r}: {err}") from None

    # -- operations --------------------------------------------------------------------------

    def _operation(self, section: str, number: int, op: dict[str, Any]) -> None:
        try:
            exchange = self._send(op)
        except RunnerError as err:
            label = op.get("label") or op.get("description") or "operation"
            self.report.results.append(AssertResult(section, number, f"operation: {label}", FAIL, str(err)))
            self.last = None
            return
        self.last = exchange
        for key in ("responseId", "requestId"):
            if op.get(key):
                self.fixtures[op[key]] = exchange

    def _negotiate(self, code: str) -> tuple[str, str | None]:
        """The media type to send for a script's format code, and the code when it was replaced by JSON."""
        mime = MIME_OF_CODE.get(code, code)
        fmt = format_code(mime)
        if fmt == "json" or fmt is None or claims(self.runner.capability, Feature("format", fmt)):
            return mime, None
        return JSON, fmt

    def _send(self, op: dict[str, Any]) -> Exchange:
        base = self.runner.base
        code = (op.get("type") or {}).get("code", "")
        rtype: str | None = op.get("resource")
        target = resource_of(self.source(op["targetId"])) if op.get("targetId") else None
        if not rtype and isinstance(target, dict):
            rtype = target.get("resourceType")
        body = resource_of(self.source(op["sourceId"])) if op.get("sourceId") else None
        method = str(op.get("method") or METHOD_OF_OPERATION.get(code, "GET")).upper()
        url = self._url(op, code, rtype, target, body)

        headers: dict[str, str] = {}
        asked: str | None = None
        if op.get("accept"):
            headers["accept"], asked = self._negotiate(op["accept"])
        content: bytes | None = None
        if body is not None:
            if op.get("contentType"):
                headers["content-type"], asked_body = self._negotiate(op["contentType"])
                asked = asked or asked_body
                if format_code(headers["content-type"]) != "json":
                    raise RunnerError("this runner sends request bodies as JSON only")
            else:
                headers["content-type"] = JSON
            body = orjson.loads(orjson.dumps(body))  # the fixture stays as loaded
            if code in ("update", "updateCreate") and isinstance(body, dict):
                segs = urlsplit(url).path[len(urlsplit(base).path) :].strip("/").split("/")
                if len(segs) == 2:
                    body["id"] = segs[1]
            content = orjson.dumps(body)
        for h in op.get("requestHeader", []):
            headers[h["field"].lower()] = self.subst(h["value"])

        resp = self.runner.client.request(method, url, headers=headers, content=content)
        return Exchange(
            method=method,
            url=url,
            request_headers=headers,
            status=resp.status_code,
            headers={k.lower(): v for k, v in resp.headers.items()},
            body=resp.content,
            asked_format=asked,
            unsupported=self._unclaimed_interaction(code, url),
        )

    def _url(self, op: dict[str, Any], code: str, rtype: str | None, target: Any, body: Any) -> str:
        base = self.runner.base
        if op.get("url"):
            return urljoin(base + "/", self.subst(op["url"]))
        if code == "capabilities":
            return f"{base}/metadata"
        if code in ("transaction", "batch"):
            return base
        path = f"{base}/{rtype}" if rtype else base
        params = self.subst(op.get("params", ""))
        if params:
            return path + params
        if isinstance(target, dict) and code in (
            "read",
            "vread",
            "update",
            "updateCreate",
            "patch",
            "delete",
            "history",
        ):
            url = f"{path}/{target.get('id')}"
            if code == "vread":
                url += f"/_history/{(target.get('meta') or {}).get('versionId')}"
            elif code == "history":
                url += "/_history"
            return url
        if code in ("update", "updateCreate") and isinstance(body, dict) and body.get("id"):
            return f"{path}/{body['id']}"
        if code == "history":
            return f"{path}/_history"
        return path

    def _unclaimed_interaction(self, code: str, url: str) -> Feature | None:
        segs = urlsplit(url).path[len(urlsplit(self.runner.base).path) :].strip("/").split("/")
        segs = [s for s in segs if s]
        rtype = segs[0] if segs and segs[0][:1].isupper() else None
        interaction = {
            "read": "read",
            "vread": "vread",
            "update": "update",
            "updateCreate": "update",
            "patch": "patch",
            "delete": "delete",
            "create": "create",
            "search": "search-type" if rtype else "search-system",
            "history": ("history-instance" if len(segs) > 2 else "history-type")
            if rtype
            else "history-system",
            "transaction": "transaction",
            "batch": "batch",
        }.get(code)
        if interaction is None:
            return None
        feature = Feature(
            "interaction",
            interaction,
            rtype if interaction not in ("transaction", "batch", "search-system", "history-system") else None,
        )
        return None if claims(self.runner.capability, feature) else feature

    # -- asserts -----------------------------------------------------------------------------

    def _assert(self, section: str, number: int, a: dict[str, Any]) -> None:
        label = a.get("label") or a.get("description") or "assert"
        try:
            ok, detail = self._check(a)
        except Skip as skip:
            self.report.results.append(
                AssertResult(section, number, label, SKIP, f"needs {skip.feature}", skip.feature)
            )
            return
        except RunnerError as err:
            ok, detail = False, str(err)
        outcome = PASS if ok else (WARNING if a.get("warningOnly") else FAIL)
        self.report.results.append(AssertResult(section, number, label, outcome, "" if ok else detail))

    def _check(self, a: dict[str, Any]) -> tuple[bool, str]:
        request = a.get("direction") == "request"
        src = self.source(a.get("sourceId"))
        ex = src if isinstance(src, Exchange) else None
        operator: str | None = a.get("operator")
        value = self.subst(a["value"]) if "value" in a else None
        if ex is not None and ex.unsupported is not None and not request:
            raise Skip(ex.unsupported)

        if "contentType" in a:
            want = format_code(MIME_OF_CODE.get(a["contentType"], a["contentType"]))
            if want is not None and not claims(self.runner.capability, Feature("format", want)):
                raise Skip(Feature("format", want))
            have = (
                self._exchange(ex).request_headers.get("content-type")
                if request
                else self._exchange(ex).headers.get("content-type")
            )
            return compare(format_code(have or ""), want, operator or "equals")
        if "headerField" in a:
            name = a["headerField"].lower()
            exchange = self._exchange(ex)
            if request:
                if exchange.asked_format and name in ("accept", "content-type"):
                    raise Skip(Feature("format", exchange.asked_format))
                return compare(exchange.request_headers.get(name), value, operator or "equals")
            return compare(exchange.headers.get(name), value, operator or "equals")
        if "requestMethod" in a:
            return compare(
                self._exchange(ex).method.lower(), a["requestMethod"].lower(), operator or "equals"
            )
        if "requestURL" in a:
            return compare(self._exchange(ex).url, self.subst(a["requestURL"]), operator or "equals")
        if "response" in a:
            code = RESPONSE_CODES.get(a["response"])
            if code is None:
                raise RunnerError(f"unknown response code {a['response']!r}")
            return compare(str(self._exchange(ex).status), str(code), operator or "equals")
        if "responseCode" in a:
            return compare(str(self._exchange(ex).status), a["responseCode"], operator or "equals")
        if "resource" in a:
            return compare(_resource_type(resource_of(src)), a["resource"], operator or "equals")
        if "validateProfileId" in a:
            reference = self.profiles.get(a["validateProfileId"], "")
            if not reference.startswith(BASE_PROFILE):
                raise RunnerError(
                    f"profile {a['validateProfileId']!r} is not a base FHIR profile: {reference!r}"
                )
            return compare(_resource_type(resource_of(src)), reference[len(BASE_PROFILE) :], "equals")
        if "minimumId" in a:
            minimum = resource_of(self.source(a["minimumId"]))
            missing = missing_from(resource_of(src), minimum)
            return not missing, f"missing from the response: {', '.join(missing[:5])}"
        if a.get("navigationLinks") is not None:
            return self._navigation_links(resource_of(src), bool(a["navigationLinks"]))
        if any(k in a for k in ("expression", "path", "compareToSourceId")):
            return self._compare_values(a, src, operator, value)
        raise RunnerError(f"nothing this runner can check in the assert ({', '.join(sorted(a))})")

    @staticmethod
    def _exchange(ex: Exchange | None) -> Exchange:
        if ex is None:
            raise RunnerError("this assert needs an HTTP exchange, and its source is a fixture")
        return ex

    def _compare_values(
        self, a: dict[str, Any], src: Source, operator: str | None, value: str | None
    ) -> tuple[bool, str]:
        compare_expr = a.get("compareToSourceExpression") or (
            xpath_to_fhirpath(a["compareToSourcePath"]) if a.get("compareToSourcePath") else None
        )
        expr = a.get("expression") or (xpath_to_fhirpath(a["path"]) if a.get("path") else compare_expr)
        if expr is None:
            raise RunnerError("compareToSourceId without compareToSourceExpression or compareToSourcePath")
        items = self._evaluate(resource_of(src), expr)
        actual = _text(items[0]) if items else None
        if a.get("compareToSourceId"):
            if compare_expr is None:
                raise RunnerError(
                    "compareToSourceId without compareToSourceExpression or compareToSourcePath"
                )
            other = self._evaluate(resource_of(self.source(a["compareToSourceId"])), compare_expr)
            return compare(actual, _text(other[0]) if other else None, operator or "equals")
        if value is not None or operator in ("empty", "notEmpty"):
            return compare(actual, value, operator or "equals")
        return items == [True], f"{expr} gave {items!r}, not true"

    @staticmethod
    def _navigation_links(bundle: Any, wanted: bool) -> tuple[bool, str]:
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            return False, "the response is not a Bundle"
        links = bundle.get("link", [])
        relations = {link.get("relation") for link in links}
        well_formed = all(
            isinstance(link.get("relation"), str)
            and str(link.get("url", "")).startswith(("http://", "https://"))
            for link in links
        )
        ok = "self" in relations and well_formed
        return ok == wanted, f"links {sorted(str(r) for r in relations)}"


def _resource_type(resource: Any) -> str | None:
    return resource.get("resourceType") if isinstance(resource, dict) else None
