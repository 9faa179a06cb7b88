"""LoRA on the tiny model: files written here in diffusers/peft and kohya formats."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from depth2img import load_pipeline
from depth2img.errors import InvalidRequestError
from depth2img.infotext import parse_infotext

DEPTH = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)
FAST = dict(steps=2, seed=0, scheduler="ddim", depth_map=DEPTH, width=32, height=32, prompt="a cat")
RANK = 2


def _targets(model, suffixes):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.endswith(suffixes)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    pipe = load_pipeline("tiny")
    g = torch.Generator().manual_seed(0)
    peft, kohya = {}, {}
    for prefix, model, suffixes in (("unet", pipe.unet, ("to_q", "to_k", "to_v", "to_out.0")),
                                    ("text_encoder", pipe.text_encoder, ("q_proj", "v_proj"))):
        for name, linear in _targets(model, suffixes):
            down = torch.randn(RANK, linear.in_features, generator=g)
            up = torch.randn(linear.out_features, RANK, generator=g)
            peft[f"{prefix}.{name}.lora_A.weight"] = down
            peft[f"{prefix}.{name}.lora_B.weight"] = up
            if prefix == "unet":
                key = "lora_unet_" + name.replace(".", "_")
                kohya[f"{key}.lora_down.weight"] = down
                kohya[f"{key}.lora_up.weight"] = up
                kohya[f"{key}.alpha"] = torch.tensor(float(RANK))
    save_file(peft, str(root / "peft.safetensors"))
    save_file(kohya, str(root / "kohya.safetensors"))
    return root


@pytest.fixture(scope="module")
def lora_pipe(folder):
    return load_pipeline("tiny", lora_dir=folder)


def image(pipe, **fields):
    return np.asarray(pipe.generate(**{**FAST, **fields}).images[0])


def test_lora_changes_the_output_and_is_named_in_the_infotext(lora_pipe, tiny_pipe, folder):
    base = image(tiny_pipe)
    for name in ("peft", "kohya"):
        result = lora_pipe.generate(**{**FAST, "prompt": f"a cat <lora:{name}:0.8>"})
        assert not np.array_equal(np.asarray(result.images[0]), base), name
        data = (folder / f"{name}.safetensors").read_bytes()
        addnet = hashlib.sha256(data[8 + int.from_bytes(data[:8], "little"):]).hexdigest()[:12]
        info = parse_infotext(result.infotexts[0])
        assert info["Lora hashes"] == f"{name}: {addnet}" and info["Prompt"] == f"a cat <lora:{name}:0.8>"
        flag = image(lora_pipe, loras=(f"{name}:0.8",))
        assert np.array_equal(flag, np.asarray(result.images[0]))  # --lora NAME:W is the tag


def test_weight_zero_equals_no_lora(lora_pipe, tiny_pipe):
    assert np.array_equal(image(lora_pipe, prompt="a cat <lora:peft:0>"), image(tiny_pipe))


def test_next_request_is_clean(lora_pipe, tiny_pipe):
    image(lora_pipe, prompt="a cat <lora:peft:1>")
    image(lora_pipe, loras=("kohya:1",))
    assert np.array_equal(image(lora_pipe), image(tiny_pipe))
    fresh = load_pipeline("tiny")
    for mine, theirs in ((lora_pipe.unet, fresh.unet), (lora_pipe.text_encoder, fresh.text_encoder)):
        assert list(mine.state_dict()) == list(theirs.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), theirs.state_dict().values()))


def test_unknown_and_bad_weights(lora_pipe):
    with pytest.raises(InvalidRequestError, match=r"unknown LoRA 'nope'; LoRAs: kohya, peft"):
        lora_pipe.generate(**FAST, loras=("nope:1",))
    with pytest.raises(InvalidRequestError, match=r"weight 'x' is not a number"):
        lora_pipe.generate(**{**FAST, "prompt": "a <lora:peft:x>"})
    result = lora_pipe.generate(**{**FAST, "prompt": "a cat <lora:missing:1>"})
    assert any("LoRA 'missing' not found" in note for note in result.warnings)


def test_low_memory_restores_the_text_encoder_for_a_lora_and_releases_it_after(lora_pipe, folder):
    """CPU low memory releases the text encoder between uses: a text-encoder LoRA is attached to the restored
    encoder (peft's layers) and the encoder is released only after they are removed."""
    low = load_pipeline("tiny", lora_dir=folder, low_memory=True)
    for prompt in ("a cat <lora:peft:0.8>", "a cat", "a dog <lora:peft:1>"):
        assert np.array_equal(image(low, prompt=prompt), image(lora_pipe, prompt=prompt)), prompt
        assert all(t.device.type == "meta" for t in [*low.text_encoder.parameters(), *low.text_encoder.buffers()])
    assert list(low.text_encoder.state_dict()) == list(lora_pipe.text_encoder.state_dict())  # no peft layer left
