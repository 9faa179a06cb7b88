"""Executors (issue 15): where the work items of a folder batch or a video run.

- :mod:`.base`: :class:`WorkItem` (input, request, seed, output names), :class:`ItemResult`, the
  :class:`Executor` protocol and :class:`ModelSpec` (what a worker loads by itself).
- :mod:`.work`: what any worker does with one item (decode, generate one picture per call with its own
  generator, write atomically through outputs.py). Local and Ray run this same function.
- :mod:`.local`: the default, in-process loop (no Ray needed).
- :mod:`.ray`: Ray Data ``map_batches`` over an actor pool; imports Ray lazily (``pip install 'depth2img[ray]'``).

The driver (batch/folder.py, batch/video.py) plans the items, decides resume and writes the
manifest; executors only run items and hand back one :class:`ItemResult` per item, in any order.
"""

from .base import Executor, ItemResult, ModelSpec, WorkItem, make_executor

__all__ = ["Executor", "ItemResult", "ModelSpec", "WorkItem", "make_executor"]
