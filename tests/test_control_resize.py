"""sd-webui-controlnet's resize modes for an own depth map (scripts/controlnet.py ``detectmap_proc``:
"Just Resize" stretches, "Crop and Resize" scales to cover and centre-crops, "Resize and Fill" scales to
fit, centres, fills with the median border value). The control image the tiny ControlNet saw is compared
with Pillow's own implementations of the same geometry (``Image.resize``, ``ImageOps.fit``,
``ImageOps.pad``)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from depth2img import load_pipeline

W, H = 48, 48


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny-sd15", controlnet="tiny-controlnet")


def own_map() -> np.ndarray:
    """96 x 40 (W x H), near = large, with structure everywhere and a distinct border."""
    y, x = np.mgrid[0:40, 0:96].astype(np.float32)
    return (np.sin(x / 6.0) * np.cos(y / 5.0) + 0.03 * x + 2.0).astype(np.float32)


def reference(depth: np.ndarray, mode: str) -> np.ndarray:
    image = Image.fromarray(depth, mode="F")
    if mode == "just_resize":
        fitted = image.resize((W, H), Image.Resampling.BICUBIC)
    elif mode == "crop_and_resize":
        fitted = ImageOps.fit(image, (W, H), method=Image.Resampling.BICUBIC, centering=(0.5, 0.5))
    else:
        border = np.concatenate([depth[0], depth[-1], depth[:, 0], depth[:, -1]])
        fitted = ImageOps.pad(image, (W, H), method=Image.Resampling.BICUBIC, color=float(np.median(border)),
                              centering=(0.5, 0.5))
    out = np.asarray(fitted, dtype=np.float64)
    return (out - out.min()) / (out.max() - out.min())


MODES = ("just_resize", "crop_and_resize", "resize_and_fill")


def test_each_mode_matches_pillows_geometry(pipe):
    depth = own_map()
    controls = {}
    for mode in MODES:
        result = pipe.generate(depth_map=depth, width=W, height=H, steps=1, seed=1, control_resize=mode)
        controls[mode] = (result.depth_map.normalized[0, 0].numpy().astype(np.float64) + 1) / 2  # (H, W) in [0, 1]
        assert controls[mode].shape == (H, W)
    for mode in MODES:
        corr = {ref: np.corrcoef(controls[mode].ravel(), reference(depth, ref).ravel())[0, 1] for ref in MODES}
        assert corr[mode] > 0.99, (mode, corr)
        assert corr[mode] == max(corr.values()), (mode, corr)  # and it is not one of the other modes


def test_a_map_with_the_output_aspect_is_untouched_by_every_mode(pipe):
    y, x = np.mgrid[0:24, 0:24].astype(np.float32)
    depth = np.sin(x / 3) + np.cos(y / 4) + 2
    maps = [pipe.generate(depth_map=depth, width=W, height=H, steps=1, seed=1, control_resize=m).depth_map.normalized
            for m in MODES]
    assert all(np.array_equal(maps[0].numpy(), m.numpy()) for m in maps[1:])


def test_infotext_names_the_mode_as_the_extension_does(pipe):
    result = pipe.generate(depth_map=own_map(), width=W, height=H, steps=1, seed=1, control_resize="resize_and_fill")
    assert "Resize Mode: Resize and Fill" in result.infotexts[0]


def test_without_a_controlnet_the_option_is_refused():
    with pytest.raises(Exception, match="control_resize was given"):
        load_pipeline("tiny").generate(depth_map=own_map(), width=W, height=H, steps=1, control_resize="just_resize")
