"""A job store written before ControlNet jobs existed (no ``controlnet`` column) opens, gains the column
(checked through SQLite's own PRAGMA table_info), keeps its jobs, and round-trips a ControlNet job."""

from __future__ import annotations

import sqlite3
import time

from depth2img.server.jobs import Job, JobStore, new_id

OLD_SCHEMA = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
    model TEXT NOT NULL, depth_model TEXT, request TEXT NOT NULL, inputs TEXT NOT NULL, created REAL NOT NULL,
    started REAL, finished REAL, error TEXT, error_status INTEGER, seeds TEXT NOT NULL DEFAULT '[]',
    infotexts TEXT NOT NULL DEFAULT '[]', warnings TEXT NOT NULL DEFAULT '[]', n_images INTEGER NOT NULL DEFAULT 0,
    has_depth INTEGER NOT NULL DEFAULT 0, source TEXT NOT NULL DEFAULT 'api'
);
"""


def test_an_old_store_gains_the_controlnet_column_and_keeps_its_jobs(tmp_path):
    old_id = new_id()
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        db.executescript(OLD_SCHEMA)
        db.execute("INSERT INTO jobs (id, kind, state, model, request, inputs, created) VALUES (?, 'generate', "
                   "'done', 'tiny', '{}', '[]', 1.0)", (old_id,))
    store = JobStore(tmp_path)
    try:
        with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
            assert "controlnet" in {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        assert store.get(old_id).controlnet is None and store.get(old_id).model == "tiny"
        job = Job(id=new_id(), kind="generate", state="queued", model="tiny-sd15", depth_model=None, request={},
                  inputs=[], created=time.time(), controlnet="tiny-controlnet")
        store.add(job, {})
        assert store.get(job.id).controlnet == "tiny-controlnet"
    finally:
        store.close()
