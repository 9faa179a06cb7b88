"""Hardening of model loading through the Python API: the catalog sets unreadable files apart, incomplete
diffusers folders fail at once with sockets refused, offline hub messages are whole sentences, and a
conversion that could not be loaded back is refused before anything is written."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from depth2img.models.catalog import list_models


@pytest.fixture
def no_network(monkeypatch):
    """Sockets refused (as tests/test_single_file_full.py); any attempt fails the test afterwards, even one
    a library caught and turned into its own error."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network refused by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield
    assert not attempts, f"a local model touched the network: {attempts[:3]}"


# --------------------------------------------------------------------------------------------------
# catalog: unreadable files apart, never hashed
# --------------------------------------------------------------------------------------------------


def test_catalog_lists_unreadable_files_apart_and_never_hashes_them(tmp_path, monkeypatch):
    from depth2img.models import cache

    root = tmp_path / "Stable-diffusion"
    root.mkdir()
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3)}, str(root / "good.safetensors"))
    torch.save({"state_dict": {"a": torch.zeros(1)}}, root / "good.ckpt")
    (root / "empty.ckpt").write_bytes(b"")
    (root / "noise.safetensors").write_bytes(bytes(np.random.default_rng(0).integers(1, 256, 2048, dtype=np.uint8)))
    (root / "notes.ckpt").write_text("not a model\n")
    monkeypatch.setattr(cache, "sha256_file", lambda *a, **k: pytest.fail("a listing hashed a file"))
    entries = {m.path.name: m for m in list_models(root)}
    assert entries["good.safetensors"].problem is None and entries["good.safetensors"].kind == "img2img"
    assert entries["good.ckpt"].problem is None
    assert entries["empty.ckpt"].problem == "empty.ckpt is empty (0 bytes): not a checkpoint"
    assert entries["notes.ckpt"].problem == "notes.ckpt is a text file, not a checkpoint"
    assert entries["noise.safetensors"].problem.startswith("noise.safetensors is not a safetensors file")
    assert all(m.kind == "?" and m.short_hash is None for m in entries.values() if m.problem)


# --------------------------------------------------------------------------------------------------
# incomplete diffusers folders: named at once, never the network
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def depth_folder(tmp_path_factory):
    from tests.test_models import save_folder

    path = tmp_path_factory.mktemp("hardening") / "tiny-depth"
    save_folder(path)
    return path


def _copy_without(folder, tmp_path, *parts):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    for part in parts:
        shutil.rmtree(copy / part)
    return copy


EXPECTED = "unet/, vae/, text_encoder/, tokenizer/, scheduler/, depth_estimator/, feature_extractor/"


@pytest.mark.parametrize("part", ["tokenizer", "text_encoder", "unet", "vae", "scheduler"])
@pytest.mark.parametrize("offline", [True, False], ids=["offline", "online"])
def test_a_missing_component_is_named_at_once(depth_folder, tmp_path, monkeypatch, no_network, part, offline):
    import time

    from depth2img import load_pipeline
    from depth2img.errors import ModelLoadError

    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    _copy_without(depth_folder, tmp_path, part)
    monkeypatch.chdir(tmp_path)  # a relative folder: "copy/tokenizer" would also be a valid hub id
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        load_pipeline("copy")
    assert str(info.value) == f"folder copy has no {part}/; expected {EXPECTED}"
    assert time.perf_counter() - start < 5


def test_a_depth_folder_with_an_estimator_but_no_feature_extractor_is_named(depth_folder, tmp_path, no_network):
    from depth2img import load_pipeline
    from depth2img.errors import ModelLoadError

    broken = _copy_without(depth_folder, tmp_path, "feature_extractor")
    with pytest.raises(ModelLoadError, match=r"has no feature_extractor/; expected unet/"):
        load_pipeline(str(broken))


def test_a_depth_folder_without_an_estimator_loads_and_needs_a_depth_map(depth_folder, tmp_path, no_network):
    from depth2img import load_pipeline
    from depth2img.errors import InvalidRequestError
    from tests.conftest import photo

    bare = _copy_without(depth_folder, tmp_path, "depth_estimator", "feature_extractor")
    pipe = load_pipeline(str(bare))
    assert pipe.kind == "depth" and pipe.depth_estimator is None
    image = photo("coffee", (32, 32))
    depth = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
    from PIL import Image

    res = pipe.generate(prompt="x", image=image, depth_map=Image.fromarray((depth * 255).astype(np.uint8)), steps=2, strength=1.0, seed=1)
    assert res.images[0].size == (32, 32)
    with pytest.raises(InvalidRequestError, match="depth model without a depth estimator: give a depth map or a depth model"):
        pipe.generate(prompt="x", image=image, steps=2, strength=1.0, seed=1)


def test_a_depth_model_folder_that_is_not_one_is_named(tmp_path, no_network):
    from depth2img import load_pipeline
    from depth2img.errors import ModelLoadError

    (tmp_path / "dm").mkdir()
    with pytest.raises(ModelLoadError, match=r"depth model folder .*dm has no config.json: not a transformers depth model folder"):
        load_pipeline("tiny", depth_model=str(tmp_path / "dm"))


def test_a_complete_folder_loads_with_sockets_refused(depth_folder, no_network, monkeypatch):
    from depth2img import load_pipeline

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert load_pipeline(str(depth_folder)).depth_estimator is not None


@pytest.mark.parametrize("part", ["tokenizer", "text_encoder", "unet", "scheduler"])
def test_every_from_pretrained_of_a_folder_is_local_only(depth_folder, tmp_path, monkeypatch, no_network, part):
    """Second line of defence: even without the up-front check, a missing part fails locally and fast."""
    import time

    from depth2img import load_pipeline
    from depth2img.errors import ModelLoadError
    from depth2img.models import folder

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(folder, "_check_parts", lambda *a, **k: None)
    _copy_without(depth_folder, tmp_path, part)
    monkeypatch.chdir(tmp_path)  # "copy/tokenizer" is also a valid hub id: the case that went online
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match=f"cannot load {part} from"):
        load_pipeline("copy")
    assert time.perf_counter() - start < 5


def test_an_empty_tokenizer_folder_is_named_not_loaded_as_an_empty_vocabulary(depth_folder, tmp_path, no_network):
    """transformers 5 returns a 2-token CLIPTokenizer for a folder without vocabulary files, silently."""
    from depth2img import load_pipeline
    from depth2img.errors import ModelLoadError

    broken = _copy_without(depth_folder, tmp_path, "tokenizer")
    (broken / "tokenizer").mkdir()
    with pytest.raises(ModelLoadError, match=r"tokenizer/ has no vocab.json and merges.txt \(or tokenizer.json\)"):
        load_pipeline(str(broken))


# --------------------------------------------------------------------------------------------------
# hub ids that cannot be used: one whole sentence, advice for the kind of model asked for
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offline", [True, False], ids=["offline", "no-network"])
@pytest.mark.parametrize("as_depth_model", [False, True], ids=["model", "depth-model"])
def test_an_unavailable_hub_id_is_one_whole_sentence(tmp_path, monkeypatch, offline, as_depth_model):
    import huggingface_hub.constants as hub

    from depth2img import load_pipeline
    from depth2img.errors import ModelLoadError

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", offline)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(OSError("refused")))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(OSError("refused")))
    with pytest.raises(ModelLoadError) as info:
        if as_depth_model:
            load_pipeline("tiny", depth_model="owner/depth-thing")
        else:
            load_pipeline("owner/thing")
    text = str(info.value)
    why = "downloads are off (HF_HUB_OFFLINE)" if offline else "the hub cannot be reached"
    if as_depth_model:
        assert text == (
            f"depth model 'owner/depth-thing' cannot be used: it is not in the Hugging Face cache and {why}; pass a "
            "local transformers depth model folder (config.json, weights and preprocessor_config.json) or a "
            "depth2img model folder with a depth_estimator/ instead."
        )
    else:
        assert text == (
            f"model 'owner/thing' cannot be used: it is not in the Hugging Face cache and {why}; pass a local "
            "diffusers model folder or a .ckpt/.safetensors checkpoint file instead."
        )


# --------------------------------------------------------------------------------------------------
# folder -> single file: refused up front when the file would not load back as the same model
# --------------------------------------------------------------------------------------------------


def test_a_non_standard_folder_is_not_converted_to_a_file_it_could_not_load_back(depth_folder, tmp_path):
    from depth2img.errors import ModelLoadError
    from depth2img.models.convert import convert

    out = tmp_path / "t.safetensors"
    with pytest.raises(ModelLoadError, match=r"would not load back from a single file \(not a standard SD 1.x/2.x "
                       r"architecture\): UNet: the checkpoint lacks .*; give its original .yaml with --config"):
        convert(depth_folder, out)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_folder_whose_file_would_load_with_other_settings_is_refused(tmp_path):
    """Same shapes, other behaviour: an SD2 img2img epsilon folder would load back from a yaml-less file as
    v-prediction (the rule for SD2 4-channel files) - refused, naming the field."""
    import json
    import shutil

    from depth2img.errors import ModelLoadError
    from depth2img.models.convert import convert
    from tests._sd2_layout import TINY_IMG2IMG_YAML, tiny_img2img_state_dict

    src = tmp_path / "src.safetensors"
    save_file(tiny_img2img_state_dict(seed=3), str(src))
    yaml = tmp_path / "src.yaml"
    yaml.write_text(TINY_IMG2IMG_YAML)
    folder = convert(src, tmp_path / "folder", config=yaml)
    assert json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "epsilon"
    other = tmp_path / "v.yaml"
    other.write_text(TINY_IMG2IMG_YAML.replace("    conditioning_key: crossattn\n", "    conditioning_key: crossattn\n    parameterization: v\n"))
    out = tmp_path / "out" / "t.safetensors"
    with pytest.raises(ModelLoadError, match=r"non-standard scheduler \(prediction_type 'epsilon'; a single file would load back with 'v_prediction'\)"):
        convert(folder, out, config=other)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert convert(folder, out, config=yaml).is_file()  # with its own yaml it round-trips
    shutil.rmtree(tmp_path / "out")


def test_an_sd2_file_without_the_unused_last_text_layer_keeps_23_layers():
    """Files written from diffusers SD2 folders (diffusers' own script, or depth2img convert without extras)
    hold 23 of OpenCLIP-H's 24 blocks: the missing one is the unused last layer, so all 23 are used
    (as A1111 does: it conditions on the penultimate of 24, i.e. block 22, plus ln_final)."""
    from depth2img.models.single_file import components_from_state_dict
    from tests._sd2_layout import layout

    shapes = {k: s for k, s in layout().items() if ".resblocks.23." not in k}
    sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    c = components_from_state_dict(sd, check_finite=False)
    assert c.text_encoder.config.num_hidden_layers == 23
