"""The Ray executor: a pool of long-lived Ray actors, each loading the model once, fed one item per call
by this process. Ray is imported lazily: ``pip install 'depth2img[ray]'``.

Why an explicit pool rather than Ray Data's ``map_batches`` (scale.md §1.2): Ray Data retries a dead
actor's task on *that* actor once it restarts, which waits for new resources when the lost node's CPU
or GPU is gone (scale.md §1.7-6 records a fixed pool stalling); here the driver gives a lost item to a
live actor at once. The pool also outlives one run, so a server (or a test) reuses loaded actors. What it fills:
Ray's ``ActorPool`` stops at the first actor failure; this one requeues.

- Each actor loads :class:`ModelSpec` itself (the CLI's model arguments: weights on a path or hub id
  every node can reach) and runs one item per call through :func:`work.run_item`, so an item's pixels
  never depend on what else its actor ran. It writes the pictures atomically under the driver's names.
- Results come back one per item, in completion order; the driver writes the manifest and moves the
  progress bar as they arrive.
- Failures: a bad input is a ``failed`` result (never an exception): it fails its item only. A worker
  that dies (killed process, lost node) has its items requeued to the live actors, at most
  ``max_item_retries`` times (an item that kills every worker is failed with that reason, never hangs);
  the dead actor restarts by itself (``max_restarts=-1``) and rejoins once it answers. The driver
  records each item once; a requeued item is regenerated under the same name (same bytes; the atomic
  replace leaves one file). An unexpected error in a worker fails that item with the error's last line.
- Inputs and outputs live on storage every node sees at the same path (one machine, or a shared
  filesystem on a cluster).
"""

from __future__ import annotations

import collections
import os
import pickle
import time
from collections.abc import Iterable, Iterator
from typing import Any

from .base import ItemResult, ModelSpec, WorkItem
from .work import run_item

IN_FLIGHT_PER_ACTOR = 2  # one running, one queued on the actor: no idle gap between items
NO_WORKER_TIMEOUT = 600.0  # seconds without any live actor before the remaining items fail


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        from ..errors import InvalidRequestError

        raise InvalidRequestError("--executor ray needs Ray: pip install 'depth2img[ray]'") from None
    return ray


class _Worker:
    """One actor: loads the model once (in ``__init__``), then makes one item per call."""

    def __init__(self, spec: ModelSpec, threads: int | None) -> None:
        import ray

        if threads:  # this actor's own process: its thread count is ours to set
            import torch

            torch.set_num_threads(threads)
        self.pipe = spec.load()
        self.node = ray.get_runtime_context().get_node_id()

    def ready(self) -> str:
        return self.node

    def run(self, blob: bytes) -> bytes:
        return pickle.dumps(run_item(lambda: self.pipe, pickle.loads(blob), worker=self.node))


class RayExecutor:
    """``workers`` actors (default: one per GPU with ``gpus_per_worker``, else one per CPU of the cluster)
    on the cluster at ``address`` (``auto``, ``ray://HOST:PORT``; None: a Ray already initialised in this
    process, else ``$RAY_ADDRESS``, else a local Ray started here and shut down by :meth:`close`)."""

    def __init__(self, spec: ModelSpec, *, address: str | None = None, workers: int | None = None,
                 gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, threads: int | None = None,
                 max_item_retries: int = 3) -> None:
        self.spec = spec
        self.address = address
        self.workers = workers
        self.gpus_per_worker = gpus_per_worker
        self.cpus_per_worker = cpus_per_worker
        self.threads = threads if threads is not None else max(1, int(cpus_per_worker))  # torch threads per actor
        self.max_item_retries = max_item_retries
        self._actors: list[Any] = []
        self._started_ray = False
        self.requeued: list[str] = []  # items whose worker died and that went to another actor (for reports)

    # -- the pool -------------------------------------------------------------------------------------

    def start(self) -> list[Any]:
        """Connect (or start Ray) and create the actors; they load the model in the background."""
        if self._actors:
            return self._actors
        ray = require_ray()
        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False, include_dashboard=False,
                     runtime_env={"env_vars": _passed_env()})
            self._started_ray = True
        count = self.workers or self._default_workers(ray)
        remote = ray.remote(_Worker).options(num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker or 0,
                                             max_restarts=-1, max_task_retries=0)
        self._actors = [remote.remote(self.spec, self.threads) for _ in range(count)]
        return self._actors

    def close(self) -> None:
        """Kill the actors (and shut down a Ray this executor started)."""
        if not self._actors and not self._started_ray:
            return
        ray = require_ray()
        for actor in self._actors:
            ray.kill(actor, no_restart=True)
        self._actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def _default_workers(self, ray: Any) -> int:
        resources = ray.cluster_resources()
        if self.gpus_per_worker:
            return max(1, int(resources.get("GPU", 0) // self.gpus_per_worker))
        return max(1, int(resources.get("CPU", 1) // self.cpus_per_worker))

    # -- a run ----------------------------------------------------------------------------------------

    def run(self, items: Iterable[WorkItem]) -> Iterator[ItemResult]:
        work = list(items)  # planned by the driver (resume and skips are decided there)
        if not work:
            return
        ray = require_ray()
        actors = self.start()
        queue = collections.deque(work)
        tries: dict[str, int] = collections.Counter()
        running: dict[Any, tuple[int, WorkItem]] = {}  # ObjectRef -> (actor index, item)
        load: list[int] = [0] * len(actors)
        health = ActorHealth(actors)
        try:
            while queue or running:
                for index, actor in enumerate(actors):
                    while health.live[index] and queue and load[index] < IN_FLIGHT_PER_ACTOR:
                        item = queue.popleft()
                        running[actor.run.remote(pickle.dumps(item))] = (index, item)
                        load[index] += 1
                if health.seconds_without_live() > NO_WORKER_TIMEOUT:
                    while queue:
                        yield ItemResult(queue.popleft().name, "failed", f"no live Ray worker for {NO_WORKER_TIMEOUT:.0f} s")
                    if not running:
                        break
                done, _ = ray.wait(list(running) + list(health.probes), num_returns=1, timeout=1.0)
                for ref in done:
                    if ref in health.probes:
                        health.answered(ref)
                        continue
                    index, item = running.pop(ref)
                    load[index] -= 1
                    try:
                        yield pickle.loads(ray.get(ref))
                    except ray.exceptions.RayActorError as error:  # the worker died: requeue to the others
                        tries[item.name] += 1
                        if tries[item.name] > self.max_item_retries:
                            yield ItemResult(item.name, "failed", f"its worker died {tries[item.name]} times "
                                             f"({type(error).__name__})")
                        else:
                            queue.appendleft(item)
                            self.requeued.append(item.name)
                        health.lost(index)
                    except ray.exceptions.RayTaskError as error:  # a bug in the worker: this item fails
                        lines = str(error).strip().splitlines()
                        yield ItemResult(item.name, "failed", lines[-1] if lines else type(error).__name__)
        finally:
            for ref in running:  # a stopped run (error budget, Ctrl-C): drop what is still queued
                try:
                    ray.cancel(ref)
                except Exception:  # already finished, or its actor is gone: nothing to cancel
                    pass


class ActorHealth:
    """Which actors of a pool are live, for the batch executor and the server's dispatcher alike.

    A lost actor (its call raised ``RayActorError``) is probed with ``ready`` until it answers — Ray restarts it
    (``max_restarts=-1``) unless its node is gone — and then rejoins. ``retry_pause`` seconds pass before a
    failed probe is sent again. The probes' refs go into the caller's ``ray.wait`` beside its work refs.
    """

    def __init__(self, actors: list[Any], retry_pause: float = 0.0) -> None:
        self.actors, self.retry_pause = actors, retry_pause
        self.live = [True] * len(actors)
        self.probes: dict[Any, int] = {}  # ready() ref -> actor index
        self._last_live = time.monotonic()

    def lost(self, index: int) -> None:
        if self.live[index]:
            self.live[index] = False
            self.probes[self.actors[index].ready.remote()] = index

    def answered(self, ref: Any) -> int | None:
        """A finished probe (``ref in probes``): the index of the actor that rejoined, or None (probe again)."""
        ray = require_ray()
        index = self.probes.pop(ref)
        try:
            ray.get(ref)
        except ray.exceptions.RayActorError:
            time.sleep(self.retry_pause)
            self.probes[self.actors[index].ready.remote()] = index
            return None
        self.live[index] = True
        return index

    def seconds_without_live(self) -> float:
        """0 while any actor is live, else how long none has been."""
        now = time.monotonic()
        if any(self.live):
            self._last_live = now
        return now - self._last_live


def _passed_env() -> dict[str, str]:
    """What the workers need from this process's environment to load the same package and models."""
    keys = ("PYTHONPATH", "DEPTH2IMG_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "OMP_NUM_THREADS")
    return {key: os.environ[key] for key in keys if key in os.environ}
