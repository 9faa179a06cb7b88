"""AUTOMATIC1111's API, ``/sdapi/v1``: existing clients work unchanged (reference ux_anchors.md §2).

A thin translation: A1111's field names and integer codes (looked up in :mod:`depth2img.a1111`) become
the one :class:`GenerationRequest`, which runs through the same queue and worker as the native API.
Where we follow A1111 and where we cannot:

- ``img2img``/``txt2img`` answer when the job is done (A1111's calls are synchronous too), with
  ``{images, parameters, info}``; ``info`` is a JSON string in ``Processed.js()``'s shape.
- Defaults are A1111's API defaults (``StableDiffusionProcessingImg2Img``): steps 50, cfg_scale 7,
  denoising_strength 0.75, 512x512, sampler "Euler" (``sampler_index``'s default), inpainting_fill 0,
  inpaint_full_res True, inpaint_full_res_padding 0, mask_blur 4. A1111 always resizes the init image to
  width x height; so do we. Inpainting fields are ignored without a mask, as in A1111.
- ``n_iter`` batches run as one batch of ``batch_size * n_iter`` images; the seeds are A1111's
  ``all_seeds`` (seed + i) either way. There are no variation seeds: ``subseed_strength`` is ignored and
  ``all_subseeds`` reports the seeds.
- ``styles`` names saved styles of ``--styles-file``; an unknown one is a 422 (A1111 skips it silently, so the
  picture would lack what the client asked for); ``<lora:...>`` tags and
  embedding names in the prompt use ``--lora-dir`` / ``--embeddings-dir`` (server/extras.py; the listings
  ``/prompt-styles``, ``/loras``, ``/embeddings`` are in server/extra_networks.py).
- Unknown fields (restore_faces, tiling, s_churn, ...) are accepted and ignored, as a real client
  sends them; an unknown always-on script is 422 "always on script ... not found", as A1111.
- Sampler names are A1111's (v1.9+ ``sampler_name`` + ``scheduler``); pre-1.9 combined names such as
  "DPM++ 2M Karras" are accepted too (A1111 1.9+ answers 404 for them, mix1009/sdwebuiapi#164).
  An unknown sampler is 404 "Sampler not found", as A1111.
- ``resize_mode`` 3 (latent upscale) is a 422 that says why; ``http(s)`` init images are a 422 (no
  server-side fetching, A1111's ``api_enable_requests`` is off by default too).
- depth2img's own fields use A1111's extension convention: ``alwayson_scripts: {"depth2img": {"args":
  [{"depth_map": b64, "invert_depth": bool, "depth_clip": [far, near], "depth_strength": float,
  "depth_end": float, "depth_model": id}]}}``.
- sd-webui-controlnet's ``alwayson_scripts: {"controlnet": {"args": [unit, ...]}}`` is translated in
  :mod:`.controlnet_api` (one enabled depth unit; its detected map is appended to ``images``).
- ``interrupt``/``skip`` stop the running job after its current step; A1111 returns the partial image,
  the engine has none to give, so the interrupted call answers 200 with no images and ``info`` saying so.
"""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import datetime
from typing import Any, Optional

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from .. import __version__, a1111
from ..errors import InvalidRequestError
from ..infotext import parse_infotext, read_infotext
from ..request import DEFAULTS, PARAMS
from .controlnet_api import ControlUnit, detect_depth, detected_map_b64, parse_units
from .errors import JobFailedError, SamplerNotFoundError, UnsupportedError
from .inputs import decode_b64
from .jobs import Job
from .preview import latent_preview, png_b64
from .services import Services

router = APIRouter(prefix="/sdapi/v1", tags=["sdapi"])

SCRIPT = "depth2img"  # our always-on script title
SCRIPT_FIELDS = ("depth_map", "invert_depth", "depth_clip", "depth_strength", "depth_end", "depth_model")
# A1111 name -> our field, for the fields that pass through unchanged (from PARAMS, not retyped).
DIRECT = {spec.a1111: name for name, spec in PARAMS.items()
          if spec.a1111 and spec.group != "inpaint" and spec.kind in ("text", "float", "int", "seed", "size")}


class Txt2ImgRequest(BaseModel):
    """A1111's ``StableDiffusionProcessingTxt2Img`` fields that depth2img reads; any other field is ignored."""

    model_config = ConfigDict(extra="allow")
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    sampler_name: Optional[str] = None
    sampler_index: Optional[str] = "Euler"
    scheduler: Optional[str] = None
    steps: int = 50
    cfg_scale: float = 7.0
    batch_size: int = Field(1, ge=1)
    n_iter: int = Field(1, ge=1)
    width: int = 512
    height: int = 512
    eta: Optional[float] = None
    styles: Optional[list[str]] = None
    override_settings: Optional[dict[str, Any]] = None
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)


class Img2ImgRequest(Txt2ImgRequest):
    """A1111's ``StableDiffusionProcessingImg2Img`` fields that depth2img reads; any other field is ignored."""

    init_images: Optional[list[str]] = None
    resize_mode: int = 0
    denoising_strength: float = 0.75
    mask: Optional[str] = None
    mask_blur: Optional[int] = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    include_init_images: bool = False


def services(request: Request) -> Services:
    return request.app.state.services


# -- translation -------------------------------------------------------------------------------------


def _code(table: dict[str, tuple[Any, str]], value: Any, field: str) -> str:
    for ours, (code, _label) in table.items():
        if code == value:
            return ours
    codes = ", ".join(f"{code} ({label})" for code, label in table.values())
    raise InvalidRequestError(f"{field} {value!r} is not one of {codes}")


def scheduler_name(sampler: str | None, schedule: str | None) -> str:
    """Our scheduler for A1111's sampler label + schedule type (name or label, any case)."""
    sampler = sampler or "Euler"
    labels = {s.schedule_type.lower(): s.schedule_type for s in a1111.SAMPLERS.values() if s.schedule_type}
    label = None if schedule in (None, "") or schedule.lower() == "automatic" else labels.get(schedule.lower())
    if schedule not in (None, "") and schedule.lower() != "automatic" and label is None:
        raise SamplerNotFoundError(f"Scheduler not found: {schedule!r} (available: Automatic, {', '.join(labels.values())})")
    ours = a1111.sampler_from_a1111(sampler, label)
    if ours is None:
        names = sorted({s.name for s in a1111.SAMPLERS.values()})
        raise SamplerNotFoundError(f"Sampler not found: {sampler!r}{f' with schedule type {label!r}' if label else ''} "
                                   f"(available: {', '.join(names)})")
    return ours


def checkpoint_id(title: str) -> str:
    """A1111 titles are "name [hash]"; the registry id is the name."""
    title = title.strip()
    if title.endswith("]") and " [" in title:
        title = title[: title.rindex(" [")]
    return title


def translate(body: Txt2ImgRequest, svc: Services
              ) -> tuple[dict[str, Any], dict[str, bytes], str | None, str | None, ControlUnit | None]:
    """(GenerationRequest fields, image bytes, model id, depth model id, ControlNet unit) of an A1111 request."""
    raw = body.model_dump()
    fields: dict[str, Any] = {ours: raw[theirs] for theirs, ours in DIRECT.items() if raw.get(theirs) is not None}
    fields["batch_size"] = body.batch_size * body.n_iter
    fields["scheduler"] = scheduler_name(body.sampler_name or body.sampler_index, body.scheduler)
    if body.styles:
        fields["styles"] = list(body.styles)
    inputs: dict[str, bytes] = {}
    if isinstance(body, Img2ImgRequest):
        if not body.init_images:
            raise InvalidRequestError("init_images is required: a list with one base64 image")
        inputs["image"] = decode_b64(body.init_images[0], "init_images[0]")
        if body.resize_mode == 3:
            raise UnsupportedError("resize_mode 3 (just resize, latent upscale) is not supported: depth2img resizes the "
                                   "photo in pixels before encoding; use 0 (Just resize), 1 (Crop and resize) or 2 "
                                   "(Resize and fill)")
        fields["resize_mode"] = _code(a1111.RESIZE_MODES, body.resize_mode, "resize_mode")
        if body.mask:
            inputs["mask"] = decode_b64(body.mask, "mask")
            if body.mask_blur is not None:
                fields["mask_blur"] = body.mask_blur
            elif body.mask_blur_x == body.mask_blur_y:
                fields["mask_blur"] = body.mask_blur_x
            else:
                raise UnsupportedError(f"mask_blur_x {body.mask_blur_x} and mask_blur_y {body.mask_blur_y} differ; "
                                       "depth2img blurs both axes alike: give mask_blur")
            fields["masked_content"] = _code(a1111.MASKED_CONTENT, body.inpainting_fill, "inpainting_fill")
            fields["inpaint_area"] = _code(a1111.INPAINT_AREAS, bool(body.inpaint_full_res), "inpaint_full_res")
            fields["padding"] = body.inpaint_full_res_padding
            fields["invert_mask"] = {code: ours for ours, (code, _) in a1111.MASK_MODES.items()}.get(
                body.inpainting_mask_invert)
            if fields["invert_mask"] is None:
                raise InvalidRequestError(f"inpainting_mask_invert must be 0 or 1, got {body.inpainting_mask_invert!r}")
    model = (body.override_settings or {}).get("sd_model_checkpoint")
    depth_model, unit = None, None
    for title, script in body.alwayson_scripts.items():
        if title.lower() == SCRIPT:
            depth_model = _script_args(script, fields, inputs)
        elif title.lower() == a1111.CONTROLNET_SCRIPT:
            unit = parse_units(script, svc, init_image=inputs.get("image"))
        else:
            raise InvalidRequestError(f"always on script {title} not found")
    return fields, inputs, checkpoint_id(model) if isinstance(model, str) else None, depth_model, unit


def _script_args(script: Any, fields: dict[str, Any], inputs: dict[str, bytes]) -> str | None:
    args = script.get("args") if isinstance(script, dict) else None
    if not args:
        return None
    if not isinstance(args, list) or not isinstance(args[0], dict):
        raise InvalidRequestError(f'alwayson_scripts.{SCRIPT}.args must be a list holding one object with '
                                  f'{", ".join(SCRIPT_FIELDS)}')
    unknown = sorted(set(args[0]) - set(SCRIPT_FIELDS))
    if unknown:
        raise InvalidRequestError(f"alwayson_scripts.{SCRIPT}: unknown field {unknown[0]!r} "
                                  f"(known: {', '.join(SCRIPT_FIELDS)})")
    for key, value in args[0].items():
        if key == "depth_map":
            if value:
                inputs["depth_map"] = decode_b64(value, "depth_map")
        elif key != "depth_model":
            fields[key] = value
    return args[0].get("depth_model") or None


# -- running -----------------------------------------------------------------------------------------


async def _apply_unit(svc: Services, unit: ControlUnit, model_id: str, fields: dict[str, Any], inputs: dict[str, bytes],
                      depth_model: str | None) -> None:
    """The unit's fields into the request; its depth map (own, or estimated from the unit's image) into the inputs."""
    kind = svc.registry.entries[model_id].kind
    if kind == "depth":
        raise UnsupportedError(f"{model_id!r} is an SD2-depth model: it takes the depth directly, not through a "
                               f"ControlNet; drop the {a1111.CONTROLNET_SCRIPT} unit (or load an SD 1.5/SDXL model)")
    own = unit.fields.pop("depth_map", None)
    if (own is not None or unit.detect is not None) and "depth_map" in inputs:
        raise InvalidRequestError(f"two depth maps: alwayson_scripts.{SCRIPT}.depth_map and the ControlNet unit's "
                                  "image; give one")
    fields.update(unit.fields)
    if own is not None:
        inputs["depth_map"] = own
    elif unit.detect is not None:
        inputs["depth_map"] = await detect_depth(svc, unit.detect, model=model_id, depth_model=depth_model,
                                                 controlnet=unit.controlnet, resolution=_unit_resolution(unit, fields))


def _unit_resolution(unit: ControlUnit, fields: dict[str, Any]) -> int:
    """The estimator's resolution for a unit image that is not the init image: its processor_res, or with
    pixel_perfect A1111's rule from the unit image's size to the output size (the request's width/height,
    else the unit image's own)."""
    from ..backends.controlnet import pixel_perfect_resolution
    from ..images import open_image

    if not fields.get("pixel_perfect", False):
        return int(fields.get("processor_res", DEFAULTS["processor_res"]))
    assert unit.detect is not None
    with open_image(unit.detect) as picture:
        raw = (picture.height, picture.width)
    target = (fields["height"], fields["width"]) if fields.get("width") and fields.get("height") else raw
    return pixel_perfect_resolution(raw, target, fields.get("control_resize", DEFAULTS["control_resize"]))


async def _generate(request: Request, body: Txt2ImgRequest) -> dict[str, Any]:
    svc = services(request)
    fields, inputs, model, depth_model, unit = translate(body, svc)
    model_id = svc.registry.resolve(model)
    if unit is not None:
        await _apply_unit(svc, unit, model_id, fields, inputs, depth_model)
    elif not isinstance(body, Img2ImgRequest):
        kind = svc.registry.entries[model_id].kind
        if kind not in ("depth", "?"):
            raise UnsupportedError(f"txt2img: {model_id!r} is a plain img2img model; depth2img is an img2img tool "
                                   "(use /sdapi/v1/img2img with init_images)")
        if "depth_map" not in inputs:
            raise UnsupportedError(f"txt2img needs a depth map: depth2img generates from depth, give it in "
                                   f'alwayson_scripts {{"{SCRIPT}": {{"args": [{{"depth_map": "<base64>"}}]}}}}, '
                                   "or use /sdapi/v1/img2img with init_images")
    job = await asyncio.to_thread(svc.submit, "generate", fields, inputs, model=model_id, depth_model=depth_model,
                                  source="sdapi", controlnet=unit.controlnet if unit else None)
    done = await svc.wait(job)
    if done.state == "failed":
        raise JobFailedError(done.error or "the job failed", done.error_status or 500)
    images = []
    if done.state == "done" and body.send_images:
        for i in range(done.n_images):
            data = await asyncio.to_thread(svc.store.image_path(done.id, i).read_bytes)
            images.append(base64.b64encode(data).decode("ascii"))
        if unit is not None and unit.save_detected_map and done.has_depth:  # the extension's detected map
            png16 = await asyncio.to_thread(svc.store.depth_path(done.id).read_bytes)
            images.append(detected_map_b64(png16))
    parameters = body.model_dump()
    if isinstance(body, Img2ImgRequest) and not body.include_init_images:
        parameters["init_images"], parameters["mask"] = None, None  # A1111 nulls them in the echo
    if not getattr(body, "include_init_images", False):
        for script in parameters.get("alwayson_scripts", {}).values():
            for arg in script.get("args", []) if isinstance(script, dict) else []:
                if isinstance(arg, dict) and arg.get("depth_map"):
                    arg["depth_map"] = None
    info = _info(svc, body, done, fields)
    if unit is not None:
        info["warnings"] = [*info["warnings"], *unit.warnings]
    return {"images": images, "parameters": parameters, "info": json.dumps(info)}


def _info(svc: Services, body: Txt2ImgRequest, job: Job, fields: dict[str, Any]) -> dict[str, Any]:
    """``Processed.js()``'s keys (A1111 modules/processing.py)."""
    n = len(job.seeds)
    sampler = a1111.SAMPLERS[fields["scheduler"]]
    size = parse_infotext(job.infotexts[0]).get("Size", "") if job.infotexts else ""
    width, height = (int(v) for v in size.split("x")) if "x" in size else (body.width, body.height)
    info: dict[str, Any] = {
        "prompt": body.prompt, "all_prompts": [body.prompt] * n,
        "negative_prompt": body.negative_prompt, "all_negative_prompts": [body.negative_prompt] * n,
        "seed": job.seeds[0] if job.seeds else body.seed, "all_seeds": job.seeds,
        "subseed": job.seeds[0] if job.seeds else -1, "all_subseeds": job.seeds, "subseed_strength": 0,
        "width": width, "height": height,
        "sampler_name": sampler.name, "scheduler": sampler.schedule_type or "Automatic",
        "cfg_scale": body.cfg_scale, "steps": body.steps, "batch_size": body.batch_size,
        "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": job.model, "sd_model_hash": svc.registry.model_hash(job.model),
        "sd_vae_name": None, "sd_vae_hash": None, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
        "denoising_strength": body.denoising_strength if isinstance(body, Img2ImgRequest) else 1.0,
        "extra_generation_params": {}, "index_of_first_image": 0, "infotexts": job.infotexts, "styles": body.styles or [],
        "job_timestamp": datetime.fromtimestamp(job.started or job.created).strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1, "is_using_inpainting_conditioning": False, "version": f"depth2img {__version__}",
        "warnings": job.warnings, "job_id": job.id,
    }
    if job.state == "cancelled":
        info["interrupted"] = True
        info["warnings"] = [*job.warnings, f"interrupted: {job.error}; no image was finished"]
    return info


@router.post("/img2img")
async def img2img(body: Img2ImgRequest, request: Request) -> dict[str, Any]:
    """A1111's img2img (init_images, mask and the inpainting fields, alwayson_scripts.depth2img)."""
    return await _generate(request, body)


@router.post("/txt2img")
async def txt2img(body: Txt2ImgRequest, request: Request) -> dict[str, Any]:
    """Depth-only generation: a depth model plus a depth map in alwayson_scripts.depth2img; else a 422 saying why."""
    return await _generate(request, body)


# -- companion endpoints -------------------------------------------------------------------------------


@router.get("/progress")
def progress(request: Request, skip_current_image: bool = False) -> dict[str, Any]:
    """A1111's progress: 0..1, ETA in seconds, the sampling step, and a cheap preview of the latents."""
    svc = services(request)
    current = svc.worker.current
    queued = svc.store.count("queued")
    state: dict[str, Any] = {"skipped": False, "interrupted": False, "job": "", "job_count": queued,
                             "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0}
    if current is None:
        return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None, "textinfo": None}
    latents = current.latents
    state.update(interrupted=current.cancel is not None, job=f"task({current.job_id})", job_count=queued + 1,
                 job_timestamp=datetime.fromtimestamp(current.started).strftime("%Y%m%d%H%M%S"),
                 sampling_step=current.step, sampling_steps=current.total)
    image = None if skip_current_image or latents is None else png_b64(latent_preview(latents))
    return {"progress": current.fraction, "eta_relative": current.eta or 0.0, "state": state,
            "current_image": image, "textinfo": None}


@router.post("/interrupt")
def interrupt(request: Request) -> dict[str, Any]:
    """Stop the running job after its current step (queued jobs go on, as in A1111)."""
    services(request).worker.interrupt("interrupted")
    return {}


@router.post("/skip")
def skip(request: Request) -> dict[str, Any]:
    """A1111 skips the current image of a batch; a batch is one job here, so the running job stops."""
    services(request).worker.interrupt("skipped")
    return {}


def _title(svc: Services, name: str) -> str:
    digest = svc.registry.model_hash(name)
    return f"{name} [{digest}]" if digest else name


@router.get("/sd-models")
def sd_models(request: Request) -> list[dict[str, Any]]:
    """``[{title, model_name, hash, sha256, filename, config}]``; filename is the file name only (no paths)."""
    svc = services(request)
    out = []
    for name, entry in svc.registry.entries.items():
        digest = svc.registry.model_hash(name)
        out.append({"title": _title(svc, name), "model_name": name, "hash": digest, "sha256": None,
                    "filename": entry.path.name, "config": entry.config.name if entry.config else None})
    return out


@router.post("/refresh-checkpoints")
def refresh_checkpoints(request: Request) -> None:
    services(request).registry.refresh()


@router.get("/options")
def get_options(request: Request) -> dict[str, Any]:
    """The options a client reads: ``sd_model_checkpoint`` (the model jobs use by default)."""
    svc = services(request)
    return {"sd_model_checkpoint": _title(svc, svc.registry.default),
            "sd_checkpoint_hash": svc.registry.model_hash(svc.registry.default), "samples_format": "png"}


@router.post("/options")
async def set_options(options: dict[str, Any], request: Request) -> None:
    """``sd_model_checkpoint`` switches the model: loaded now (the previous one is unloaded). Other options
    are accepted and ignored."""
    svc = services(request)
    title = options.get("sd_model_checkpoint")
    if title is not None:
        if not isinstance(title, str):
            raise InvalidRequestError("sd_model_checkpoint must be a string")
        name = svc.registry.set_default(checkpoint_id(title))
        if svc.worker.current is None:  # a running job keeps its model; the next one loads the new default
            await asyncio.to_thread(svc.registry.get, name)


@router.get("/samplers")
def samplers() -> list[dict[str, Any]]:
    """``[{name, aliases, options}]``: A1111's sampler labels we implement (scheduler ids as aliases)."""
    out: dict[str, dict[str, Any]] = {}
    for ours, s in a1111.SAMPLERS.items():
        entry = out.setdefault(s.name, {"name": s.name, "aliases": [], "options": {}})
        entry["aliases"].append(ours)
    return list(out.values())


@router.get("/schedulers")
def schedulers() -> list[dict[str, Any]]:
    """``[{name, label, aliases, default_rho, need_inner_model}]`` (A1111 v1.9+)."""
    labels = ["Automatic"] + sorted({s.schedule_type for s in a1111.SAMPLERS.values() if s.schedule_type})
    return [{"name": label.lower(), "label": label, "aliases": None, "default_rho": -1, "need_inner_model": False}
            for label in labels]


@router.get("/scripts")
def scripts() -> dict[str, list[str]]:
    return {"txt2img": [SCRIPT, a1111.CONTROLNET_SCRIPT], "img2img": [SCRIPT, a1111.CONTROLNET_SCRIPT]}


class PngInfoRequest(BaseModel):
    image: str


@router.post("/png-info")
def png_info(body: PngInfoRequest, request: Request) -> dict[str, Any]:
    """``{info, items, parameters}`` of an image's infotext (A1111's ``read_info_from_image``)."""
    from ..images import open_image

    data = decode_b64(body.image, "image") if body.image else b""
    if not data:
        return {"info": "", "items": {}, "parameters": {}}
    image = open_image(data)
    text = read_infotext(image) or ""
    items = {k: v for k, v in image.info.items() if isinstance(v, str) and k != "parameters"}
    return {"info": text, "items": items, "parameters": parse_infotext(text) if text else {}}


@router.get("/memory")
def memory() -> dict[str, Any]:
    """RAM and CUDA memory (A1111's shape; ``cuda.error`` when there is no GPU)."""
    import os

    import torch

    page, pages, avail = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_AVPHYS_PAGES")
    ram = {"free": page * avail, "used": page * (pages - avail), "total": page * pages}
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        cuda: dict[str, Any] = {"system": {"free": free, "used": total - free, "total": total}}
    else:
        cuda = {"error": "unavailable"}
    return {"ram": ram, "cuda": cuda}


@router.post("/unload-checkpoint")
def unload_checkpoint(request: Request) -> None:
    services(request).registry.unload()


@router.post("/reload-checkpoint")
async def reload_checkpoint(request: Request) -> None:
    svc = services(request)
    await asyncio.to_thread(svc.registry.get, svc.registry.default)

