"""Checkpoint reading never runs code from the file, and rejects malformed safetensors before allocating.

Each malicious pickle's payload would create a marker file; the tests assert the load is refused with
:class:`UnsafeCheckpointError` *and* the marker does not exist afterwards.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from depth2img.errors import CorruptCheckpointError, ModelLoadError, UnsafeCheckpointError
from depth2img.models import safe_load
from depth2img.models.safe_load import (
    find_non_finite,
    load_state_dict,
    read_safetensors_header,
)

# --------------------------------------------------------------------------------------------------
# payloads: every one would create `marker` if it ever ran
# --------------------------------------------------------------------------------------------------


class OsSystem:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Eval:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').close()",))


class Exec:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


class Subprocess:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (subprocess.call, (["touch", self.marker],))


PAYLOADS = [OsSystem, Eval, Exec, Subprocess]


def _layouts(payload):
    """(name, object, torch.save kwargs): top level, nested in the state dict, legacy non-zip format."""
    return [
        ("top_level", payload, {}),
        ("nested_in_state_dict", {"state_dict": {"w": torch.ones(3), "x": {"y": [payload]}}, "global_step": 1}, {}),
        ("legacy_format", {"state_dict": {"w": torch.ones(3), "evil": payload}}, {"_use_new_zipfile_serialization": False}),
    ]


@pytest.mark.parametrize("payload_cls", PAYLOADS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("layout", ["top_level", "nested_in_state_dict", "legacy_format"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload_cls, layout):
    marker = tmp_path / "PWNED"
    name, obj, kw = next(x for x in _layouts(payload_cls(marker)) if x[0] == layout)
    path = tmp_path / f"evil_{name}.ckpt"
    torch.save(obj, path, **kw)
    assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError, match="refused to load .*Nothing was executed"):
        load_state_dict(path)
    assert not marker.exists(), "the payload ran"


def test_payload_in_a_hand_built_zip_member_is_refused(tmp_path):
    """A torch-style zip whose data.pkl is a plain pickle with a payload, written without torch.save."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "handmade.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"state_dict": {"a": Exec(marker)}}, protocol=2))
        z.writestr("archive/version", "3\n")
        z.writestr("archive/byteorder", "little")
    with pytest.raises(UnsafeCheckpointError):
        load_state_dict(path)
    assert not marker.exists()


def test_raw_pickle_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "raw.pth"
    path.write_bytes(pickle.dumps(OsSystem(marker)))
    with pytest.raises(UnsafeCheckpointError):
        load_state_dict(path)
    assert not marker.exists()


def test_error_names_the_forbidden_global(tmp_path):
    path = tmp_path / "e.ckpt"
    torch.save({"state_dict": {"a": Eval(tmp_path / "m")}}, path)
    with pytest.raises(UnsafeCheckpointError, match="`eval`"):
        load_state_dict(path)


# --------------------------------------------------------------------------------------------------
# legitimate pickles: Lightning wrapper, stub class, numpy scalars, legacy format, 0-d EMA counters
# --------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_lightning(monkeypatch):
    """Make `pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint` importable only while saving."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    mods = [types.ModuleType(n) for n in names]
    cls = type("ModelCheckpoint", (), {"__module__": names[-1]})
    mods[-1].ModelCheckpoint = cls
    for n, m in zip(names, mods):
        monkeypatch.setitem(sys.modules, n, m)
    return cls


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_lightning_checkpoint_loads_without_lightning(tmp_path, monkeypatch, fake_lightning, zip_format):
    sd = {"model.w": torch.randn(4, 3), "model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(7)}
    ckpt = {
        "state_dict": sd,
        "global_step": 875000,
        "epoch": 3,
        "pytorch-lightning_version": "1.4.2",
        "callbacks": {fake_lightning: {"best_model_score": np.float64(0.25), "monitor": "val/loss"}},
    }
    path = tmp_path / "lightning.ckpt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=zip_format)
    for n in list(sys.modules):
        if n.startswith("pytorch_lightning"):
            monkeypatch.delitem(sys.modules, n)
    out = load_state_dict(path)
    assert set(out) == set(sd)
    for k in sd:
        assert torch.equal(out[k], sd[k])


def test_flat_pickle_without_wrapper(tmp_path):
    sd = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2, dtype=torch.float16)}
    path = tmp_path / "flat.pt"
    torch.save(sd, path)
    out = load_state_dict(path)
    assert out.keys() == sd.keys() and out["b"].dtype == torch.float16


def test_non_tensor_in_state_dict_is_named(tmp_path):
    path = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {"a": torch.ones(1), "b": "hello"}}, path)
    with pytest.raises(ModelLoadError, match="'b'"):
        load_state_dict(path)


def test_truncated_checkpoint_is_corrupt_not_unsafe(tmp_path):
    path = tmp_path / "t.ckpt"
    torch.save({"state_dict": {"a": torch.ones(1000)}}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CorruptCheckpointError):
        load_state_dict(path)


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_state_dict(tmp_path / "nope.ckpt")
    (tmp_path / "x.onnx").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="unknown checkpoint type"):
        load_state_dict(tmp_path / "x.onnx")


# --------------------------------------------------------------------------------------------------
# safetensors header validation (before allocation)
# --------------------------------------------------------------------------------------------------


def _write_st(path, header: dict, data: bytes = b"", header_len: int | None = None):
    raw = json.dumps(header).encode()
    n = len(raw) if header_len is None else header_len
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path


def test_valid_safetensors_roundtrip_and_mmap(tmp_path):
    sd = {"a": torch.randn(3, 4), "b": torch.randn(5).half(), "c": torch.tensor(3)}
    path = tmp_path / "ok.safetensors"
    save_file(sd, str(path))
    hdr = read_safetensors_header(path)
    assert set(hdr) == set(sd)
    out = load_state_dict(path)
    for k in sd:
        assert torch.equal(out[k], sd[k]) and out[k].dtype == sd[k].dtype


@pytest.mark.parametrize(
    "case, header, data, header_len, match",
    [
        ("absurd_length", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, 2**62, "is not a safetensors file: .*header length"),
        ("length_past_eof", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, 10_000, "is not a safetensors file: .*header length"),
        ("offset_past_eof", {"a": {"dtype": "F32", "shape": [1000000000], "data_offsets": [0, 4000000000]}}, b"\0" * 4, None, "is truncated"),
        ("size_mismatch", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, None, "invalid shape, data type, or offset"),
        ("overlap", {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, None, "invalid offset for tensor `b`"),
        ("gap", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, None, "invalid offset for tensor `a`"),
        ("trailing", {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 12, None, "not fully covered"),
        ("bad_dtype", {"a": {"dtype": "X9", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, None, "X9"),
        ("negative_dim", {"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, None, "-1"),
        ("huge_dim", {"a": {"dtype": "F32", "shape": [2**50, 2**50], "data_offsets": [0, 4]}}, b"\0" * 4, None, "overflow"),
        ("not_object", [1, 2, 3], b"", None, "sequence"),
    ],
)
def test_bad_safetensors_rejected_before_a_tensor_is_read(tmp_path, monkeypatch, case, header, data, header_len, match):
    """Our length sniffing or the safetensors library's own header validation (on open) rejects each."""
    from safetensors import safe_open

    path = _write_st(tmp_path / f"{case}.safetensors", header, data, header_len)
    opened = []

    class NoTensorRead:  # proves no tensor of an invalid file is ever read
        def __init__(self, *a, **k):
            self.inner = safe_open(*a, **k)

        def __enter__(self):
            opened.append(self.inner.__enter__())
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def get_tensor(self, key):
            raise AssertionError("a tensor of an invalid file was read")

    with pytest.raises(CorruptCheckpointError, match=match):
        read_safetensors_header(path)  # what the catalog and the cache rely on, without loading
    monkeypatch.setattr("safetensors.safe_open", NoTensorRead)
    with pytest.raises(CorruptCheckpointError, match=match):
        load_state_dict(path)


def test_duplicate_names_rejected(tmp_path):
    raw = b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    path = tmp_path / "dup.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    with pytest.raises(CorruptCheckpointError, match="duplicate"):
        load_state_dict(path)


def test_too_many_tensors_rejected(tmp_path, monkeypatch):
    monkeypatch.setattr(safe_load, "MAX_TENSORS", 10)
    header = {f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(11)}
    path = _write_st(tmp_path / "bloat.safetensors", header, b"\0" * 11)
    with pytest.raises(CorruptCheckpointError, match="limit"):
        load_state_dict(path)


# --------------------------------------------------------------------------------------------------
# NaN / Inf
# --------------------------------------------------------------------------------------------------


def test_non_finite_weights_are_found(tmp_path):
    sd = {"ok": torch.ones(3), "nan": torch.tensor([1.0, float("nan")]), "inf": torch.tensor([float("-inf")]).half(),
          "int": torch.tensor([1, 2])}
    path = tmp_path / "nan.safetensors"
    save_file(sd, str(path))
    assert sorted(find_non_finite(load_state_dict(path))) == ["inf", "nan"]
    assert find_non_finite(sd, ["ok", "int"]) == []


# --------------------------------------------------------------------------------------------------
# files that are not checkpoints: one sentence saying what the file is not; never "unsafe"
# --------------------------------------------------------------------------------------------------


def _random_bytes(n=4096):
    data = bytearray(np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes())
    data[0] = 0x17  # neither a zip ("PK") nor a pickle (0x80) header; the rest is random
    return bytes(data)


def _truncated(path, save):
    save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BAD_FILES = [
    ("empty", ".ckpt", lambda p: p.write_bytes(b""), r"is empty \(0 bytes\): not a checkpoint$"),
    ("empty", ".safetensors", lambda p: p.write_bytes(b""), r"is empty \(0 bytes\): not a checkpoint$"),
    ("text", ".ckpt", lambda p: p.write_text("model: {params: {}}\nhello é\n"), r"is a text file, not a checkpoint$"),
    ("text", ".safetensors", lambda p: p.write_text("version https://git-lfs.github.com/spec/v1\n"), r"is a text file, not a checkpoint$"),
    ("random", ".ckpt", lambda p: p.write_bytes(_random_bytes()), r"is not a PyTorch checkpoint \(no zip or pickle header\)$"),
    ("random", ".safetensors", lambda p: p.write_bytes(_random_bytes()), r"is not a safetensors file: .*header length"),
    ("zeros", ".ckpt", lambda p: p.write_bytes(bytes(4096)), r"is not a PyTorch checkpoint \(no zip or pickle header\)$"),
    ("zeros", ".safetensors", lambda p: p.write_bytes(bytes(4096)), r"is not a safetensors file: .*header length of 0"),
    ("truncated_zip", ".ckpt", lambda p: _truncated(p, lambda q: torch.save({"a": torch.ones(2000)}, q)), r"is a truncated or damaged PyTorch zip checkpoint"),
    ("truncated_legacy", ".ckpt", lambda p: _truncated(p, lambda q: torch.save({"a": torch.ones(2000)}, q, _use_new_zipfile_serialization=False)), r"is a truncated or damaged PyTorch checkpoint"),
    ("truncated", ".safetensors", lambda p: _truncated(p, lambda q: save_file({"a": torch.ones(2000)}, str(q))), r"is truncated: its header describes 8000 bytes"),
]


@pytest.mark.parametrize("case, suffix, write, message", BAD_FILES, ids=[f"{c}{s}" for c, s, _, _ in BAD_FILES])
def test_a_file_that_is_not_a_checkpoint_is_named_in_one_sentence(tmp_path, case, suffix, write, message):
    path = tmp_path / f"x{suffix}"
    write(path)
    with pytest.raises(CorruptCheckpointError) as info:
        load_state_dict(path)
    text = str(info.value)
    assert not isinstance(info.value, UnsafeCheckpointError)
    assert text.startswith(f"x{suffix} ") and "\n" not in text and not text.rstrip().endswith(":"), text
    assert __import__("re").search(message, text), text


def test_a_protocol_4_pickle_asking_for_a_global_is_unsafe_not_corrupt(tmp_path):
    """torch's weights-only unpickler stops at the protocol-4 FRAME opcode before it reads the global;
    the file is still named unsafe, with the global it asks for (read by pickletools, never run)."""
    marker = tmp_path / "PWNED"
    path = tmp_path / "p4.ckpt"
    path.write_bytes(pickle.dumps(OsSystem(marker), protocol=4))
    with pytest.raises(UnsafeCheckpointError, match=r"asks for `(posix|os)\.system`"):
        load_state_dict(path)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# our allow-list (on top of torch's weights-only set) is consulted: what it admits, and only that
# --------------------------------------------------------------------------------------------------


def _numpy_scalar_checkpoint(path):
    torch.save({"state_dict": {"w": torch.ones(2)}, "best_score": np.float64(0.25)}, path)  # numpy scalar global
    return path


def test_our_allow_list_admits_numpy_scalars(tmp_path):
    assert set(load_state_dict(_numpy_scalar_checkpoint(tmp_path / "np.ckpt"))) == {"w"}


@pytest.mark.parametrize("drop", ["scalar", "all"])
def test_without_our_allow_list_entry_the_same_file_is_refused(tmp_path, monkeypatch, drop):
    """The numpy globals are admitted by *our* list only: removing its entries makes torch refuse the file."""
    path = _numpy_scalar_checkpoint(tmp_path / "np.ckpt")
    full = safe_load._extra_safe_globals
    reduced = [] if drop == "all" else [(obj, name) for obj, name in full() if not name.endswith(".scalar")]
    monkeypatch.setattr(safe_load, "_extra_safe_globals", lambda: reduced)
    match = r"asks for `numpy\.(_core|core)\.multiarray\.scalar`" if drop == "scalar" else r"asks for `numpy\."
    with pytest.raises(UnsafeCheckpointError, match=match):
        load_state_dict(path)


def test_a_global_outside_our_allow_list_is_refused_even_if_harmless_looking(tmp_path):
    """A numpy *array* (numpy.core.multiarray._reconstruct) is not on the list: refused, named, not loaded."""
    path = tmp_path / "arr.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "extra": np.zeros(3)}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"asks for `numpy\.(_core|core)\.multiarray\._reconstruct`"):
        load_state_dict(path)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_finite_check_agrees_with_numpy_isfinite(dtype):
    """The one-pass check (aminmax) against numpy's elementwise isfinite: NaN, +Inf and -Inf at the first,
    a middle and the last position (vectorised bodies and scalar tails), 0-d and non-contiguous tensors, and
    huge finite values whose sum overflows (a sum-based shortcut would call those non-finite)."""
    import numpy as np

    from depth2img.models.safe_load import is_finite

    big = torch.finfo(dtype).max
    cases = {"huge": torch.full((1000,), big, dtype=dtype), "neg-huge": torch.full((33,), -big, dtype=dtype),
             "scalar": torch.tensor(2.0, dtype=dtype), "scalar-nan": torch.tensor(float("nan"), dtype=dtype),
             "transposed": torch.randn(37, 19).to(dtype).t()}
    for bad in (float("nan"), float("inf"), float("-inf")):
        for n in (1, 31, 4099):
            for pos in sorted({0, n // 2, n - 1}):
                t = torch.randn(n).to(dtype)
                t[pos] = bad
                cases[f"{bad}@{pos}/{n}"] = t
        t = torch.randn(64, 65).to(dtype)
        t[63, 64] = bad
        cases[f"{bad} transposed"] = t.t()
    for name, t in cases.items():
        expected = bool(np.isfinite(t.double().numpy()).all())  # bf16/fp16 -> fp64 is exact
        assert is_finite(t) == expected, name
    assert sorted(find_non_finite(cases)) == sorted(k for k, t in cases.items() if not np.isfinite(t.double().numpy()).all())
