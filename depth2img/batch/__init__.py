"""Folders and videos (issue 14): a resumable batch runner over a folder, and temporally coherent video.

- :mod:`.manifest`: the append-only ``manifest.jsonl`` (one JSON line per finished item).
- :mod:`.folder`: the batch runner (``depth2img batch``): names follow inputs, seeds keyed by the item.
- :mod:`.video`: decode (mp4 or a frames folder), the frames folder, encode at the source's frame rate.
- :mod:`.temporal`: fixed noise, clip-level depth ranges, the latent-fusion scheduler wrapper.
- :mod:`.flow`: OpenCV DIS optical flow, forward-backward occlusion, backward warping.
- :mod:`.metrics`: warping error (Lai et al. 2018) and the mean frame-to-frame difference.
"""
