"""Restart path of a pickle checkpoint: the second load reads the cached safetensors copy (the pickle is not
opened again), every weight equals the file's tensor as safetensors' own ``load_file`` and diffusers' own
converters give it, no parameter or buffer is left on the meta device, and the large weights are not copied:
they live in the kernel's memory mapping of the cached file (``/proc/self/maps``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests._sd2_layout import TINY_YAML, tiny_original_state_dict


@pytest.fixture(scope="module")
def loaded_twice(tmp_path_factory):
    from depth2img import load_pipeline
    from depth2img.models import safe_load

    d = tmp_path_factory.mktemp("restart")
    ckpt, cache = d / "depth.ckpt", d / "cache"
    torch.save({"state_dict": tiny_original_state_dict(seed=3), "global_step": 1}, ckpt)
    ckpt.with_suffix(".yaml").write_text(TINY_YAML)
    load_pipeline(str(ckpt), cache_dir=cache)  # first start: converts the pickle once
    (cached,) = cache.glob("*.safetensors")

    def no_pickle(*args, **kwargs):
        raise AssertionError("a cache hit must not read the pickle again")

    original = safe_load.load_pickle_checkpoint
    safe_load.load_pickle_checkpoint = no_pickle
    try:
        import depth2img.models.cache as cache_module

        cache_module.load_pickle_checkpoint = no_pickle
        pipe = load_pipeline(str(ckpt), cache_dir=cache)  # second start
    finally:
        safe_load.load_pickle_checkpoint = original
        cache_module.load_pickle_checkpoint = original
    return pipe, cached


def test_second_start_weights_equal_the_cached_file(loaded_twice):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint
    from safetensors.torch import load_file

    pipe, cached = loaded_twice
    file = load_file(str(cached))  # independent reader: safetensors' own, no depth2img code
    checks = {
        "unet": (pipe.unet, convert_ldm_unet_checkpoint(file, pipe.unet.config)),
        "vae": (pipe.vae, convert_ldm_vae_checkpoint({k: v for k, v in file.items() if k.startswith("first_stage_model.")}, pipe.vae.config)),
    }
    for part, (model, expected) in checks.items():
        state = model.state_dict()
        assert set(state) == set(expected), part
        for k, v in expected.items():
            assert torch.equal(state[k], v.reshape(state[k].shape)), f"{part}.{k} differs from the file"
    text_values = {float(t.double().sum()) for t in pipe.text_encoder.state_dict().values()}
    token = file["cond_stage_model.model.token_embedding.weight"]
    assert float(token.double().sum()) in text_values  # the text tower came from this file too


def test_no_parameter_or_buffer_left_on_meta(loaded_twice):
    pipe, _ = loaded_twice
    for part in ("unet", "vae", "text_encoder", "depth_estimator"):
        model = getattr(pipe, part)
        meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
        assert not meta, f"{part}: {meta[:3]} left on the meta device"
        assert all(torch.isfinite(p).all() for p in model.parameters()), part


def _mapped_ranges(path: Path) -> list[tuple[int, int]]:
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5] == str(path):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            ranges.append((lo, hi))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc to see memory mappings")
def test_second_start_weights_are_memory_mapped_not_copied(loaded_twice):
    pipe, cached = loaded_twice
    ranges = _mapped_ranges(cached.resolve())
    assert ranges, "the cached safetensors file is not memory-mapped"
    for name, p in pipe.unet.named_parameters():
        ptr = p.untyped_storage().data_ptr()
        assert any(lo <= ptr < hi for lo, hi in ranges), f"unet.{name} was copied out of the mapped file"


# --------------------------------------------------------------------------------------------------
# the finite check is paid once per cache entry, and an edited entry is checked again
# --------------------------------------------------------------------------------------------------


def _tensor_bytes(path: Path, key: str) -> tuple[int, int]:
    """(file offset, byte length) of ``key``'s data, read from the safetensors header by hand (the format
    README's layout: 8-byte little-endian header length, JSON header, data) - no depth2img code."""
    import json

    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    start, end = header[key]["data_offsets"]
    return 8 + n + start, end - start


def test_cache_entry_is_checked_once_and_an_edited_entry_again(tmp_path, monkeypatch):
    import numpy as np
    from safetensors.torch import load_file

    from depth2img.errors import NonFiniteWeightsError
    from depth2img.models import single_file
    from depth2img.models.single_file import load_single_file

    ckpt, cache = tmp_path / "depth.ckpt", tmp_path / "cache"
    torch.save({"state_dict": tiny_original_state_dict(seed=5)}, ckpt)
    ckpt.with_suffix(".yaml").write_text(TINY_YAML)
    load_single_file(ckpt, cache_dir=cache)  # converts, checks every tensor, marks the entry
    (entry,) = cache.glob("*.safetensors")
    assert all(np.isfinite(v.double().numpy()).all() for v in load_file(str(entry)).values())  # numpy agrees

    calls = []
    real = single_file.find_non_finite
    monkeypatch.setattr(single_file, "find_non_finite", lambda sd, keys=None: calls.append(keys) or real(sd, keys))
    load_single_file(ckpt, cache_dir=cache)
    assert calls == [], "an unchanged, verified cache entry must not be read by the finite check again"

    # a NaN written into a UNet weight of the cached copy in place (size, header and inode unchanged)
    offset, length = _tensor_bytes(entry, "model.diffusion_model.out.2.bias")
    with open(entry, "r+b") as f:
        f.seek(offset)
        f.write(np.full(length // 4, np.nan, dtype="<f4").tobytes())
    assert torch.isnan(load_file(str(entry))["model.diffusion_model.out.2.bias"]).all()
    with pytest.raises(NonFiniteWeightsError, match="model.diffusion_model.out.2.bias"):
        load_single_file(ckpt, cache_dir=cache)
    assert calls, "the edited entry was not checked"


def test_cache_entry_with_a_nan_in_an_ignored_tensor_is_never_marked(tmp_path):
    from depth2img.models.cache import verified_finite
    from depth2img.models.single_file import load_single_file

    ckpt, cache = tmp_path / "depth.ckpt", tmp_path / "cache"
    sd = dict(tiny_original_state_dict(seed=6), **{"model_ema.decay": torch.tensor(float("nan"))})
    torch.save({"state_dict": sd}, ckpt)
    ckpt.with_suffix(".yaml").write_text(TINY_YAML)
    assert load_single_file(ckpt, cache_dir=cache).kind == "depth"  # an ignored NaN loads (used ones checked)
    (entry,) = cache.glob("*.safetensors")
    assert not verified_finite(entry)  # so every later start checks the used tensors again


def test_a_cache_folder_that_cannot_take_the_marker_still_loads(tmp_path, monkeypatch):
    from depth2img.models import cache as cache_module
    from depth2img.models.single_file import load_single_file

    ckpt, cache = tmp_path / "depth.ckpt", tmp_path / "cache"
    torch.save({"state_dict": tiny_original_state_dict(seed=7)}, ckpt)
    ckpt.with_suffix(".yaml").write_text(TINY_YAML)
    load_single_file(ckpt, cache_dir=cache)  # converts: the entry exists
    (entry,) = cache.glob("*.safetensors")
    entry.with_name(entry.name + ".finite.json").unlink()

    def full(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cache_module, "atomic_write_bytes", full)
    assert load_single_file(ckpt, cache_dir=cache).kind == "depth"
    assert not cache_module.verified_finite(entry)
