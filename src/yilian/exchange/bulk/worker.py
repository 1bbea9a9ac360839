"""The background worker that runs bulk jobs inside the server process.

One daemon thread per server: it claims the oldest waiting job (or one a stopped server left
running — its heartbeat went stale), runs it, and between jobs removes expired ones with their
files. Jobs live in the database, so a restart loses none: an export is simply written again
from the start (its files are replaced), an import's chunks are idempotent updates by id.
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yilian.db import Database
from yilian.exchange.bulk import jobs
from yilian.exchange.bulk.export import ExportRequest, write_export
from yilian.fhir.access import AccessPolicy
from yilian.fhir.interactions.context import FhirSettings
from yilian.kernel.errors import YilianError

log = logging.getLogger("yilian.exchange.bulk")

DAY_US = 24 * 3600 * 1_000_000


class BulkWorker:
    def __init__(
        self,
        db: Database,
        directory: Path,
        *,
        policy_for: Callable[[dict[str, Any]], AccessPolicy],
        settings: FhirSettings | None = None,
        retention_us: int = DAY_US,
        stale_after_us: int = 30_000_000,
        poll_s: float = 2.0,
    ) -> None:
        self.db = db
        self.directory = directory
        self.policy_for = policy_for
        self.settings = settings or FhirSettings()
        self.retention_us = retention_us
        self.stale_after_us = stale_after_us
        self.poll_s = poll_s
        self.name = f"worker-{uuid.uuid4().hex[:12]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="bulk-jobs", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def wake(self) -> None:
        """A job was kicked off: look now rather than at the next poll."""
        self._wake.set()

    def job_dir(self, job_id: str) -> Path:
        return self.directory / job_id

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_pending(limit=1)
            except Exception:  # the worker outlives one bad job or a database blip
                log.exception("bulk worker iteration failed")
                worked = 0
            if not worked:
                self._wake.wait(self.poll_s)
                self._wake.clear()

    # --- work --------------------------------------------------------------------------------

    def run_pending(self, limit: int | None = None) -> int:
        """Remove expired jobs, then run waiting ones (at most ``limit``); how many ran."""
        self.sweep()
        ran = 0
        while limit is None or ran < limit:
            if self._stop.is_set():
                break
            job = jobs.claim_next(self.db, self.name, stale_after_us=self.stale_after_us)
            if job is None:
                break
            self.run(job)
            ran += 1
        return ran

    def sweep(self) -> None:
        for job_id in jobs.due_for_removal(self.db):
            shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
            jobs.remove(self.db, job_id)

    def run(self, job: jobs.Job) -> None:
        directory = self.job_dir(job.job_id)

        def keep_going(processed: int, total: int | None = None) -> bool:
            return jobs.heartbeat(self.db, job.job_id, self.name, processed=processed, total=total)

        expires = jobs.now_us() + self.retention_us
        try:
            if job.kind == "export":
                policy = self.policy_for(job.caller)
                # A restarted export starts over: whatever a stopped run left is replaced.
                shutil.rmtree(directory, ignore_errors=True)
                result = write_export(
                    self.db, ExportRequest.from_params(job.params), policy, directory, keep_going=keep_going
                )
                if result is None:
                    shutil.rmtree(directory, ignore_errors=True)
                    return
                jobs.complete(
                    self.db,
                    job.job_id,
                    self.name,
                    output=result.files,
                    errors=[],
                    processed=result.exported,
                    expires=expires,
                )
            else:
                from yilian.exchange.bulk.importer import run_import_job

                outcome = run_import_job(
                    self.db, job, self.policy_for(job.caller), self.settings, directory, keep_going=keep_going
                )
                if outcome is None:
                    return
                jobs.complete(
                    self.db,
                    job.job_id,
                    self.name,
                    output=outcome.output,
                    errors=outcome.errors,
                    processed=outcome.processed,
                    expires=expires,
                )
        except YilianError as err:
            jobs.fail(self.db, job.job_id, self.name, err.message, expires=expires)
        except Exception as exc:
            log.exception("bulk job %s failed", job.job_id)
            jobs.fail(
                self.db, job.job_id, self.name, f"internal error: {type(exc).__name__}", expires=expires
            )
