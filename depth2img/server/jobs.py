"""The job store: one SQLite database in WAL mode plus one folder of files per job, under ``--outputs``.

Nothing is lost across a restart (issue 9): a job's request and its decoded-input bytes are written
before the job is accepted, its result files are written atomically (``outputs.atomic_output``) before
the row says "done", so a "done" row always has complete files. On start, :meth:`JobStore.recover`
marks a job left "running" by a dead process as failed ("interrupted by restart") and returns the
queued ones, oldest first, to be run. Ids are server-generated (uuid4 hex) and every file name is
ours, so no client string ever becomes a path. One connection guarded by a lock: the worker and the
HTTP threads write little and rarely at once; WAL lets readers of other processes see committed rows.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..outputs import atomic_write_bytes

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")
INTERRUPTED = "interrupted by restart: the server stopped while this job was running"
_ID = re.compile(r"[0-9a-f]{32}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    model TEXT NOT NULL,
    depth_model TEXT,
    request TEXT NOT NULL,
    inputs TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    error_status INTEGER,
    seeds TEXT NOT NULL DEFAULT '[]',
    infotexts TEXT NOT NULL DEFAULT '[]',
    warnings TEXT NOT NULL DEFAULT '[]',
    n_images INTEGER NOT NULL DEFAULT 0,
    has_depth INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL DEFAULT 'api',
    controlnet TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
"""


@dataclass
class Job:
    id: str
    kind: str  # "generate" | "depth"
    state: str
    model: str
    depth_model: str | None
    request: dict[str, Any]  # GenerationRequest fields without the images (JSON types)
    inputs: list[str]  # image fields whose bytes are stored as files
    created: float
    seq: int = 0
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    error_status: int | None = None  # the HTTP status the error maps to (for /sdapi's synchronous calls)
    seeds: list[int] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    n_images: int = 0
    has_depth: bool = False
    source: str = "api"  # "api" (native) or "sdapi"
    controlnet: str | None = None  # a ControlNet name of the registry (sd-webui-controlnet units)


def valid_id(job_id: str) -> bool:
    """Only our own ids name a job: anything else (``..``, slashes, NUL...) is simply not found."""
    return bool(_ID.fullmatch(job_id))


def new_id() -> str:
    return uuid.uuid4().hex


class JobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "controlnet" not in columns:  # a store written before ControlNet jobs existed
            self._db.execute("ALTER TABLE jobs ADD COLUMN controlnet TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- files -------------------------------------------------------------------------------------

    def folder(self, job_id: str) -> Path:
        assert valid_id(job_id)
        return self.jobs_dir / job_id

    def input_path(self, job_id: str, name: str) -> Path:
        return self.folder(job_id) / f"input-{name}.bin"

    def image_path(self, job_id: str, index: int) -> Path:
        return self.folder(job_id) / f"image-{index}.png"

    def depth_path(self, job_id: str) -> Path:
        return self.folder(job_id) / "depth.png"

    def read_inputs(self, job: Job) -> dict[str, bytes]:
        return {name: self.input_path(job.id, name).read_bytes() for name in job.inputs}

    # -- rows --------------------------------------------------------------------------------------

    def add(self, job: Job, inputs: dict[str, bytes]) -> Job:
        """Write the inputs, then the row: a row never points at missing input files."""
        for name, data in inputs.items():
            atomic_write_bytes(self.input_path(job.id, name), data)
        job.inputs = sorted(inputs)
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO jobs (id, kind, state, model, depth_model, request, inputs, created, seeds, source, "
                "controlnet) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.kind, job.state, job.model, job.depth_model, json.dumps(job.request),
                 json.dumps(job.inputs), job.created, json.dumps(job.seeds), job.source, job.controlnet))
            job.seq = int(cur.lastrowid or 0)
        return job

    def get(self, job_id: str) -> Job | None:
        if not valid_id(job_id):
            return None
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list(self, offset: int = 0, limit: int = 50, state: str | None = None) -> tuple[list[Job], int]:
        """Newest first."""
        where, args = ("WHERE state = ?", (state,)) if state else ("", ())
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs {where}", args).fetchone()[0]
            rows = self._db.execute(f"SELECT * FROM jobs {where} ORDER BY seq DESC LIMIT ? OFFSET ?",
                                    (*args, limit, offset)).fetchall()
        return [_job(r) for r in rows], total

    def count(self, state: str) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (state,)).fetchone()[0]

    def position(self, job: Job) -> int:
        """Queued jobs ahead of ``job``."""
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND seq < ?",
                                    (job.seq,)).fetchone()[0]

    def queued_ids(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq")]

    def start(self, job_id: str) -> bool:
        """queued -> running; False if it was cancelled (or taken) meanwhile."""
        return self._transition(job_id, "queued", "running", started=time.time())

    def cancel_queued(self, job_id: str) -> bool:
        return self._transition(job_id, "queued", "cancelled", finished=time.time(), error="cancelled before it started")

    def finish(self, job_id: str, *, seeds: list[int], infotexts: list[str], warnings: list[str], n_images: int,
               has_depth: bool) -> None:
        """running -> done, after the result files were written."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET state = 'done', finished = ?, seeds = ?, infotexts = ?, warnings = ?, n_images = ?, "
                "has_depth = ? WHERE id = ? AND state = 'running'",
                (time.time(), json.dumps(seeds), json.dumps(infotexts), json.dumps(warnings), n_images,
                 int(has_depth), job_id))

    def fail(self, job_id: str, error: str, state: str = "failed", status: int = 500) -> None:
        assert state in ("failed", "cancelled")
        with self._lock:
            self._db.execute("UPDATE jobs SET state = ?, finished = ?, error = ?, error_status = ? WHERE id = ? AND "
                             "state IN ('queued', 'running')", (state, time.time(), error, status, job_id))

    def recover(self) -> list[str]:
        """After a restart: running -> failed (interrupted); the queued ids, oldest first."""
        with self._lock:
            self._db.execute("UPDATE jobs SET state = 'failed', finished = ?, error = ?, error_status = 503 "
                             "WHERE state = 'running'",
                             (time.time(), INTERRUPTED))
        return self.queued_ids()

    def _transition(self, job_id: str, old: str, new: str, **values: Any) -> bool:
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._lock:
            cur = self._db.execute(f"UPDATE jobs SET state = ?{', ' if sets else ''}{sets} WHERE id = ? AND state = ?",
                                   (new, *values.values(), job_id, old))
            return cur.rowcount == 1


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"], kind=row["kind"], state=row["state"], model=row["model"], depth_model=row["depth_model"],
        request=json.loads(row["request"]), inputs=json.loads(row["inputs"]), created=row["created"], seq=row["seq"],
        started=row["started"], finished=row["finished"], error=row["error"], error_status=row["error_status"], seeds=json.loads(row["seeds"]),
        infotexts=json.loads(row["infotexts"]), warnings=json.loads(row["warnings"]), n_images=row["n_images"],
        has_depth=bool(row["has_depth"]), source=row["source"], controlnet=row["controlnet"])
