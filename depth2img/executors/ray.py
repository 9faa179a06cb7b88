"""The Ray executor: Ray Data ``map_batches`` over a pool of long-lived actors (Ray's documented
batch-inference pattern; see docs/scaling.md). Ray is imported lazily: ``pip install 'depth2img[ray]'``.

- Each actor loads the model once (:class:`ModelSpec`: the CLI's model arguments, loadable anywhere the
  package and the weights are) and runs one item per call through :func:`work.run_item`, so an item's
  pixels do not depend on which items share its actor or block.
- Items are built by the driver and handed over with ``from_items`` (one block per item, owned by the
  driver: a lost node never needs upstream lineage reconstruction, see scale.md §1.7-6). The worker
  writes the item's pictures atomically under the driver's names; the rows that come back (one per
  item, in completion order) carry only the status, so the driver writes the manifest and moves the
  progress bar as they arrive.
- Failures: a bad input is a ``failed`` row (never an exception), so it fails its item only. A worker
  that dies (killed process, lost node) is restarted and its item retried on a live actor (Ray Data's
  actors: ``max_restarts=-1``, ``max_task_retries=-1``); the driver records each item once. An
  unexpected exception in a worker fails that item's block (``max_errored_blocks`` = every block), the
  driver reports the item as failed with "no result from the workers".
- Inputs and outputs live on storage every node sees at the same path (one machine, or a shared
  filesystem on a cluster).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Iterator
from typing import Any

from .base import ItemResult, ModelSpec, WorkItem
from .work import run_item

LOST = "no result from the workers (the worker raised an unexpected error; see Ray's logs)"


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        from ..errors import InvalidRequestError

        raise InvalidRequestError("--executor ray needs Ray: pip install 'depth2img[ray]'") from None
    return ray


class _Generate:
    """One actor: loads the model once, then makes one item per call (a Ray Data callable class)."""

    def __init__(self, spec: ModelSpec, threads: int | None) -> None:
        import ray

        if threads:  # this actor's own process: its thread count is ours to set
            import torch

            torch.set_num_threads(threads)
        self.pipe = spec.load()
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        results = [pickle.dumps(run_item(lambda: self.pipe, pickle.loads(blob), worker=self.node)) for blob in batch["item"]]
        return {"result": np.array(results, dtype=object)}


class RayExecutor:
    """``workers`` actors (default: one per GPU with ``gpus_per_worker``, else one per CPU of the cluster)
    on the cluster at ``address`` (``auto``, ``ray://HOST:PORT``; None: join a running Ray of this
    process, else start a local one that is shut down after the run)."""

    def __init__(self, spec: ModelSpec, *, address: str | None = None, workers: int | None = None,
                 gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, threads: int | None = None) -> None:
        self.spec = spec
        self.address = address
        self.workers = workers
        self.gpus_per_worker = gpus_per_worker
        self.cpus_per_worker = cpus_per_worker
        self.threads = threads

    def run(self, items: Iterable[WorkItem]) -> Iterator[ItemResult]:
        ray = require_ray()
        work = list(items)  # planned by the driver (resume and skips are decided there)
        if not work:
            return
        started = False
        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False, include_dashboard=False,
                     runtime_env={"env_vars": _passed_env()})
            started = True
        try:
            yield from self._run(ray, work)
        finally:
            if started:
                ray.shutdown()

    def _run(self, ray: Any, work: list[WorkItem]) -> Iterator[ItemResult]:
        import ray.data

        workers = self.workers or self._default_workers(ray)
        rows = [{"item": pickle.dumps(item)} for item in work]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        context = ds.context
        context.enable_progress_bars = False  # the CLI draws its own bar from the rows coming back
        context.max_errored_blocks = len(rows)  # a worker bug fails its item (reported below), not the run
        ds = ds.map_batches(
            _Generate, fn_constructor_args=(self.spec, self.threads), batch_size=1, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(rows))),
            num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker or None,
        )
        left = {item.name for item in work}
        for row in ds.iter_rows():
            result: ItemResult = pickle.loads(row["result"])
            if result.name in left:
                left.discard(result.name)
                yield result
        for name in sorted(left):
            yield ItemResult(name, "failed", LOST)

    def _default_workers(self, ray: Any) -> int:
        resources = ray.cluster_resources()
        if self.gpus_per_worker:
            return max(1, int(resources.get("GPU", 0) // self.gpus_per_worker))
        return max(1, int(resources.get("CPU", 1) // self.cpus_per_worker))


def _passed_env() -> dict[str, str]:
    """What the workers need from this process's environment to load the same package and models."""
    keys = ("PYTHONPATH", "DEPTH2IMG_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "OMP_NUM_THREADS")
    return {key: os.environ[key] for key in keys if key in os.environ}
