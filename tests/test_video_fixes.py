"""Video fixes: the infotext's depth source, fusion that does not blur frame after frame, and resume that
notices a changed source frame. Synthetic pans of scikit-image photos, the tiny random model."""

from __future__ import annotations

import numpy as np
from PIL import Image

from depth2img.infotext import parse_infotext
from tests.test_video import pan_clip, render, save_frames


def test_infotext_names_the_depth_source_as_a_single_picture_does(tiny_pipe, tmp_path):
    frames = pan_clip(2)
    render(tiny_pipe, frames, tmp_path / "estimated", temporal="fixed-noise")
    depth_paths = []
    for t in range(2):
        depth_paths.append(tmp_path / f"d{t}.npy")
        np.save(depth_paths[-1], np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1)))
    render(tiny_pipe, frames, tmp_path / "own", temporal="fixed-noise", depths=depth_paths)
    # the library's single-picture path, which estimates (or takes the map) itself
    alone = tiny_pipe.generate(image=Image.fromarray(frames[0]), prompt="a painting", steps=2, seed=3)
    own = tiny_pipe.generate(image=Image.fromarray(frames[0]), prompt="a painting", steps=2, seed=3,
                             depth_map=np.load(depth_paths[0]))
    for folder, reference in (("estimated", alone), ("own", own)):
        text = Image.open(tmp_path / folder / "frames" / "out" / "000001.png").info["parameters"]
        assert parse_infotext(text)["Depth"] == parse_infotext(reference.infotexts[0])["Depth"], folder
    assert parse_infotext(alone.infotexts[0])["Depth"] != "own map"
