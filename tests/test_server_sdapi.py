"""/sdapi/v1 driven by an independent AUTOMATIC1111 client (webuiapi from PyPI) and by hand where the
client has no call (A1111's documented shapes: reference ux_anchors.md §2)."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import httpx
import numpy as np
import pytest
import webuiapi
from PIL import Image

from depth2img.infotext import parse_infotext
from tests.test_server_util import ServerThread, b64, photo_png, settings

PHOTO = Image.open(io.BytesIO(photo_png((64, 64))))
MASK = Image.fromarray(np.pad(np.full((32, 32), 255, np.uint8), 16))


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_pipe):
    with ServerThread(settings(tmp_path_factory.mktemp("sdapi")), preload=tiny_pipe) as s:
        yield s


@pytest.fixture()
def api(server):
    return webuiapi.WebUIApi(host="127.0.0.1", port=server.port, sampler="Euler a", steps=3)


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def test_models_and_set_checkpoint_through_the_client(api, http):
    names = api.util_get_model_names()
    assert {"tiny", "tiny-img2img"} <= set(names)
    api.util_set_model("tiny-img2img")
    assert api.util_get_current_model() == "tiny-img2img"
    assert http.get("/api/v1/health").json()["loaded"] == "tiny-img2img"  # switching loads it, unloading tiny
    api.util_set_model("tiny")
    assert api.get_options()["sd_model_checkpoint"] == "tiny"
    models = api.get_sd_models()
    assert set(models[0]) == {"title", "model_name", "hash", "sha256", "filename", "config"}
    assert all("/" not in m["filename"] for m in models)  # no local paths


def test_samplers_and_schedulers(api):
    assert {"Euler a", "Euler", "DPM++ 2M", "DDIM", "PLMS"} <= set(api.util_get_sampler_names())
    assert {"automatic", "karras"} <= set(api.util_get_scheduler_names())


def test_img2img_through_the_client_equals_in_process(api, tiny_pipe):
    result = api.img2img(images=[PHOTO], prompt="a cat", negative_prompt="dog", seed=5, cfg_scale=7.0,
                         denoising_strength=0.75, width=64, height=64, steps=4, batch_size=2)
    info = result.info
    for key in ("prompt", "all_prompts", "negative_prompt", "seed", "all_seeds", "subseed", "all_subseeds", "width",
                "height", "sampler_name", "cfg_scale", "steps", "batch_size", "sd_model_name", "sd_model_hash",
                "denoising_strength", "index_of_first_image", "infotexts", "job_timestamp"):
        assert key in info, key
    assert info["all_seeds"] == [5, 6] and info["sampler_name"] == "Euler a" and (info["width"], info["height"]) == (64, 64)
    # webuiapi sends eta=1.0; only ddim uses it, so the result says so instead of dropping it silently
    assert any("eta" in w for w in info["warnings"])
    expected = tiny_pipe.generate(image=PHOTO, prompt="a cat", negative_prompt="dog", seed=5, guidance_scale=7.0,
                                  strength=0.75, width=64, height=64, steps=4, batch_size=2, scheduler="euler_a", eta=1.0)
    assert len(result.images) == 2
    for got, want, text in zip(result.images, expected.images, expected.infotexts):
        assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(want))
        assert got.info["parameters"] == text
    assert result.parameters["init_images"] is None  # include_init_images false: A1111 nulls them


def test_img2img_with_mask_uses_a1111_inpaint_codes(api, tiny_pipe):
    result = api.img2img(images=[PHOTO], mask_image=MASK, prompt="hole", seed=3, width=64, height=64, steps=4,
                         inpainting_fill=1, inpaint_full_res=False, mask_blur=2, denoising_strength=1.0)
    expected = tiny_pipe.generate(image=PHOTO, mask=MASK, prompt="hole", seed=3, guidance_scale=7.0, strength=1.0,
                                  width=64, height=64, steps=4, scheduler="euler_a", eta=1.0, masked_content="original",
                                  inpaint_area="whole", padding=0, mask_blur=2)
    assert np.array_equal(np.asarray(result.image.convert("RGB")), np.asarray(expected.images[0]))
    corner = np.asarray(result.image.convert("RGB"))[:8, :8]
    assert np.array_equal(corner, np.asarray(PHOTO.convert("RGB"))[:8, :8])  # outside the mask: the photo


def test_png_info_through_the_client(api):
    image = api.img2img(images=[PHOTO], prompt="p", seed=9, width=64, height=64, steps=2, denoising_strength=1.0).image
    info = api.png_info(image)
    assert parse_infotext(info.json["info"])["Seed"] == "9"
    assert info.json["parameters"]["Prompt"] == "p"


def test_progress_during_a_job_and_interrupt(api, server):
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("r", api.img2img(
        images=[PHOTO], prompt="long", seed=1, width=64, height=64, steps=400, denoising_strength=1.0)))
    worker.start()
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            progress = api.get_progress()
            if progress["state"]["sampling_step"] >= 2:
                break
            time.sleep(0.05)
        assert 0 < progress["progress"] < 1 and progress["state"]["sampling_steps"] == 400
        assert progress["state"]["job_count"] >= 1 and progress["current_image"]  # a cheap latent preview
        Image.open(io.BytesIO(base64.b64decode(progress["current_image"])))
        assert api.interrupt() == {}
    finally:
        worker.join(60)
    result = out["r"]
    assert result.images == [] and result.info["interrupted"] is True
    assert api.get_progress()["progress"] == 0.0


def img2img(http, **fields):
    body = {"init_images": [b64(photo_png())], "width": 64, "height": 64, "steps": 2, "seed": 1, **fields}
    return http.post("/sdapi/v1/img2img", json=body)


@pytest.mark.parametrize("fields, status, words", [
    ({"resize_mode": 3}, 422, "resize_mode 3"),
    ({"sampler_name": "Heun"}, 404, "Sampler not found"),
    ({"sampler_name": "Euler", "scheduler": "Karras"}, 404, "Sampler not found"),
    ({"init_images": ["https://example.com/a.png"]}, 422, "does not fetch URLs"),
    ({"init_images": []}, 422, "init_images"),
    ({"inpainting_fill": 7, "mask": b64(photo_png())}, 422, "inpainting_fill"),
    ({"override_settings": {"sd_model_checkpoint": "../../etc/passwd"}}, 422, "unknown model"),
    ({"alwayson_scripts": {"ADetailer": {"args": []}}}, 422, "always on script ADetailer not found"),
    ({"alwayson_scripts": {"depth2img": {"args": [{"depth_model": "/etc"}]}}}, 422, "unknown model"),
    ({"steps": 0}, 422, "steps"),
])
def test_errors_have_a1111_shape(http, fields, status, words):
    r = img2img(http, **fields)
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail", "body", "errors"} and words in body["detail"], body


def test_old_sampler_names_unknown_fields_and_extension_fields(http, tiny_pipe):
    depth = Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1)))
    r = img2img(http, sampler_name="DPM++ 2M Karras", restore_faces=True, tiling=False, s_churn=0.5,
                alwayson_scripts={"depth2img": {"args": [{"depth_map": b64(_png(depth)), "depth_strength": 0.5,
                                                          "depth_clip": [2, 98]}]}})
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert (info["sampler_name"], info["scheduler"]) == ("DPM++ 2M", "Karras")
    text = parse_infotext(info["infotexts"][0])
    assert text["Depth strength"] == "0.5" and text["Depth"] == "own map"
    expected = tiny_pipe.generate(image=photo_png(), depth_map=_png(depth), depth_strength=0.5, depth_clip=(2, 98),
                                  width=64, height=64, steps=2, seed=1, guidance_scale=7.0, strength=0.75,
                                  scheduler="dpmpp_2m_karras")
    got = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    assert np.array_equal(np.asarray(got.convert("RGB")), np.asarray(expected.images[0]))


def test_txt2img_is_depth_only_with_a_depth_map_else_422(http):
    r = http.post("/sdapi/v1/txt2img", json={"prompt": "x", "width": 64, "height": 64, "steps": 2})
    assert r.status_code == 422 and "needs a depth map" in r.json()["detail"]
    depth = _png(Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))))
    body = {"prompt": "x", "width": 64, "height": 64, "steps": 2, "n_iter": 2, "seed": 4,
            "alwayson_scripts": {"depth2img": {"args": [{"depth_map": b64(depth)}]}}}
    r = http.post("/sdapi/v1/txt2img", json=body)
    assert r.status_code == 200, r.text
    info = json.loads(r.json()["info"])
    assert len(r.json()["images"]) == 2 and info["all_seeds"] == [4, 5] and info["denoising_strength"] == 1.0
    r = http.post("/sdapi/v1/txt2img", json={**body, "override_settings": {"sd_model_checkpoint": "tiny-img2img"}})
    assert r.status_code == 422 and "img2img tool" in r.json()["detail"]


def test_memory_unload_reload_and_scripts(http):
    memory = http.get("/sdapi/v1/memory").json()
    assert memory["ram"]["total"] > 0 and "cuda" in memory
    assert http.post("/sdapi/v1/unload-checkpoint").status_code == 200
    assert http.get("/api/v1/health").json()["loaded"] is None
    assert http.post("/sdapi/v1/reload-checkpoint").status_code == 200
    assert http.get("/api/v1/health").json()["loaded"] == "tiny"
    assert http.post("/sdapi/v1/refresh-checkpoints").status_code == 200
    assert http.get("/sdapi/v1/scripts").json()["img2img"] == ["depth2img", "controlnet"]


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
