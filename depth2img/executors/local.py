"""The default executor: the items run one after another in this process (today's behaviour)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .base import ItemResult, WorkItem
from .work import run_item


class LocalExecutor:
    """In-process loop. The model loads lazily, once, at the first item whose inputs decoded (a batch of
    only bad files, or a fully resumed one, loads nothing)."""

    def __init__(self, load_pipe: Callable[[], Any]) -> None:
        self._load = load_pipe
        self._pipe: Any = None

    def pipe(self) -> Any:
        if self._pipe is None:
            self._pipe = self._load()
        return self._pipe

    def run(self, items: Iterable[WorkItem]) -> Iterator[ItemResult]:
        for item in items:
            yield run_item(self.pipe, item, worker="local")

    def close(self) -> None:
        """Nothing to release: the model belongs to the caller's process."""
