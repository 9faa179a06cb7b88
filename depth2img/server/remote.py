"""The server's worker for ``--executor ray``: one dispatcher thread hands queued jobs to N Ray actors.

Same interface as :class:`~.worker.Worker` (start, submit, cancel, interrupt, stop, current,
progress_of, alive), so the routes keep A1111's semantics unchanged: the API process keeps the job
store and the queue; each :class:`~.actor.JobActor` runs one job at a time and returns the pictures,
which this process writes and records (store rows change only here).

- Dispatch: a job goes to a free live actor (one job per actor, so progress and stop name one job).
  Up to N jobs run at once; ``current`` (what /sdapi/v1/progress, /interrupt and /skip act on, A1111's
  one "current job") is the oldest running job; ``progress_of(job)`` serves each job's native events.
- Progress: every ``POLL`` seconds the dispatcher asks each busy actor ``progress(job)`` and copies
  step/total/latents into the job's :class:`~.worker.Progress`.
- Interrupt, skip, cancel, ``--job-timeout``: set ``Progress.cancel`` as the local worker does; the
  dispatcher forwards it once with ``actor.stop(job, reason)``; the actor's step callback returns
  False at the next step (the pipeline's own interrupt mechanism).
- A worker that dies mid-job (killed process, lost node: ``RayActorError``) has its job given to
  another actor once; a second death fails it with that reason (503). The dead actor restarts by itself
  (``max_restarts=-1``) and rejoins once it answers a ping. With no live actor for ``--job-timeout``
  seconds, waiting jobs fail with a reason instead of waiting forever.

What it fills: Ray Serve would replace the whole HTTP stack and needs a shared store for A1111's
process-global /progress and /interrupt (scale.md §0.3); Ray's ``ActorPool`` stops at the first actor
failure and has no per-task side channel for progress or stop.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from typing import Any

from ..executors.ray import ActorHealth, _passed_env, require_ray
from ..outputs import save_image
from .actor import JobActor, JobOutcome, JobPayload
from .jobs import JobStore
from .registry import Registry
from .settings import Settings
from .worker import JobControl, Progress

log = logging.getLogger("depth2img.server")

POLL = 0.1  # seconds between progress polls / waits of the dispatcher
REPORTED = 1000  # finished jobs whose reported steps are kept
MAX_DEATHS = 2  # a job whose worker died this many times is failed (retried once on another actor)


class RayWorker(JobControl):
    def __init__(self, settings: Settings, store: JobStore, registry: Registry) -> None:
        self.settings, self.store, self.registry = settings, store, registry
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.running: dict[str, Progress] = {}  # job id -> progress, for every job on an actor
        self.on_actor: dict[str, int] = {}  # job id -> actor index (tests kill that actor)
        self.actors: list[Any] = []
        self.last_finished: float = 0.0
        self.deaths: collections.Counter[str] = collections.Counter()
        self.retried: list[str] = []  # jobs given to another actor after theirs died (logs, tests)
        # (last step, total) each finished job reported, newest REPORTED kept: an interrupted job shows it stopped early
        self.reported: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        self._started_ray = False

    # -- the pool ------------------------------------------------------------------------------------

    def _start_pool(self) -> None:
        ray = require_ray()
        options = self.settings.executor
        if not ray.is_initialized():
            ray.init(address=options.ray_address, log_to_driver=False, include_dashboard=False,
                     runtime_env={"env_vars": _passed_env()})
            self._started_ray = True
        resources = ray.cluster_resources()
        count = options.workers or (max(1, int(resources.get("GPU", 0) // options.gpus_per_worker))
                                    if options.gpus_per_worker else max(1, int(resources.get("CPU", 1))))
        remote = ray.remote(JobActor).options(num_cpus=1, num_gpus=options.gpus_per_worker or 0, max_restarts=-1,
                                              max_task_retries=0, max_concurrency=4)
        cache = str(self.settings.cache_dir.resolve())
        extras = tuple(str(p.resolve()) if p else None
                       for p in (self.settings.styles_file, self.settings.embeddings_dir, self.settings.lora_dir))
        self.actors = [remote.remote(self.settings.device, self.settings.dtype, cache, 1, extras, self.settings.low_memory,
                                     self.settings.compile)
                       for _ in range(count)]
        log.info("serving with %d Ray actors", count)

    def _close_pool(self) -> None:
        ray = require_ray()
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already gone with its node
                pass
        self.actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    # -- control (the local Worker's interface) ----------------------------------------------------------

    def start(self) -> None:
        for job_id in self.store.recover():
            self._queue.put(job_id)
        self._start_pool()
        self._thread = threading.Thread(target=self._loop, name="depth2img-ray-dispatcher", daemon=True)
        self._thread.start()

    def submit(self, job_id: str) -> None:
        self._queue.put(job_id)

    @property
    def current(self) -> Progress | None:
        """The oldest running job (A1111 has one current job: /progress, /interrupt and /skip act on it)."""
        running = list(self.running.values())
        return min(running, key=lambda p: p.started) if running else None

    def progress_of(self, job_id: str) -> Progress | None:
        return self.running.get(job_id)

    def stop(self, grace: float | None = None) -> None:
        """Stop taking jobs; running ones may finish within ``grace`` s, else they are stopped. Queued jobs
        stay queued for the next start. Then the actors are released."""
        self._stopping.set()
        self._queue.put(None)
        grace = self.settings.shutdown_grace if grace is None else grace
        if self._thread is not None:
            self._thread.join(grace)
            for progress in list(self.running.values()):
                progress.cancel = progress.cancel or "the server shut down while this job was running"
            self._thread.join()
        self._close_pool()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the dispatcher ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        ray = require_ray()
        waiting: collections.deque[str] = collections.deque()  # retries go first
        busy: dict[Any, tuple[int, str]] = {}  # run ref -> (actor index, job id)
        health = ActorHealth(self.actors, retry_pause=POLL)
        free = list(range(len(self.actors)))
        forwarded: set[str] = set()  # jobs whose stop reason was sent to their actor
        while not (self._stopping.is_set() and not busy):
            while True:  # the HTTP side's submissions
                try:
                    job_id = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job_id is not None and not self._stopping.is_set():
                    waiting.append(job_id)
            while free and waiting and not self._stopping.is_set():
                job_id = waiting.popleft()
                index = free.pop(0)
                ref = self._dispatch(job_id, self.actors[index])
                if ref is None:
                    free.insert(0, index)
                else:
                    busy[ref] = (index, job_id)
                    self.on_actor[job_id] = index
            if health.seconds_without_live() > self.settings.job_timeout and waiting:
                while waiting:
                    job_id = waiting.popleft()
                    self._end(job_id, "failed", f"no live Ray worker for {self.settings.job_timeout:g} s", 503)
            if not busy and not health.probes:
                try:  # idle: block on the queue instead of spinning
                    job_id = self._queue.get(timeout=POLL)
                    if job_id is not None and not self._stopping.is_set():
                        waiting.append(job_id)
                except queue.Empty:
                    pass
                continue
            done, _ = ray.wait(list(busy) + list(health.probes), num_returns=1, timeout=POLL)
            for ref in done:
                if ref in health.probes:
                    rejoined = health.answered(ref)
                    if rejoined is not None:
                        free.append(rejoined)
                    continue
                index, job_id = busy.pop(ref)
                self.on_actor.pop(job_id, None)
                forwarded.discard(job_id)
                try:
                    outcome: JobOutcome = ray.get(ref)
                except ray.exceptions.RayActorError as error:  # the worker died: another actor, once
                    health.lost(index)
                    self.deaths[job_id] += 1
                    progress = self.running.get(job_id)
                    if self.deaths[job_id] >= MAX_DEATHS:
                        self._end(job_id, "failed", f"its Ray worker died {self.deaths[job_id]} times "
                                  f"({type(error).__name__}); not retried again", 503)
                    elif progress is not None and progress.cancel is not None:
                        self._end(job_id, "cancelled" if progress.cancel in ("cancelled", "interrupted", "skipped")
                                  else "failed", progress.cancel, 503)
                    else:
                        log.warning("job %s: its Ray worker died (%s); retrying it on another worker", job_id,
                                    type(error).__name__)
                        if progress is not None:
                            progress.step = 0
                        self.retried.append(job_id)
                        waiting.appendleft(job_id)
                    continue
                except Exception as error:  # the actor's code raised (it maps errors itself: a bug)
                    log.error("job %s: the Ray worker raised %s", job_id, error)
                    self._end(job_id, "failed", f"internal error ({type(error).__name__}); the server log has the details", 500)
                    free.append(index)
                    continue
                free.append(index)
                self._record(job_id, outcome)
            self._poll(ray, busy, forwarded)
        for job_id in waiting:  # retries of dead workers' jobs (rows "running"); first tries stay queued for the next start
            if job_id in self.running:
                self._end(job_id, "failed", "the server shut down while this job waited for another Ray worker", 503)

    def _dispatch(self, job_id: str, actor: Any) -> Any:
        """Send ``job_id`` to ``actor``; None when it did not start (cancelled meanwhile, bad model id)."""
        progress = self.running.get(job_id)
        if progress is None:  # a first try (a retry is already running in the store)
            if not self.store.start(job_id):
                return None
            job = self.store.get(job_id)
            assert job is not None
            progress = self.running[job_id] = Progress(job_id, started=job.started or time.time())
        else:
            job = self.store.get(job_id)
            assert job is not None
        if progress.cancel is not None:
            self._end(job_id, "cancelled" if progress.cancel in ("cancelled", "interrupted", "skipped") else "failed",
                      progress.cancel, 503)
            return None
        try:
            entries, cns = self.registry.entries, self.registry.controlnets
            key = (str(entries[self.registry.resolve(job.model)].path),
                   str(entries[self.registry.resolve(job.depth_model)].path) if job.depth_model else None,
                   str(cns[job.controlnet].path) if job.controlnet else None)
            payload = JobPayload(job.id, job.kind, dict(job.request), self.store.read_inputs(job), key)
        except (KeyError, OSError, ValueError) as error:
            self._end(job_id, "failed", self._scrub(f"cannot start the job: {error}"), 500)
            return None
        return actor.run.remote(payload)

    def _poll(self, ray: Any, busy: dict[Any, tuple[int, str]], forwarded: set[str]) -> None:
        """Copy each busy actor's progress; forward stop reasons (interrupt, cancel, timeout) once."""
        polls = {self.actors[index].progress.remote(job_id): job_id for index, job_id in busy.values()}
        for index, job_id in busy.values():
            progress = self.running.get(job_id)
            if progress is None:
                continue
            if progress.cancel is None and time.time() > progress.started + self.settings.job_timeout:
                progress.cancel = f"timed out after {self.settings.job_timeout:g} s (--job-timeout)"
            if progress.cancel is not None and job_id not in forwarded:
                self.actors[index].stop.remote(job_id, progress.cancel)
                forwarded.add(job_id)
        if not polls:
            return
        ready, _ = ray.wait(list(polls), num_returns=len(polls), timeout=POLL)
        for ref in ready:
            try:
                answer = ray.get(ref)
            except Exception:  # the actor died: its run ref reports that
                continue
            progress = self.running.get(polls[ref])
            if answer is not None and progress is not None:
                progress.step, progress.total, progress.latents = answer

    def _record(self, job_id: str, outcome: JobOutcome) -> None:
        """Write the actor's pictures and the row (files first, as the local worker does)."""
        self.reported[job_id] = (outcome.steps, outcome.total)
        while len(self.reported) > REPORTED:
            self.reported.popitem(last=False)
        if outcome.state != "done":
            self._end(job_id, outcome.state, self._scrub(outcome.error or outcome.state), outcome.status)
            return
        try:
            if outcome.depth_preview is not None:  # a depth job
                save_image(outcome.depth_preview, self.store.image_path(job_id, 0))
                save_image(outcome.depth, self.store.depth_path(job_id))
                self.store.finish(job_id, seeds=[], infotexts=[], warnings=[], n_images=1, has_depth=True)
            else:
                for i, (image, infotext) in enumerate(zip(outcome.images, outcome.infotexts)):
                    save_image(image, self.store.image_path(job_id, i), infotext=infotext)
                if outcome.depth is not None:
                    save_image(outcome.depth, self.store.depth_path(job_id))
                self.store.finish(job_id, seeds=outcome.seeds, infotexts=outcome.infotexts, warnings=outcome.warnings,
                                  n_images=len(outcome.images), has_depth=outcome.depth is not None)
        except OSError as error:
            self._end(job_id, "failed", self._scrub(f"cannot write the result: {error}"), 500)
            return
        self._end(job_id, None, None, 200)

    def _end(self, job_id: str, state: str | None, error: str | None, status: int) -> None:
        """Fail/cancel the row (``state`` None: already finished) and release the job's progress."""
        if state is not None:
            self.store.fail(job_id, error or state, state, status)
        progress = self.running.pop(job_id, None)
        self.deaths.pop(job_id, None)
        if progress is not None:
            progress.stopped.set()
        self.last_finished = time.time()

    def _scrub(self, message: str) -> str:
        """Local paths never reach a client (the local worker's rule)."""
        from .worker import Worker

        return Worker._scrub(self, message)  # type: ignore[arg-type]  # reads only settings and registry
