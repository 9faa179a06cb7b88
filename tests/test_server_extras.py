"""Styles, LoRAs and embeddings over HTTP: `serve --styles-file --lora-dir --embeddings-dir`.

The served picture is compared with the library's generate() for the same request (an independent path:
no server, no job store); the listings with the files this test wrote, in A1111's response shapes
(modules/api/models.py PromptStyleItem / EmbeddingsResponse, the Lora extension's create_lora_json)."""

from __future__ import annotations

import base64
import hashlib
import io
import json

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from depth2img import load_pipeline
from depth2img.infotext import parse_infotext
from tests.test_server_util import ServerThread, b64, photo_png, settings

PHOTO = photo_png((64, 64))
STYLES = 'name,prompt,negative_prompt\nmarble,"{prompt}, carved in marble",blurry\nnight,at night,"ugly, lowres"\n'


def write_lora(path, seed=0, metadata=None):
    """A peft-format LoRA on the tiny UNet's attention projections (random, rank 2)."""
    unet = load_pipeline("tiny").unet
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, module in unet.named_modules():
        if isinstance(module, torch.nn.Linear) and name.endswith(("to_q", "to_v")):
            state[f"unet.{name}.lora_A.weight"] = torch.randn(2, module.in_features, generator=g)
            state[f"unet.{name}.lora_B.weight"] = torch.randn(module.out_features, 2, generator=g)
    save_file(state, str(path), metadata=metadata)


@pytest.fixture(scope="module")
def extras(tmp_path_factory):
    root = tmp_path_factory.mktemp("extras")
    (root / "styles.csv").write_text(STYLES, encoding="utf-8")
    (root / "Lora").mkdir()
    write_lora(root / "Lora" / "ink.safetensors", metadata={"ss_output_name": "ink-v1", "ss_network_dim": "2"})
    (root / "embeddings").mkdir()
    g = torch.Generator().manual_seed(3)
    torch.save({"string_to_param": {"*": torch.randn(2, 32, generator=g) * 3}, "name": "bad-hands", "step": 120,
                "sd_checkpoint": "abcdef12", "sd_checkpoint_name": "tiny"}, root / "embeddings" / "bad-hands.pt")
    save_file({"<wide>": torch.randn(1, 48, generator=g)}, str(root / "embeddings" / "wide.safetensors"))
    return root


@pytest.fixture(scope="module")
def server(extras, tmp_path_factory):
    config = settings(tmp_path_factory.mktemp("served"), styles_file=extras / "styles.csv",
                      embeddings_dir=extras / "embeddings", lora_dir=extras / "Lora")
    with ServerThread(config) as s:  # no preload: the registry loads tiny and attaches the extras
        yield s


@pytest.fixture()
def http(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def test_styles_lora_and_embedding_over_http_equal_the_library(http, extras):
    body = {"init_images": [b64(PHOTO)], "prompt": "a cat <lora:ink:0.8>", "negative_prompt": "bad-hands",
            "styles": ["marble", "night"], "seed": 7, "steps": 3, "cfg_scale": 6.0, "denoising_strength": 0.8,
            "width": 64, "height": 64, "sampler_name": "Euler"}
    answer = http.post("/sdapi/v1/img2img", json=body)
    assert answer.status_code == 200, answer.text
    served = Image.open(io.BytesIO(base64.b64decode(answer.json()["images"][0])))
    library = load_pipeline("tiny", styles_file=extras / "styles.csv", embeddings_dir=extras / "embeddings",
                            lora_dir=extras / "Lora")
    expected = library.generate(image=Image.open(io.BytesIO(PHOTO)), prompt=body["prompt"], negative_prompt="bad-hands",
                                styles=("marble", "night"), seed=7, steps=3, guidance_scale=6.0, strength=0.8,
                                width=64, height=64, scheduler="euler")
    assert np.array_equal(np.asarray(served.convert("RGB")), np.asarray(expected.images[0]))
    assert served.info["parameters"] == expected.infotexts[0]
    info = parse_infotext(served.info["parameters"])
    assert info["Prompt"] == "a cat <lora:ink:0.8>, carved in marble, at night"  # styles.csv rules, by hand
    assert info["Negative prompt"] == "bad-hands, blurry, ugly, lowres"
    data = (extras / "Lora" / "ink.safetensors").read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    assert info["Lora hashes"] == f"ink: {hashlib.sha256(data[header:]).hexdigest()[:12]}"
    ti = hashlib.sha256((extras / "embeddings" / "bad-hands.pt").read_bytes()).hexdigest()[:12]
    assert info["TI hashes"] == f"bad-hands: {ti}"
    assert answer.json()["info"] and '"styles": ["marble", "night"]' in answer.json()["info"]
    # the extras changed the picture: without them the same request differs
    plain = load_pipeline("tiny").generate(image=Image.open(io.BytesIO(PHOTO)), prompt="a cat", seed=7, steps=3,
                                          guidance_scale=6.0, strength=0.8, width=64, height=64, scheduler="euler")
    assert not np.array_equal(np.asarray(served.convert("RGB")), np.asarray(plain.images[0]))


def test_unknown_style_is_refused_before_queueing(http, server):
    jobs = server.services.store.list()[1]
    answer = http.post("/sdapi/v1/img2img", json={"init_images": [b64(PHOTO)], "styles": ["nope"], "steps": 2,
                                                  "width": 64, "height": 64})
    assert answer.status_code == 422 and "unknown style 'nope'" in answer.json()["detail"]
    assert server.services.store.list()[1] == jobs  # no job was stored


def test_listings_in_a1111_shapes(http, extras):
    assert http.get("/sdapi/v1/prompt-styles").json() == [
        {"name": "marble", "prompt": "{prompt}, carved in marble", "negative_prompt": "blurry"},
        {"name": "night", "prompt": "at night", "negative_prompt": "ugly, lowres"}]
    assert http.get("/sdapi/v1/loras").json() == [
        {"name": "ink", "alias": "ink-v1", "path": "ink.safetensors",
         "metadata": {"ss_output_name": "ink-v1", "ss_network_dim": "2"}}]
    http.post("/sdapi/v1/img2img", json={"init_images": [b64(PHOTO)], "steps": 1, "width": 64, "height": 64})
    embeddings = http.get("/sdapi/v1/embeddings").json()  # a model is loaded now: its width (32) decides
    assert embeddings == {
        "loaded": {"bad-hands": {"step": 120, "sd_checkpoint": "abcdef12", "sd_checkpoint_name": "tiny", "shape": 32,
                                 "vectors": 2}},
        "skipped": {"wide": {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": 48,
                             "vectors": 1}}}


def test_refresh_loras_picks_up_a_new_file(http, extras):
    write_lora(extras / "Lora" / "late.safetensors", seed=5)
    try:
        body = {"init_images": [b64(PHOTO)], "prompt": "a cat <lora:late:1>", "seed": 1, "steps": 2, "width": 64,
                "height": 64}
        before = http.post("/sdapi/v1/img2img", json=body).json()
        assert any("'late' not found" in w for w in json.loads(before["info"])["warnings"])
        assert http.post("/sdapi/v1/refresh-loras").status_code == 200
        assert [e["name"] for e in http.get("/sdapi/v1/loras").json()] == ["ink", "late"]
        after = http.post("/sdapi/v1/img2img", json=body).json()
        assert "Lora hashes: \"late: " in json.loads(after["info"])["infotexts"][0]
    finally:
        (extras / "Lora" / "late.safetensors").unlink()

