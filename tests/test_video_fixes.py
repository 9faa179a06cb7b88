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


def sharpness(picture: np.ndarray) -> float:
    """Variance of the Laplacian of the grey picture (Pech-Pacheco et al. 2000's focus measure), by OpenCV."""
    import cv2

    grey = cv2.cvtColor(picture, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def test_fusion_keeps_frames_as_sharp_as_fixed_noise_over_a_pan(tiny_pipe, tmp_path):
    """Fusion used to warp the previous frame's latents, which had themselves been pulled towards a warped
    target: the sub-latent-pixel resampling compounded and the frames grew blurrier along the pan
    (measured: 0.86x the sharpness of the same frames without fusion). Warping the previous *picture*
    keeps them as sharp as frames rendered without fusion (the baseline, computed here on the same clip)."""
    frames = pan_clip(6)
    fixed = [sharpness(f) for f in render(tiny_pipe, frames, tmp_path / "fixed", temporal="fixed-noise")]
    fused = [sharpness(f) for f in render(tiny_pipe, frames, tmp_path / "fusion", temporal="fusion")]
    print("sharpness fixed-noise", [round(v) for v in fixed], "fusion", [round(v) for v in fused])
    assert fused[0] == fixed[0]  # frame 0 has nothing to fuse with
    assert np.mean(fused[1:]) > 0.93 * np.mean(fixed[1:]), (fused, fixed)
    assert np.mean(fused[-3:]) > 0.93 * fused[0], fused  # no decline along the pan


def _render_folder(pipe, folder, frames_dir, resume=False, **options):
    from depth2img import GenerationRequest
    from depth2img.batch.video import VideoOptions, render_frames

    request = GenerationRequest(prompt="a painting", image="(each frame)", steps=3, strength=0.7, seed=3,
                                scheduler="ddim", guidance_scale=1.0)
    return render_frames(pipe, request, sorted(folder.iterdir()), frames_dir, VideoOptions(**options), resume=resume)


def test_resume_renders_a_changed_source_frame_again(tiny_pipe, tmp_path):
    """Like batch's manifest: a source frame whose content changed (same file name) is rendered again on
    --resume, unchanged ones are skipped, and the frames equal a fresh run on the new clip (byte for byte).
    With fusion the frames after the changed one build on it, so they are rendered again too; with the clip's
    one depth range every frame is (the new frame's depth changes the range)."""
    from tests.test_video import big_photo

    for options, again in (({"temporal": "fixed-noise", "depth_norm": "frame"}, 1), ({"temporal": "fusion", "depth_norm": "frame"}, 2), ({"temporal": "fixed-noise", "depth_norm": "clip"}, 4)):
        name = "-".join(options.values())
        source = tmp_path / name / "src"
        save_frames(pan_clip(4), source)
        first = _render_folder(tiny_pipe, source, tmp_path / name / "frames", **options)
        assert (first.rendered, first.skipped) == (4, 0)
        Image.fromarray(big_photo("coffee")[:64, :64]).save(source / "002.png")  # same name, new content
        resumed = _render_folder(tiny_pipe, source, tmp_path / name / "frames", resume=True, **options)
        assert (resumed.rendered, resumed.skipped) == (again, 4 - again), name
        fresh = _render_folder(tiny_pipe, source, tmp_path / name / "fresh", **options)
        for a, b in zip(resumed.frames, fresh.frames):
            assert a.read_bytes() == b.read_bytes(), (name, a.name)
