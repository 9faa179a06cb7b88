"""The executor seam: work items in, one result per item out (in any order).

A :class:`WorkItem` is everything a worker needs to make one item's pictures without asking the
driver: the input file (a path on storage the worker can read: the local disk, or a shared filesystem
on a cluster), the request with every per-item field already set except the decoded image, the seed,
and the output paths (deterministic names chosen by the driver). An :class:`Executor` runs items and
yields :class:`ItemResult`\\ s; the driver turns them into manifest records and progress, so the
manifest does not depend on which executor ran.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class WorkItem:
    name: str  # the item's key in the manifest (file name, or frame index for a video)
    input: Path | None  # the image file to decode (None: depth-only)
    request: Any  # GenerationRequest: every field but the decoded image; depth_map/mask may be paths
    seed: int
    outputs: tuple[Path, ...]  # one path per picture (batch_size pictures, seeds seed + i)
    depth_range: tuple[float, float] | None = None  # video: the clip-level depth range (Plan.depth_range)
    own_depth: bool | None = None  # video: whether the depth map was the user's (Plan.own_depth; None: given = own)


@dataclass
class ItemResult:
    name: str
    status: str  # "ok" | "failed"
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    worker: str = ""  # which worker ran it (Ray: the node id); for reports and tests, not the manifest


@dataclass(frozen=True)
class ModelSpec:
    """What a worker loads by itself (the CLI's model arguments): no pipeline object crosses processes."""

    model: str
    device: str = "cpu"
    dtype: str = "float32"
    depth_model: str | None = None
    compile: bool = False  # torch.compile the UNet (compiled.py); each worker compiles, or reads the inductor cache
    low_memory: bool = False  # --low-memory (lowmem.py): a load option, so every worker loads the same way

    def load(self) -> Any:
        from ..cli.loading import checkpoint_cache, use_inductor_cache
        from ..pipeline import load_pipeline

        if self.compile:  # a worker's own process: its environment is ours to set, as the CLI's
            use_inductor_cache()
        return load_pipeline(self.model, device=self.device, dtype=self.dtype, depth_model=self.depth_model,
                             cache_dir=checkpoint_cache(), compile=self.compile, low_memory=self.low_memory)


class Executor(Protocol):
    def run(self, items: Iterable[WorkItem]) -> Iterator[ItemResult]:
        """Run every item; yield one result per item as it finishes. Closing the iterator stops the run."""
        ...

    def close(self) -> None:
        """Release the workers (a Ray pool lives across runs until closed)."""
        ...


@dataclass(frozen=True)
class ExecutorOptions:
    """The CLI's ``--executor`` options (declared once in cli/options.py)."""

    executor: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 0.0
    max_failures: int | None = None

    def check(self) -> ExecutorOptions:
        from ..errors import InvalidRequestError

        if self.executor not in EXECUTORS:
            raise InvalidRequestError(f"--executor {self.executor!r}: choose one of {', '.join(EXECUTORS)}")
        if self.executor == "local":
            given = [name for name, value in (("--ray-address", self.ray_address), ("--workers", self.workers),
                                              ("--gpus-per-worker", self.gpus_per_worker or None)) if value is not None]
            if given:
                raise InvalidRequestError(f"{', '.join(given)}: only with --executor ray")
        if self.workers is not None and self.workers < 1:
            raise InvalidRequestError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise InvalidRequestError(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker:g}")
        if self.max_failures is not None and self.max_failures < 0:
            raise InvalidRequestError(f"--max-failures must be 0 or more, got {self.max_failures}")
        return self


def make_executor(options: ExecutorOptions, load_pipe: Callable[[], Any], spec: ModelSpec) -> Executor:
    """``local``: in this process with ``load_pipe`` (loaded lazily, once); ``ray``: actors that load ``spec``."""
    if options.executor == "ray":
        from .ray import RayExecutor

        return RayExecutor(spec, address=options.ray_address, workers=options.workers,
                           gpus_per_worker=options.gpus_per_worker)
    from .local import LocalExecutor

    return LocalExecutor(load_pipe)
