"""Textual-inversion embeddings on the tiny model: files written here in A1111's and diffusers' formats."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from depth2img import load_pipeline
from depth2img.errors import InvalidRequestError, UnsafeCheckpointError
from depth2img.infotext import parse_infotext

DEPTH = np.linspace(0, 1, 32 * 32, dtype=np.float32).reshape(32, 32)  # depth only: no DPT run
FAST = dict(steps=2, seed=0, scheduler="ddim", depth_map=DEPTH, width=32, height=32)


def vectors(n, width=32, seed=1):
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed)) * 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("embeddings")
    torch.save({"string_to_param": {"*": vectors(2)}, "name": "bad-hands", "step": 100,
                "string_to_token": {"*": 265}, "sd_checkpoint": "abc", "sd_checkpoint_name": "x"}, root / "bad-hands.pt")
    save_file({"<shiny>": vectors(3, seed=2)}, str(root / "shiny.safetensors"))
    save_file({"emb_params": vectors(1, seed=3)}, str(root / "kohya.safetensors"))
    save_file({"<wide>": vectors(1, width=48)}, str(root / "wide.safetensors"))
    return root


@pytest.fixture(scope="module")
def ti_pipe(folder):
    return load_pipeline("tiny", embeddings_dir=folder)


def image(pipe, **fields):
    return np.asarray(pipe.generate(**{**FAST, **fields}).images[0])


@torch.no_grad()
def test_vectors_replace_the_name_tokens(ti_pipe):
    tok, enc = ti_pipe.tokenizer, ti_pipe.text_encoder
    got = ti_pipe._encode_text("a shiny cat", "prompt", [])
    a, cat = (tok(t, add_special_tokens=False).input_ids for t in ("a ", " cat"))
    ids = [tok.bos_token_id] + a + [0, 0, 0] + cat + [tok.eos_token_id]
    ids += [tok.pad_token_id] * (77 - len(ids))
    start = 1 + len(a)

    def put(module, args, output):  # written out here, not taken from depth2img
        output = output.clone()
        output[0, start : start + 3] = vectors(3, seed=2)
        return output

    handle = enc.get_input_embeddings().register_forward_hook(put)
    try:
        expected = enc(torch.tensor([ids]))[0]
    finally:
        handle.remove()
    assert torch.equal(got, expected)
    assert not torch.equal(got, ti_pipe._encode_text("a cat", "prompt", []))


def test_each_format_changes_the_output_and_is_named_in_the_infotext(ti_pipe, tiny_pipe, folder):
    for name, saved in (("bad-hands", vectors(2)), ("shiny", vectors(3, seed=2)), ("kohya", vectors(1, seed=3))):
        assert torch.equal(ti_pipe.embeddings.get(name).vectors, saved), name  # every vector of each format
        result = ti_pipe.generate(**FAST, prompt="a cat", negative_prompt=name)
        assert not np.array_equal(np.asarray(result.images[0]), image(tiny_pipe, prompt="a cat", negative_prompt=name)), name
        path = next(folder.glob(name + ".*"))
        short = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        assert parse_infotext(result.infotexts[0])["TI hashes"] == f"{name}: {short}"


def test_prompt_without_a_name_equals_a_fresh_pipeline(ti_pipe, tiny_pipe):
    image(ti_pipe, prompt="a shiny cat", negative_prompt="bad-hands")  # used, then not
    got = ti_pipe.generate(**FAST, prompt="a cat", negative_prompt="blurry")
    assert np.array_equal(np.asarray(got.images[0]), image(tiny_pipe, prompt="a cat", negative_prompt="blurry"))
    assert "TI hashes" not in parse_infotext(got.infotexts[0])
    fresh = load_pipeline("tiny")
    for a, b in zip(ti_pipe.text_encoder.state_dict().values(), fresh.text_encoder.state_dict().values()):
        assert torch.equal(a, b)
    assert len(ti_pipe.tokenizer) == len(fresh.tokenizer)
    assert not ti_pipe.text_encoder.get_input_embeddings()._forward_hooks


def test_wrong_width_refused_naming_file_and_widths(ti_pipe):
    with pytest.raises(InvalidRequestError, match=r"^embedding wide.safetensors is 48 wide but this model's text "
                                                  r"encoder is 32 wide"):
        ti_pipe.generate(**FAST, prompt="a wide cat")
    assert not ti_pipe.text_encoder.get_input_embeddings()._forward_hooks


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_malicious_pickle_refused(tmp_path, capsys):
    torch.save({"string_to_param": {"*": Evil()}}, tmp_path / "evil.pt")
    with open(tmp_path / "raw.pt", "wb") as handle:
        pickle.dump({"emb_params": Evil()}, handle, protocol=2)
    pipe = load_pipeline("tiny", embeddings_dir=tmp_path)
    for name in ("evil", "raw"):
        with pytest.raises(UnsafeCheckpointError, match="refused to load"):
            pipe.generate(**FAST, prompt=f"a {name} cat")
    assert "pwned" not in capsys.readouterr().out


def test_cli_embeddings_dir(folder, tmp_path):
    from typer.testing import CliRunner

    from depth2img.cli import app

    np.save(tmp_path / "d.npy", DEPTH)
    out = tmp_path / "o.png"
    args = ["generate", "--model", "tiny", "--depth", str(tmp_path / "d.npy"), "--width", "32", "--height", "32",
            "--steps", "2", "--seed", "0", "-p", "a cat", "-n", "bad-hands", "-o", str(out)]
    result = CliRunner().invoke(app, args + ["--embeddings-dir", str(folder)])
    assert result.exit_code == 0, result.output
    from PIL import Image

    assert 'TI hashes: "bad-hands: ' in Image.open(out).info["parameters"]
    result = CliRunner().invoke(app, args + ["--embeddings-dir", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "--embeddings-dir: folder not found" in result.output
