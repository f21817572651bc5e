"""Ingest jobs: uploads and syncs run in one background thread, never in a request, never in the
generation slots, and survive the server stopping half-way.

On disk, under ``server/`` in the data dir:

* ``staging/<job>/``: an upload's files as received (fsynced before the 202 answer);
* ``docs/<kb>/``: the uploaded originals a knowledge base indexes (and the server serves back);
* ``jobs/<job>.json``: each job's state, rewritten as it moves.

A job moves its staged files into ``docs/<kb>/`` (a rename on one file system: no copy to lose
half of) and ingests that folder; ingest skips unchanged files cheaply and rolls back a file an
earlier run left half-written. So when the server stops mid-job, the next start finds the job
file saying "queued" or "running" and simply runs it again; a job that was already retried once
and still did not finish is reported as "interrupted" instead of looping.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import secrets
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger("localrag.server")

FINAL = ("done", "failed", "interrupted")
MAX_ATTEMPTS = 2


@dataclass
class Job:
    id: str
    kb: str
    kind: str  # upload | sync
    state: str = "queued"
    files: list[str] = field(default_factory=list)
    files_total: int = 0
    files_done: int = 0
    chunks: int = 0
    current: str = ""
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: list[dict] = field(default_factory=list)
    error: str | None = None
    created: float = field(default_factory=time.time)
    finished: float | None = None
    attempts: int = 0
    version: int = 0  # bumped on every change (SSE sends a new event per version)

    def public(self) -> dict:
        data = asdict(self)
        data.pop("attempts")
        return data


class Jobs:
    """The job table and its worker thread, for one ``LocalRAG``."""

    def __init__(self, rag, home: Path):
        self.rag = rag
        self.root = Path(home) / "server"
        self.jobs_dir = self.root / "jobs"
        self.staging_dir = self.root / "staging"
        self.docs_root = self.root / "docs"
        for d in (self.jobs_dir, self.staging_dir, self.docs_root):
            d.mkdir(parents=True, exist_ok=True)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._todo: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._last_save = 0.0
        self.stopping = False

    # -- paths ----------------------------------------------------------------------------------

    def docs_dir(self, kb: str) -> Path:
        return self.docs_root / kb

    def new_staging(self) -> tuple[str, Path]:
        job_id = secrets.token_hex(6)
        path = self.staging_dir / job_id
        path.mkdir(parents=True)
        return job_id, path

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> list[Job]:
        """Load earlier jobs, queue again the ones a stopped server left, start the worker.
        Returns the jobs found unfinished (for the start-up log)."""
        unfinished = []
        for path in sorted(self.jobs_dir.glob("*.json"), key=lambda p: p.stat().st_mtime):
            try:
                job = Job(**json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                log.warning("ignoring unreadable job file %s", path.name)
                continue
            self._jobs[job.id] = job
            if job.state in FINAL:
                continue
            unfinished.append(job)
            if job.attempts >= MAX_ATTEMPTS:
                self._finish(job, "interrupted", "the server stopped while this job ran, twice; upload again to retry")
            else:
                job.state = "queued"
                self._save(job)
                self._todo.put(job.id)
        self._thread = threading.Thread(target=self._work, name="localrag-ingest", daemon=True)
        self._thread.start()
        return unfinished

    def stop(self) -> None:
        """No new jobs start; a running one that fails because the server is closing stays
        "running" on disk, so the next start runs it again."""
        self.stopping = True
        self._todo.put(None)

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(1 for j in self._jobs.values() if j.state in ("queued", "running"))

    # -- submitting ------------------------------------------------------------------------------

    def submit_upload(self, job_id: str, kb: str, files: list[str]) -> Job:
        job = Job(job_id, kb, "upload", files=list(files), files_total=len(files))
        return self._submit(job)

    def submit_sync(self, kb: str) -> Job:
        return self._submit(Job(secrets.token_hex(6), kb, "sync"))

    def _submit(self, job: Job) -> Job:
        with self._lock:
            self._jobs[job.id] = job
        self._save(job)
        self._todo.put(job.id)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    # -- the worker -----------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job_id = self._todo.get()
            if job_id is None:
                return
            job = self.get(job_id)
            if job is None or job.state in FINAL:
                continue
            try:
                if not self._work_on(job):
                    return
            except OSError as exc:  # its record could not be written (a full disk): the job says so, the worker goes on
                log.error("ingest job %s: its record could not be written", job.id, exc_info=exc)
                self._show(job, state="failed", error=f"the server could not write this job's record: {exc}",
                           finished=time.time(), current="")

    def _work_on(self, job: Job) -> bool:
        """Runs one job to its end; False when the server is closing under it."""
        job.attempts += 1
        self._save(job, state="running")
        try:
            report = self._run(job)
        except Exception as exc:  # noqa: BLE001 - a failed job says why; the server goes on
            from localrag.errors import LocalragError

            if self.stopping:
                return False  # the KB was closed under it: resumed at the next start
            if isinstance(exc, LocalragError):
                log.warning("ingest job %s failed: %s", job.id, exc.message)
            else:
                log.error("ingest job %s failed", job.id, exc_info=exc)
            self._finish(job, "failed", getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}")
            return True
        summary = report.summary()
        job.added, job.updated, job.unchanged = summary["added"], summary["updated"], summary["unchanged"]
        job.removed = summary["removed"]
        job.skipped = [{"source": o.source, "reason": o.reason} for o in report.outcomes if o.status == "skipped"]
        job.files_done = job.files_total = max(job.files_total, len(report.outcomes))
        self._finish(job, "done", None)
        return True

    def _run(self, job: Job):
        if job.kind == "upload":
            self._move_staged(job)
            return self.rag.ingest([self.docs_dir(job.kb)], kb=job.kb, progress=lambda p: self._progress(job, p))
        roots = [Path(r) for r in self.rag.kb_info(job.kb).roots]
        if self.docs_dir(job.kb).is_dir() and self.docs_dir(job.kb) not in roots:
            roots.append(self.docs_dir(job.kb))
        return self.rag.sync(roots, kb=job.kb, progress=lambda p: self._progress(job, p))

    def _move_staged(self, job: Job) -> None:
        """Staged files into the KB's documents folder. A rerun after a crash finds some already
        moved: those are in place, and only the rest move."""
        staged = self.staging_dir / job.id
        target_root = self.docs_dir(job.kb)
        for rel in job.files:
            src = staged.joinpath(*rel.split("/"))
            if src.exists():
                dst = target_root.joinpath(*rel.split("/"))
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(src, dst)
        shutil.rmtree(staged, ignore_errors=True)

    def _progress(self, job: Job, p) -> None:
        job.files_total = max(p.files_total, job.files_total if p.phase == "scan" else 0)
        job.files_done, job.chunks, job.current = p.files_done, p.chunks, p.current or ""
        now = time.monotonic()
        if now - self._last_save > 0.5:  # the file is for restarts; memory serves the readers
            self._last_save = now
            self._save(job)
        else:
            job.version += 1

    def _finish(self, job: Job, state: str, error: str | None) -> None:
        self._save(job, state=state, error=error, finished=time.time(), current="")

    def _save(self, job: Job, **changes) -> None:
        """Writes the job with `changes` applied, and only then shows them to readers: a client
        that saw "running" can rely on a restart finding "running" too."""
        data = {**asdict(job), **changes, "version": job.version + 1}
        path = self.jobs_dir / f"{job.id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)
        self._show(job, **changes)

    @staticmethod
    def _show(job: Job, **changes) -> None:
        """Applies ``changes`` for readers, the state last: one that sees a final state sees the
        rest of it too."""
        for name, value in changes.items():
            if name != "state":
                setattr(job, name, value)
        job.version += 1
        if "state" in changes:
            job.state = changes["state"]
