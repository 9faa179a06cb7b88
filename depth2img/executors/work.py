"""What a worker does with one item, the same in every executor: decode the input and its partners,
generate (one pipeline call per item, with the item's own seed: the pixels never depend on which
items a worker got before or beside it), write every picture atomically through outputs.py.

A bad input (Depth2ImgError: empty, corrupt, not an image...) or an OS error fails the item, not the
run; anything else (a bug, KeyboardInterrupt) propagates.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import Depth2ImgError
from .base import ItemResult, WorkItem


def run_item(get_pipe: Callable[[], Any], item: WorkItem, worker: str = "") -> ItemResult:
    """Make and write ``item``'s pictures; ``get_pipe`` is called only once the inputs decoded."""
    try:
        warnings = _generate(get_pipe, item)
    except (Depth2ImgError, OSError) as error:
        return ItemResult(item.name, "failed", str(error) or type(error).__name__, worker=worker)
    return ItemResult(item.name, "ok", None, warnings, worker=worker)


def _generate(get_pipe: Callable[[], Any], item: WorkItem) -> list[str]:
    from ..images import load_image, open_image
    from ..outputs import save_image, save_or_fall_back

    changes: dict[str, Any] = {"seed": item.seed}
    if item.input is not None:
        changes["image"] = load_image(item.input)
    if isinstance(item.request.depth_map, (str, Path)):
        from ..depth import load_depth_map

        changes["depth_map"] = load_depth_map(item.request.depth_map)
    if isinstance(item.request.mask, (str, Path)):
        changes["mask"] = open_image(item.request.mask, what="mask")
    request = item.request.replace(**changes)
    pipe = get_pipe()
    if item.depth_range is None and item.own_depth is None:
        result = pipe.generate(request)
    else:  # a video frame: the clip's depth range and whether its map was the user's ride on the plan
        plan = pipe.plan(request)
        plan.depth_range = item.depth_range
        plan.own_depth = item.own_depth
        result = pipe.run(plan)
    warnings = [f"{item.name}: {w}" for w in result.warnings]
    for picture, infotext, target in zip(result.images, result.infotexts, item.outputs):
        _, problem = save_or_fall_back(lambda p, pic=picture, info=infotext: save_image(pic, p, infotext=info), Path(target))
        if problem:
            warnings.append(problem)
    return warnings
