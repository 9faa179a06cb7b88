"""sd-webui-controlnet's API on the server, driven over HTTP on 127.0.0.1 as the extension's clients call it
(field names, defaults and answers from Mikubill/sd-webui-controlnet @56cec5b: scripts/api.py,
internal_controlnet/args.py, external_code.py; its tests/web_api assert "images = results + one detected
map per unit"). Every picture is compared with the library's generate() run directly on the same request
(depth2img.pipeline, no server), and the detected map with the control image that run reports."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from depth2img import load_pipeline
from tests.test_server_util import ServerThread, b64, photo_png, settings

PHOTO = Image.open(io.BytesIO(photo_png((64, 64))))
DEPTH = Image.fromarray(np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (64, 1)).T.copy())  # own map, 64x48 (W x H)
COMMON = dict(prompt="a statue", negative_prompt="blur", seed=7, steps=3, cfg_scale=7.0, width=64, height=64)
LIBRARY = dict(prompt="a statue", negative_prompt="blur", seed=7, steps=3, guidance_scale=7.0, width=64, height=64,
               scheduler="euler")  # A1111's API defaults: sampler_index "Euler"


@pytest.fixture(scope="module")
def library():
    return load_pipeline("tiny-sd15", controlnet="tiny-controlnet")


@pytest.fixture(scope="module")
def models(tmp_path_factory, library):
    """An A1111 models folder with the tiny ControlNet as a diffusers-keyed single file in models/ControlNet."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("models")
    folder = root / "ControlNet"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in library.controlnet.state_dict().items()}, folder / "cn_depth.safetensors")
    (folder / "cn_depth.json").write_text(json.dumps(dict(library.controlnet.config)))
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, models):
    config = dataclasses.replace(settings(tmp_path_factory.mktemp("cn"), models_dirs=(models,)), model="tiny-sd15")
    with ServerThread(config) as s:
        yield s


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def unit(**fields):
    return {"alwayson_scripts": {"ControlNet": {"args": [{"enabled": True, "model": "tiny-controlnet", **fields}]}}}


def decode(text: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(text))).convert("RGB"))


def old_hash(path) -> str:
    """A1111's modules/hashes.py model_hash: sha256 of the 64 KiB at 1 MiB, first 8 hex digits."""
    data = path.read_bytes()
    return hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


def test_version_model_and_module_lists(http, models):
    assert http.get("/controlnet/version").json() == {"version": 3}
    names = http.get("/controlnet/model_list", params={"update": "true"}).json()["model_list"]
    assert f"cn_depth [{old_hash(models / 'ControlNet' / 'cn_depth.safetensors')}]" in names
    assert "tiny-controlnet" in names and "None" not in names
    modules = http.get("/controlnet/module_list").json()
    assert modules["module_list"] == ["none", "depth"]
    assert modules["module_detail"]["depth"]["sliders"][0] == {"name": "Resolution", "value": 512, "min": 64,
                                                                "max": 2048, "step": 1}
    assert http.get("/controlnet/module_list", params={"alias_names": "true"}).json()["module_list"] == ["none", "depth_midas"]
    assert "controlnet" in http.get("/sdapi/v1/scripts").json()["img2img"]


def test_img2img_depth_unit_equals_library_and_appends_the_detected_map(http, library):
    # 8 steps x 0.75 run 6; guidance 0.1..0.8 keeps the ControlNet on steps 1-3 of them (diffusers' rule)
    body = {**COMMON, "steps": 8, "init_images": [b64(photo_png((64, 64)))], "denoising_strength": 0.75,
            **unit(module="depth_midas", weight=0.7, guidance_start=0.1, guidance_end=0.8, control_mode=2)}
    reply = http.post("/sdapi/v1/img2img", json=body)
    assert reply.status_code == 200, reply.text
    images = reply.json()["images"]
    assert len(images) == 2  # the picture + the unit's detected map (save_detected_map defaults to true)
    want = library.generate(image=PHOTO, strength=0.75, control_weight=0.7, control_start=0.1, control_end=0.8,
                            control_mode="controlnet", **{**LIBRARY, "steps": 8})
    assert np.array_equal(decode(images[0]), np.asarray(want.images[0]))
    control = np.asarray(want.depth_map.to_image("normalized", bits=8).convert("RGB")).astype(int)
    assert decode(images[1]).shape == (64, 64, 3)
    assert np.abs(decode(images[1]).astype(int) - control).max() <= 1  # 16-bit file → 8-bit: one rounding apart
    info = json.loads(reply.json()["info"])
    assert 'Module: depth_midas, Model: tiny-controlnet, Weight: 0.7' in info["infotexts"][0]


def test_txt2img_with_own_map_and_no_detected_map(http, library):
    body = {**COMMON, **unit(module="none", image=b64(_png(DEPTH)), control_mode="My prompt is more important",
                             resize_mode=2, save_detected_map=False)}
    reply = http.post("/sdapi/v1/txt2img", json=body)
    assert reply.status_code == 200, reply.text
    images = reply.json()["images"]
    assert len(images) == 1
    want = library.generate(depth_map=DEPTH, control_mode="prompt", control_resize="resize_and_fill", **LIBRARY)
    assert np.array_equal(decode(images[0]), np.asarray(want.images[0]))


def test_file_controlnet_by_title_and_by_part_of_its_name(http, models):
    path = models / "ControlNet" / "cn_depth.safetensors"
    want = load_pipeline("tiny-sd15", controlnet=str(path)).generate(depth_map=DEPTH, **LIBRARY)
    for name in (f"cn_depth [{old_hash(path)}]", "CN_DEP"):
        body = {**COMMON, **unit(module="none", image=b64(_png(DEPTH)), model=name)}
        reply = http.post("/sdapi/v1/txt2img", json=body)
        assert reply.status_code == 200, reply.text
        assert np.array_equal(decode(reply.json()["images"][0]), np.asarray(want.images[0]))


@pytest.mark.parametrize("resolution", [-1, 128])  # -1: the module's default, 512 for depth_midas
def test_detect_returns_the_estimators_depth_at_the_processor_resolution(http, library, resolution):
    reply = http.post("/controlnet/detect", json={"controlnet_module": "depth_midas", "controlnet_processor_res": resolution,
                                                  "controlnet_input_images": [b64(photo_png((64, 64)))]})
    assert reply.status_code == 200, reply.text
    assert reply.json()["info"] == "Success"
    depth = library.estimate_depth(PHOTO, resolution=512 if resolution == -1 else resolution)
    want = np.asarray(depth.to_image("raw", bits=8).convert("RGB")).astype(int)
    got = decode(reply.json()["images"][0]).astype(int)
    assert got.shape == want.shape and np.abs(got - want).max() <= 1


@pytest.mark.parametrize("theirs, ours", [(dict(processor_res=128), dict(processor_res=128)),
                                          (dict(pixel_perfect=True), dict(pixel_perfect=True))])
def test_unit_processor_res_and_pixel_perfect_are_honoured(http, library, theirs, ours):
    body = {**COMMON, "init_images": [b64(photo_png((64, 64)))], "denoising_strength": 0.75,
            **unit(module="depth_midas", **theirs)}
    reply = http.post("/sdapi/v1/img2img", json=body)
    assert reply.status_code == 200, reply.text
    want = library.generate(image=PHOTO, strength=0.75, **ours, **LIBRARY)
    assert np.array_equal(decode(reply.json()["images"][0]), np.asarray(want.images[0]))
    assert "processor_res" not in reply.json()["info"]  # no "not honoured" warning any more


@pytest.mark.parametrize("fields, message", [
    (dict(module="canny"), "'canny' is not supported"),
    (dict(module="depth_anything_v2"), "no such estimator"),
    (dict(model="control_v11p_sd15_canny"), "is not a ControlNet this server has"),
    (dict(model="None"), "name a ControlNet"),
    (dict(guidance_start=0.8, guidance_end=0.2), "guidance_start 0.8 > guidance_end 0.2"),
    (dict(control_mode=5), "control_mode 5 is not one of"),
    (dict(resize_mode="Stretch"), "resize_mode 'Stretch' is not one of"),
    (dict(weight=3), "weight must be in [0, 2]"),
    (dict(module="none"), "required with module none"),
    (dict(processor_res=10), "processor_res must be in [64, 2048]"),
])
def test_bad_units_are_422(http, fields, message):
    body = {**COMMON, "init_images": [b64(photo_png((64, 64)))], **unit(**{"module": "depth_midas", **fields})}
    reply = http.post("/sdapi/v1/img2img", json=body)
    assert reply.status_code == 422 and message in reply.json()["detail"], reply.text


def test_several_units_txt2img_without_image_and_sd2_depth_base_are_422(http):
    two = {"alwayson_scripts": {"controlnet": {"args": [{"enabled": True, "module": "depth", "model": "tiny-controlnet"}] * 2}}}
    reply = http.post("/sdapi/v1/img2img", json={**COMMON, "init_images": [b64(photo_png((64, 64)))], **two})
    assert reply.status_code == 422 and "2 enabled ControlNet units" in reply.json()["detail"]
    reply = http.post("/sdapi/v1/txt2img", json={**COMMON, **unit(module="depth")})
    assert reply.status_code == 422 and "txt2img with module depth_midas" in reply.json()["detail"]
    body = {**COMMON, "init_images": [b64(photo_png((64, 64)))], "override_settings": {"sd_model_checkpoint": "tiny"},
            **unit(module="depth")}
    reply = http.post("/sdapi/v1/img2img", json=body)
    assert reply.status_code == 422 and "SD2-depth model" in reply.json()["detail"]
    reply = http.post("/controlnet/detect", json={"controlnet_module": "canny", "controlnet_input_images": ["x"]})
    assert reply.status_code == 422 and reply.json()["detail"].startswith("controlnet_module 'canny'")
    reply = http.post("/controlnet/detect", json={"controlnet_module": "depth", "controlnet_input_images": []})
    assert reply.status_code == 422 and "No image selected" in reply.json()["detail"]


def test_disabled_unit_is_ignored(http, library):
    """The extension's default is enabled=False: such a unit does nothing (a plain img2img of the base)."""
    body = {**COMMON, "init_images": [b64(photo_png((64, 64)))],
            "alwayson_scripts": {"controlnet": {"args": [{"module": "canny", "model": "x"}]}}}
    reply = http.post("/sdapi/v1/img2img", json=body)
    assert reply.status_code == 200, reply.text
    plain = load_pipeline("tiny-sd15").generate(image=PHOTO, strength=0.75, **LIBRARY)
    assert len(reply.json()["images"]) == 1
    assert np.array_equal(decode(reply.json()["images"][0]), np.asarray(plain.images[0]))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
