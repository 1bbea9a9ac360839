"""Bulk data over HTTP (HL7 Bulk Data Access IG v2): ``$export`` and ``$import`` kick-offs, job
status, file downloads. The jobs themselves live in :mod:`yilian.exchange.bulk`.

    GET|POST /fhir/$export, /fhir/Patient/$export, /fhir/Group/{id}/$export   (Prefer: respond-async)
    POST     /fhir/$import                                                    (operator only)
    GET      /fhir/$bulk-status/{job}     202 + X-Progress while running, 200 + manifest when done
    DELETE   /fhir/$bulk-status/{job}     cancel, remove the files
    GET      /fhir/$bulk-file/{job}/{name}  one NDJSON file (application/fhir+ndjson)

Every request needs a bearer token; a job, its status and its files belong to the client
that started it (anyone else gets 404, as if there were no such job). Kick-offs, cancels and
downloads are recorded in the audit log. Errors are OperationOutcomes.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.types import Receive, Scope, Send

from yilian.api.auth import Authenticator
from yilian.db import Database, UnitOfWork
from yilian.db.uow import transact
from yilian.exchange import bulk
from yilian.fhir import outcomes
from yilian.fhir.access import AccessPolicy
from yilian.fhir.interactions.context import FhirContext, FhirSettings
from yilian.fhir.search.indexer import parse_reference
from yilian.fhir.search.values import us_to_instant
from yilian.kernel.errors import Category, YilianError
from yilian.security.audit import AuditRecord, AuditWriter
from yilian.security.audit import record as audit_record
from yilian.security.policy import policy_for
from yilian.security.principal import RESIDENT, STAFF, Principal
from yilian.security.scopes import parse_scopes

log = logging.getLogger("yilian.api.bulk")

NDJSON = "application/fhir+ndjson"
NDJSON_TYPES = frozenset({"application/fhir+ndjson", "application/ndjson", "application/x-ndjson"})
MAX_IMPORT_BODY = 4 * 1024 * 1024 * 1024
_ROUTE = re.compile(
    r"^/fhir/(?:(?P<system>\$export)|Patient/(?P<patient>\$export)|Group/(?P<group>[A-Za-z0-9\-.]{1,64})/\$export"
    r"|(?P<imp>\$import)|\$bulk-status/(?P<status>[^/]+)|\$bulk-file/(?P<fjob>[^/]+)/(?P<fname>[^/]+))/?$"
)


def bulk_directory(db: Database, env: Mapping[str, str] | None = None) -> Path:
    """Where job files go: ``YILIAN_BULK_DIR``, else beside an SQLite database file, else ``./yilian-bulk``."""
    env = os.environ if env is None else env
    if env.get("YILIAN_BULK_DIR"):
        return Path(env["YILIAN_BULK_DIR"])
    if db.is_sqlite and db.url.database not in (None, "", ":memory:"):
        return Path(str(db.url.database) + ".bulk")
    return Path("yilian-bulk").resolve()


def import_directory(env: Mapping[str, str] | None = None) -> Path | None:
    """The only place ``$import`` reads files named in a Parameters body from (``YILIAN_IMPORT_DIR``)."""
    env = os.environ if env is None else env
    value = env.get("YILIAN_IMPORT_DIR")
    return Path(value).resolve() if value else None


# --- the caller, kept with the job ----------------------------------------------------------------


def caller_of(p: Principal) -> dict[str, Any]:
    return {
        "kind": p.kind,
        "subject": p.subject,
        "scopes": str(p.scopes),
        "org_id": p.org_id,
        "client_id": p.client_id,
        "user_id": p.user_id,
        "patient_keys": sorted(p.patient_keys) if p.patient_keys is not None else None,
        "purpose": p.purpose,
        "reason": p.reason,
    }


def principal_of(caller: dict[str, Any]) -> Principal:
    keys = caller.get("patient_keys")
    return Principal(
        kind=caller["kind"],
        subject=caller["subject"],
        scopes=parse_scopes(caller["scopes"]),
        org_id=caller.get("org_id"),
        client_id=caller.get("client_id"),
        user_id=caller.get("user_id"),
        patient_keys=frozenset(keys) if keys is not None else None,
        purpose=caller.get("purpose"),
        reason=caller.get("reason"),
    )


def _agent_kind(p: Principal) -> str:
    if p.kind == RESIDENT:
        return "patient"
    if p.kind == STAFF:
        return "user"
    return "operator" if p.org_id is None else "system"


def _audit(
    p: Principal | None,
    *,
    query: str,
    entity: str | None,
    status: int,
    error: str | None = None,
    ip: str | None = None,
    types: tuple[str, ...] = (),
    patients: Sequence[str] = (),
    more_patients: bool = False,
) -> AuditRecord:
    """One bulk access. ``patients``: whose data it carries (a download: the file's patients, as
    the export recorded them; a kick-off: the patients or group members asked for), at most
    ``bulk.AUDIT_PATIENTS`` of them; ``more_patients`` says the list stops there."""
    named = tuple(patients[: bulk.AUDIT_PATIENTS])
    note = None
    if more_patients or len(patients) > len(named):
        note = (
            f"carries the data of more than {len(named)} patients: the first {len(named)} are "
            "recorded (the query and the level say whose the rest is)"
        )
    return AuditRecord(
        action="E",
        subtype="operation" if error is None or status not in (401, 403) else "access-denied",
        agent_kind=_agent_kind(p) if p else "system",
        agent_id=(p.subject if p else "anonymous")[:128] or "anonymous",
        outcome=0 if status < 400 else (8 if status >= 500 else 4),
        org_id=p.org_id if p else None,
        patient_keys=named,
        entity=entity,
        query=query,
        resource_types=types,
        purpose=p.purpose if p else None,
        source_ip=ip,
        outcome_desc=error[:500] if error else note,
    )


def _outcome(err: YilianError) -> Response:
    return Response(
        orjson.dumps(outcomes.outcome(err)),
        status_code=outcomes.status_of(err.category),
        media_type="application/fhir+json",
        headers={"WWW-Authenticate": 'Bearer realm="yilian"'}
        if err.category is Category.UNAUTHENTICATED
        else None,
    )


class BulkEndpoint:
    """The bulk routes as one ASGI app; :meth:`handles` says which requests are its own."""

    def __init__(
        self,
        db: Database,
        settings: FhirSettings,
        authenticator: Authenticator,
        audit: AuditWriter | None,
        *,
        directory: Path | None = None,
        import_dir: Path | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.auth = authenticator
        self.audit = audit
        self.directory = directory or bulk_directory(db)
        self.import_dir = import_dir if import_dir is not None else import_directory()
        self.worker = bulk.BulkWorker(db, self.directory, policy_for=self.policy_of, settings=settings)

    def policy_of(self, caller: dict[str, Any]) -> AccessPolicy:
        return policy_for(principal_of(caller), self.db)

    @staticmethod
    def handles(path: str) -> bool:
        return _ROUTE.match(path) is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self.respond(request)
        await response(scope, receive, send)

    # --- dispatch ----------------------------------------------------------------------------------

    async def respond(self, request: Request) -> Response:
        root = request.scope.get("root_path", "")
        path = (
            request.url.path[len(root) :] if root and request.url.path.startswith(root) else request.url.path
        )
        m = _ROUTE.match(path)
        assert m is not None
        principal: Principal | None = None
        ip = request.client.host if request.client else None
        try:
            principal = self.auth.principal({k.lower(): v for k, v in request.headers.items()})
            method = request.method.upper()
            if m["status"]:
                if method == "DELETE":
                    return await self.cancel(request, principal, m["status"], ip)
                self._method(method, ("GET", "HEAD"))
                return await run_in_threadpool(self.status, request, principal, m["status"])
            if m["fjob"]:
                self._method(method, ("GET", "HEAD"))
                return await self.download(request, principal, m["fjob"], m["fname"], ip)
            if m["imp"]:
                self._method(method, ("POST",))
                return await self.kick_off_import(request, principal, ip)
            self._method(method, ("GET", "POST"))
            level = bulk.SYSTEM if m["system"] else bulk.PATIENT if m["patient"] else bulk.GROUP
            return await self.kick_off_export(request, principal, level, m["group"], ip)
        except YilianError as err:
            # Refusals and failures are accesses too.
            await self._record(
                _audit(
                    principal,
                    query=path,
                    entity=None,
                    status=outcomes.status_of(err.category),
                    error=err.message,
                    ip=ip,
                )
            )
            return _outcome(err)
        except Exception:
            incident = uuid.uuid4().hex[:12]
            log.exception("unhandled error in bulk request (incident %s)", incident)
            return _outcome(
                YilianError(Category.INTERNAL, f"internal error; incident {incident} has been logged")
            )

    @staticmethod
    def _method(method: str, allowed: tuple[str, ...]) -> None:
        if method not in allowed:
            raise YilianError(
                Category.NOT_ALLOWED, f"{method} is not allowed here (use {' or '.join(allowed)})"
            )

    async def _record(self, rec: AuditRecord) -> None:
        if self.audit is not None:
            try:
                await self.audit.record(rec)
            except Exception:
                log.exception("could not record a bulk access in the audit log")

    def _base(self, request: Request) -> str:
        host = request.headers.get("host", "localhost")
        scheme = request.headers.get("x-forwarded-proto", request.url.scheme)
        return f"{scheme}://{host}{request.scope.get('root_path', '')}/fhir"

    # --- export -----------------------------------------------------------------------------------

    @staticmethod
    def _require_async(request: Request) -> bool:
        prefer = request.headers.get("prefer", "")
        tokens = {t.strip().lower() for t in prefer.split(",")}
        if "respond-async" not in tokens:
            raise YilianError(
                Category.INVALID, "bulk requests are asynchronous: send 'Prefer: respond-async'"
            )
        accept = request.headers.get("accept", "")
        if accept and not any(
            a.split(";")[0].strip() in ("application/fhir+json", "application/json", "*/*", "")
            for a in accept.split(",")
        ):
            raise YilianError(Category.INVALID, f"Accept must be application/fhir+json, not {accept!r}")
        return "handling=lenient" in tokens

    async def _pairs(self, request: Request) -> list[tuple[str, str]]:
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
        if request.method.upper() != "POST":
            return pairs
        raw = await request.body()
        if not raw.strip():
            return pairs
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise YilianError(Category.INVALID, f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise YilianError(Category.INVALID, "the body of a $export POST must be a Parameters resource")
        for p in body.get("parameter") or []:
            if not isinstance(p, dict) or not isinstance(p.get("name"), str):
                raise YilianError(Category.INVALID, "every Parameters.parameter needs a name")
            value = next((v for k, v in p.items() if k.startswith("value")), None)
            if isinstance(value, dict) and "reference" in value:
                value = value["reference"]
            if not isinstance(value, str):
                raise YilianError(Category.INVALID, f"parameter {p['name']!r} needs a value")
            pairs.append((p["name"], value))
        return pairs

    async def kick_off_export(
        self, request: Request, principal: Principal, level: str, group_id: str | None, ip: str | None
    ) -> Response:
        lenient = self._require_async(request)
        if principal.break_glass:
            # Emergency access opens one patient's record for one caregiver; it never opens a
            # bulk copy of whatever the glass would show.
            raise YilianError(Category.FORBIDDEN, "break-the-glass access does not extend to bulk export")
        pairs = await self._pairs(request)
        patients = [v for k, v in pairs if k == "patient"]
        req = bulk.parse_request(level, [(k, v) for k, v in pairs if k != "patient"], lenient=lenient)
        if patients:
            if level == bulk.SYSTEM:
                raise YilianError(
                    Category.INVALID, "the patient parameter is for Patient/$export and Group/[id]/$export"
                )
            ids = []
            for ref in patients:
                parsed = parse_reference(ref)
                if parsed.type != "Patient" or not parsed.id:
                    raise YilianError(Category.INVALID, f"patient must reference a Patient, not {ref!r}")
                ids.append(parsed.id)
            req.members = sorted(set(ids))
        policy = policy_for(principal, self.db)
        types = bulk.allowed_types(policy, req)
        base = self._base(request)
        url = str(request.url)

        def work(uow: UnitOfWork) -> bulk.Job:
            ctx = FhirContext(base_url=base, settings=self.settings, policy=policy)
            if level == bulk.GROUP:
                assert group_id is not None
                members = bulk.group_members(uow, ctx, group_id)
                req.group_id = group_id
                req.members = sorted(set(members) & set(req.members)) if patients else members
            job = bulk.create_job(
                uow,
                kind="export",
                owner=principal.identity,
                caller=caller_of(principal),
                request=url,
                params=req.as_params(),
            )
            audit_record(
                uow,
                _audit(
                    principal,
                    query=url,
                    entity=f"bulk-job/{job.job_id}",
                    status=202,
                    ip=ip,
                    types=tuple(types[:50]),
                    patients=req.members,
                ),
            )
            return job

        job = await run_in_threadpool(transact, self.db, work)
        self.worker.wake()
        return Response(
            orjson.dumps(outcomes.information(f"export job {job.job_id} accepted")),
            status_code=202,
            media_type="application/fhir+json",
            headers={"Content-Location": f"{base}/$bulk-status/{job.job_id}"},
        )

    # --- import -----------------------------------------------------------------------------------

    async def kick_off_import(self, request: Request, principal: Principal, ip: str | None) -> Response:
        self._require_async(request)
        if not principal.is_operator or principal.break_glass:
            raise YilianError(
                Category.FORBIDDEN,
                "bulk import is the platform operator's task (a client without an institution)",
            )
        if not (principal.scopes.allows("c", "*") and principal.scopes.allows("u", "*")):
            raise YilianError(
                Category.FORBIDDEN, "bulk import needs system/*.cu (create and update of every type)"
            )
        job_id = str(uuid.uuid4())
        job_dir = self.directory / job_id
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        inputs: list[dict[str, str]] = []
        if content_type in NDJSON_TYPES:
            job_dir.mkdir(parents=True, exist_ok=True)
            spool = job_dir / "input.ndjson"
            size = 0
            with spool.open("wb") as fh:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > MAX_IMPORT_BODY:
                        fh.close()
                        shutil.rmtree(job_dir, ignore_errors=True)
                        raise YilianError(Category.TOO_LARGE, "the NDJSON body is larger than 4 GiB")
                    fh.write(chunk)
            if size == 0:
                shutil.rmtree(job_dir, ignore_errors=True)
                raise YilianError(Category.INVALID, "the request has no NDJSON body")
            inputs.append({"name": "body", "path": str(spool)})
        else:
            inputs = self._named_inputs(await request.body())
        base = self._base(request)
        url = str(request.url)

        def work(uow: UnitOfWork) -> bulk.Job:
            job = bulk.create_job(
                uow,
                kind="import",
                owner=principal.identity,
                caller=caller_of(principal),
                request=url,
                params={"inputs": inputs, "base": base},
                job_id=job_id,
            )
            audit_record(
                uow, _audit(principal, query=url, entity=f"bulk-job/{job.job_id}", status=202, ip=ip)
            )
            return job

        try:
            job = await run_in_threadpool(transact, self.db, work)
        except BaseException:
            shutil.rmtree(job_dir, ignore_errors=True)  # no job, so nothing may keep its spool
            raise
        self.worker.wake()
        return Response(
            orjson.dumps(outcomes.information(f"import job {job.job_id} accepted")),
            status_code=202,
            media_type="application/fhir+json",
            headers={"Content-Location": f"{base}/$bulk-status/{job.job_id}"},
        )

    def _named_inputs(self, raw: bytes) -> list[dict[str, str]]:
        """``input`` parameters naming NDJSON files under the import directory (``url`` relative to it)."""
        try:
            body = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError as exc:
            raise YilianError(Category.INVALID, f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise YilianError(
                Category.INVALID,
                "send the resources as an application/fhir+ndjson body, or a Parameters resource naming input files",
            )
        if self.import_dir is None:
            raise YilianError(
                Category.INVALID,
                "this server reads no import files (YILIAN_IMPORT_DIR is not set): send an NDJSON body",
            )
        inputs: list[dict[str, str]] = []
        for p in body.get("parameter") or []:
            if not isinstance(p, dict):
                continue
            name = p.get("name")
            if name == "inputFormat":
                fmt = p.get("valueCode") or p.get("valueString")
                if fmt not in bulk.NDJSON_FORMATS:
                    raise YilianError(
                        Category.INVALID, f"inputFormat {fmt!r} is not supported: use application/fhir+ndjson"
                    )
                continue
            if name != "input":
                raise YilianError(
                    Category.INVALID, f"$import does not take the parameter {name!r} (input, inputFormat)"
                )
            parts = {
                q.get("name"): next((v for k, v in q.items() if k.startswith("value")), None)
                for q in p.get("part") or []
                if isinstance(q, dict)
            }
            where = parts.get("url")
            if not isinstance(where, str) or not where:
                raise YilianError(
                    Category.INVALID, "every input needs a url part (a file under the import directory)"
                )
            target = (self.import_dir / where.removeprefix("file://")).resolve()
            if not target.is_relative_to(self.import_dir) or not target.is_file():
                raise YilianError(
                    Category.INVALID, f"input {where!r} is not a file under the import directory"
                )
            inputs.append({"name": where, "path": str(target)})
        if not inputs:
            raise YilianError(Category.INVALID, "name at least one input")
        return inputs

    # --- status, cancel, download -------------------------------------------------------------------

    def _own_job(self, principal: Principal, job_id: str) -> bulk.Job:
        job = bulk.load_job(self.db, job_id)
        if job is None or job.owner != principal.identity or job.state == bulk.CANCELLED:
            # Another client's job is as if it did not exist.
            raise YilianError(Category.NOT_FOUND, f"there is no bulk job {job_id}")
        return job

    def status(self, request: Request, principal: Principal, job_id: str) -> Response:
        job = self._own_job(principal, job_id)
        if job.state in (bulk.ACCEPTED, bulk.RUNNING):
            progress = f"{job.state}: {job.processed} resources" + (f" of {job.total}" if job.total else "")
            return Response(status_code=202, headers={"X-Progress": progress, "Retry-After": "2"})
        if job.state == bulk.FAILED:
            return _outcome(YilianError(Category.INTERNAL, f"the bulk job failed: {job.message}"))
        base = self._base(request)
        manifest: dict[str, Any] = {
            "transactionTime": us_to_instant(job.transaction_time),
            "request": job.request,
            "requiresAccessToken": True,
        }
        if job.kind == "export":
            manifest["output"] = [
                {
                    "type": f["type"],
                    "url": f"{base}/$bulk-file/{job.job_id}/{quote(f['file'])}",
                    "count": f["count"],
                }
                for f in job.output
            ]
        else:
            manifest["output"] = [{"type": o["type"], "count": o["count"]} for o in job.output]
        manifest["error"] = [
            {
                "type": e["type"],
                "url": f"{base}/$bulk-file/{job.job_id}/{quote(e['file'])}",
                "count": e.get("count"),
            }
            for e in job.errors
        ]
        headers = {"Expires": _http_date(job.expires)} if job.expires else None
        return Response(
            orjson.dumps(manifest), status_code=200, media_type="application/json", headers=headers
        )

    async def cancel(self, request: Request, principal: Principal, job_id: str, ip: str | None) -> Response:
        def work(uow: UnitOfWork) -> None:
            self._own_job(principal, job_id)
            bulk.cancel(uow, job_id)
            audit_record(
                uow, _audit(principal, query=str(request.url), entity=f"bulk-job/{job_id}", status=202, ip=ip)
            )

        await run_in_threadpool(transact, self.db, work)
        self.worker.wake()  # it removes the files (and stops the job if it is running)
        return Response(
            orjson.dumps(outcomes.information(f"bulk job {job_id} cancelled; its files are removed")),
            status_code=202,
            media_type="application/fhir+json",
        )

    async def download(
        self, request: Request, principal: Principal, job_id: str, name: str, ip: str | None
    ) -> Response:
        job = await run_in_threadpool(self._own_job, principal, job_id)
        files = {f["file"]: f for f in [*job.output, *job.errors] if "file" in f}
        if job.state != bulk.COMPLETED or name not in files:
            raise YilianError(Category.NOT_FOUND, f"bulk job {job_id} has no file {name!r}")
        path = self.directory / job_id / name
        if not path.is_file():
            raise YilianError(Category.NOT_FOUND, f"the file {name!r} of bulk job {job_id} has expired")
        await self._record(
            _audit(
                principal,
                query=str(request.url),
                entity=f"bulk-job/{job_id}/{name}",
                status=200,
                ip=ip,
                types=(str(files[name]["type"]),),
                patients=files[name].get("patients") or (),
                more_patients=bool(files[name].get("more_patients")),
            )
        )
        return FileResponse(path, media_type=NDJSON)


def _http_date(us: int) -> str:
    import email.utils

    return email.utils.formatdate(us / 1_000_000, usegmt=True)
