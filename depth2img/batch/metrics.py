"""Temporal-consistency metrics that need no weights.

:func:`warping_error` is E_warp of Lai et al., "Learning Blind Video Temporal Consistency" (ECCV 2018),
as their evaluate_WarpError.py: for each consecutive pair, output frame t+1 is warped back to t with the
flow computed on the *source* frames, and the squared RGB difference (frames in [0, 1], summed over
channels) is averaged over non-occluded pixels (Ruder et al.'s mask with motion boundaries); the video's
value is the mean over pairs. Without a source, the flow comes from the output itself (then a clip that
is consistently wrong scores well: prefer giving the source). :func:`frame_difference` is the plain mean
|O_t - O_t+1|, which misses texture sticking (reference video.md §3.2/3.4).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .flow import dis_flow, occlusion, warp


def _unit(frame: np.ndarray) -> np.ndarray:
    array = np.asarray(frame)
    return array.astype(np.float32) / 255.0 if array.dtype == np.uint8 else array.astype(np.float32)


def warping_error(outputs: Sequence[np.ndarray], sources: Sequence[np.ndarray] | None = None, *,
                  flows: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> float:
    """Mean E_warp over consecutive pairs. ``flows[t]`` = (forward t→t+1, backward t+1→t) may be given
    (a known synthetic flow); otherwise DIS on ``sources`` (or on ``outputs``)."""
    if len(outputs) < 2:
        return 0.0
    reference = sources if sources is not None else outputs
    if len(reference) != len(outputs):
        raise ValueError(f"{len(outputs)} output frames but {len(reference)} source frames")
    errors = []
    for t in range(len(outputs) - 1):
        if flows is not None:
            forward, backward = flows[t]
        else:
            forward, backward = dis_flow(reference[t], reference[t + 1]), dis_flow(reference[t + 1], reference[t])
        valid = ~occlusion(forward, backward, motion_boundaries=True)
        warped, _ = warp(_unit(outputs[t + 1]), forward)
        squared = ((_unit(outputs[t]) - warped) ** 2).sum(-1)
        count = valid.sum()
        errors.append(float((squared * valid).sum() / count) if count else float(squared.mean()))
    return float(np.mean(errors))


def frame_difference(outputs: Sequence[np.ndarray]) -> float:
    """Mean absolute difference of consecutive frames, in [0, 1] units."""
    if len(outputs) < 2:
        return 0.0
    return float(np.mean([np.abs(_unit(a) - _unit(b)).mean() for a, b in zip(outputs[:-1], outputs[1:])]))
