"""MiDaS DPT-Hybrid (``depth_model.model.*`` in the SD2-depth checkpoint) <-> transformers DPT key mapping.

Names follow transformers' historical ``convert_dpt_hybrid_to_pytorch.py`` (``rename_key`` + the qkv
split); this module implements both directions as pure functions on state dicts (no I/O, no models).

Original layout (Stability-AI/stablediffusion ``ldm/modules/midas``, timm 0.4-0.6 ``vit_base_resnet50_384``):

===============================================================  =========================================================
MiDaS (after ``depth_model.model.``)                              transformers ``DPTForDepthEstimation``
===============================================================  =========================================================
``pretrained.model.cls_token`` / ``pos_embed``                    ``dpt.embeddings.cls_token`` / ``position_embeddings``
``pretrained.model.patch_embed.proj``                             ``dpt.embeddings.projection``
``pretrained.model.patch_embed.backbone.stem.{conv,norm}``        ``dpt.embeddings.backbone.bit.embedder.{convolution,norm}``
``....backbone.stages.I.blocks.J.*``                              ``....bit.encoder.stages.I.layers.J.*``
``pretrained.model.blocks.I.norm1`` / ``norm2``                   ``dpt.encoder.layer.I.layernorm_before`` / ``_after``
``pretrained.model.blocks.I.attn.qkv`` [2304, 768]                ``....attention.attention.{query,key,value}`` (rows split)
``pretrained.model.blocks.I.attn.proj``                           ``....attention.output.dense``
``pretrained.model.blocks.I.mlp.fc1`` / ``fc2``                   ``....intermediate.dense`` / ``....output.dense``
``pretrained.model.norm``                                         ``dpt.layernorm``
``pretrained.model.head.*``                                       (ignored: unused ImageNet head)
``pretrained.act_postprocessK.0.project.0`` (K = 3, 4)            ``neck.reassemble_stage.readout_projects.K-1.0``
``pretrained.act_postprocessK.3`` / ``act_postprocess4.4``        ``neck.reassemble_stage.layers.K-1.projection`` / ``.3.resize``
``scratch.layerK_rn``                                             ``neck.convs.K-1``
``scratch.refinenetK.resConfUnitU.convC`` / ``out_conv``          ``neck.fusion_stage.layers.4-K.residual_layerU.convolutionC`` / ``projection``
``scratch.output_conv.{0,2,4}``                                   ``head.head.{0,2,4}``
===============================================================  =========================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from ..errors import CheckpointKeyError, ModelLoadError

MIDAS_PREFIX = "depth_model.model."

# (MiDaS pattern, HF replacement) applied to the key with MIDAS_PREFIX stripped; first match wins.
_RULES: list[tuple[str, str]] = [
    (r"pretrained\.model\.cls_token", "dpt.embeddings.cls_token"),
    (r"pretrained\.model\.pos_embed", "dpt.embeddings.position_embeddings"),
    (r"pretrained\.model\.patch_embed\.proj\.(weight|bias)", r"dpt.embeddings.projection.\1"),
    (r"pretrained\.model\.patch_embed\.backbone\.stem\.conv\.weight", "dpt.embeddings.backbone.bit.embedder.convolution.weight"),
    (r"pretrained\.model\.patch_embed\.backbone\.stem\.norm\.(weight|bias)", r"dpt.embeddings.backbone.bit.embedder.norm.\1"),
    (
        r"pretrained\.model\.patch_embed\.backbone\.stages\.(\d+)\.blocks\.(\d+)\."
        r"(conv[123]\.weight|norm[123]\.(?:weight|bias)|downsample\.conv\.weight|downsample\.norm\.(?:weight|bias))",
        r"dpt.embeddings.backbone.bit.encoder.stages.\1.layers.\2.\3",
    ),
    (r"pretrained\.model\.blocks\.(\d+)\.norm1\.(weight|bias)", r"dpt.encoder.layer.\1.layernorm_before.\2"),
    (r"pretrained\.model\.blocks\.(\d+)\.norm2\.(weight|bias)", r"dpt.encoder.layer.\1.layernorm_after.\2"),
    (r"pretrained\.model\.blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"dpt.encoder.layer.\1.attention.output.dense.\2"),
    (r"pretrained\.model\.blocks\.(\d+)\.mlp\.fc1\.(weight|bias)", r"dpt.encoder.layer.\1.intermediate.dense.\2"),
    (r"pretrained\.model\.blocks\.(\d+)\.mlp\.fc2\.(weight|bias)", r"dpt.encoder.layer.\1.output.dense.\2"),
    (r"pretrained\.model\.norm\.(weight|bias)", r"dpt.layernorm.\1"),
    (r"pretrained\.act_postprocess([34])\.0\.project\.0\.(weight|bias)", "neck.reassemble_stage.readout_projects.{K-1}.0.\\2"),
    (r"pretrained\.act_postprocess([34])\.3\.(weight|bias)", "neck.reassemble_stage.layers.{K-1}.projection.\\2"),
    (r"pretrained\.act_postprocess(4)\.4\.(weight|bias)", "neck.reassemble_stage.layers.{K-1}.resize.\\2"),
    (r"scratch\.layer([1-4])_rn\.weight", "neck.convs.{K-1}.weight"),
    (r"scratch\.refinenet([1-4])\.out_conv\.(weight|bias)", "neck.fusion_stage.layers.{4-K}.projection.\\2"),
    (
        r"scratch\.refinenet([1-4])\.resConfUnit([12])\.conv([12])\.(weight|bias)",
        "neck.fusion_stage.layers.{4-K}.residual_layer\\2.convolution\\3.\\4",
    ),
    (r"scratch\.output_conv\.([024])\.(weight|bias)", r"head.head.\1.\2"),
]
_COMPILED = [(re.compile(p + r"\Z"), r) for p, r in _RULES]
_QKV = re.compile(r"pretrained\.model\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)\Z")
IGNORED = re.compile(r"pretrained\.model\.head\.(weight|bias)\Z")  # timm's 1000-class head, unused by DPT


def _subst(m: re.Match[str], repl: str) -> str:
    if "{K-1}" in repl or "{4-K}" in repl:
        k = int(m.group(1))
        repl = repl.replace("{K-1}", str(k - 1)).replace("{4-K}", str(4 - k))
    return m.expand(repl)


def midas_key_to_dpt(key: str) -> list[str] | None:
    """HF key(s) one MiDaS key (without prefix) becomes; ``[]`` if ignored, ``None`` if unknown."""
    if IGNORED.match(key):
        return []
    m = _QKV.match(key)
    if m:
        i, kind = m.groups()
        return [f"dpt.encoder.layer.{i}.attention.attention.{n}.{kind}" for n in ("query", "key", "value")]
    for pat, repl in _COMPILED:
        m = pat.match(key)
        if m:
            return [_subst(m, repl)]
    return None


def midas_to_dpt(
    sd: Mapping[str, torch.Tensor], prefix: str = MIDAS_PREFIX
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Convert every ``prefix*`` key of ``sd`` to transformers DPT names.

    Returns ``(dpt_state_dict, ignored_original_keys)``. Raises :class:`ModelLoadError` naming the first
    key under ``prefix`` that has no mapping. The qkv split returns views (no copy).
    """
    out: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for full, t in sd.items():
        if not full.startswith(prefix):
            continue
        key = full[len(prefix) :]
        targets = midas_key_to_dpt(key)
        if targets is None:
            raise CheckpointKeyError(f"depth model: unexpected tensor {full!r} (not part of MiDaS DPT-Hybrid)")
        if not targets:
            ignored.append(full)
        elif len(targets) == 3:
            if t.shape[0] % 3:
                raise ModelLoadError(f"{full!r} has shape {list(t.shape)}; its first dimension must split in 3")
            for name, part in zip(targets, t.chunk(3, dim=0)):
                out[name] = part
        else:
            out[targets[0]] = t
    return out, ignored


# HF -> MiDaS, the inverse of _RULES (tests prove the two tables are inverse on the full real layout).
_REVERSE_RULES: list[tuple[str, str]] = [
    (r"dpt\.embeddings\.cls_token", "pretrained.model.cls_token"),
    (r"dpt\.embeddings\.position_embeddings", "pretrained.model.pos_embed"),
    (r"dpt\.embeddings\.projection\.(weight|bias)", r"pretrained.model.patch_embed.proj.\1"),
    (r"dpt\.embeddings\.backbone\.bit\.embedder\.convolution\.weight", "pretrained.model.patch_embed.backbone.stem.conv.weight"),
    (r"dpt\.embeddings\.backbone\.bit\.embedder\.norm\.(weight|bias)", r"pretrained.model.patch_embed.backbone.stem.norm.\1"),
    (
        r"dpt\.embeddings\.backbone\.bit\.encoder\.stages\.(\d+)\.layers\.(\d+)\."
        r"(conv[123]\.weight|norm[123]\.(?:weight|bias)|downsample\.conv\.weight|downsample\.norm\.(?:weight|bias))",
        r"pretrained.model.patch_embed.backbone.stages.\1.blocks.\2.\3",
    ),
    (r"dpt\.encoder\.layer\.(\d+)\.layernorm_before\.(weight|bias)", r"pretrained.model.blocks.\1.norm1.\2"),
    (r"dpt\.encoder\.layer\.(\d+)\.layernorm_after\.(weight|bias)", r"pretrained.model.blocks.\1.norm2.\2"),
    (r"dpt\.encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"pretrained.model.blocks.\1.attn.proj.\2"),
    (r"dpt\.encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", r"pretrained.model.blocks.\1.mlp.fc1.\2"),
    (r"dpt\.encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)", r"pretrained.model.blocks.\1.mlp.fc2.\2"),
    (r"dpt\.layernorm\.(weight|bias)", r"pretrained.model.norm.\1"),
    (r"neck\.reassemble_stage\.readout_projects\.([23])\.0\.(weight|bias)", "pretrained.act_postprocess{K+1}.0.project.0.\\2"),
    (r"neck\.reassemble_stage\.layers\.([23])\.projection\.(weight|bias)", "pretrained.act_postprocess{K+1}.3.\\2"),
    (r"neck\.reassemble_stage\.layers\.(3)\.resize\.(weight|bias)", "pretrained.act_postprocess{K+1}.4.\\2"),
    (r"neck\.convs\.([0-3])\.weight", "scratch.layer{K+1}_rn.weight"),
    (r"neck\.fusion_stage\.layers\.([0-3])\.projection\.(weight|bias)", "scratch.refinenet{4-K}.out_conv.\\2"),
    (
        r"neck\.fusion_stage\.layers\.([0-3])\.residual_layer([12])\.convolution([12])\.(weight|bias)",
        "scratch.refinenet{4-K}.resConfUnit\\2.conv\\3.\\4",
    ),
    (r"head\.head\.([024])\.(weight|bias)", r"scratch.output_conv.\1.\2"),
]
_REVERSE = [(re.compile(p + r"\Z"), r) for p, r in _REVERSE_RULES]


def dpt_key_to_midas(key: str) -> str | None:
    """Original MiDaS key (without prefix) for one non-qkv HF DPT key, or ``None`` if unknown."""
    for pat, repl in _REVERSE:
        m = pat.match(key)
        if m:
            if "{K+1}" in repl or "{4-K}" in repl:
                k = int(m.group(1))
                repl = repl.replace("{K+1}", str(k + 1)).replace("{4-K}", str(4 - k))
            return m.expand(repl)
    return None


def dpt_to_midas(sd: Mapping[str, torch.Tensor], prefix: str = MIDAS_PREFIX) -> dict[str, torch.Tensor]:
    """Inverse of :func:`midas_to_dpt` (qkv rows concatenated back). The unused ImageNet head is not
    recreated; a caller that kept it (see ``convert.py``'s extras) adds it back."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, t in sd.items():
        m = re.fullmatch(r"dpt\.encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)", key)
        if m:
            qkv.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = t
            continue
        orig = dpt_key_to_midas(key)
        if orig is None:
            raise ModelLoadError(f"unexpected depth-estimator key {key!r} (not part of DPT-Hybrid)")
        out[prefix + orig] = t
    for (i, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise ModelLoadError(f"depth estimator layer {i}: {kind} of query/key/value incomplete")
        out[f"{prefix}pretrained.model.blocks.{i}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0
        )
    return out
