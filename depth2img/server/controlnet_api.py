"""sd-webui-controlnet's API: ``alwayson_scripts.controlnet.args`` units and the ``/controlnet/*`` routes,
so the extension's clients work unchanged against a depth2img server.

Read from Mikubill/sd-webui-controlnet @56cec5b (``scripts/api.py``, ``internal_controlnet/args.py``,
``external_code.py``; reference controlnet.md §2.5). A unit becomes request fields plus the ControlNet the
pipeline loads with; nothing here generates. What we follow and where we differ:

- Unit fields and defaults are the extension's: ``enabled`` False, ``module`` "none", ``model`` "None",
  ``weight`` 1.0, ``guidance_start`` 0, ``guidance_end`` 1 (start > end refused), ``control_mode``
  "Balanced" (also 0/1/2), ``resize_mode`` "Crop and Resize" (also 0/1/2 and the old aliases; it fits
  an own map, an estimated depth comes from the init image already fitted by the request's resize_mode),
  ``processor_res`` -1 (module default, 512) and ``pixel_perfect`` False (both honoured: the estimator
  runs at that short side, see depth.estimate_depth), ``save_detected_map`` True; deprecated aliases ``guidance``,
  ``input_image``, ``lowvram``; other fields are ignored (the extension's ``extra="ignore"``).
- depth2img is a depth tool: the modules are ``depth`` (label ``depth_midas``: the model's own MiDaS/DPT
  estimator) and ``none`` (the unit's image is the depth map). The extension's other depth modules and
  any other module are a 422 naming what works; so is more than one enabled unit.
- A depth unit without an image (img2img) estimates from the init image, as the extension does; a unit
  image that is not the init image is estimated first (a depth job on the same queue), then used as the
  map. The detected map (the control image the ControlNet saw, 8-bit RGB at the output size) is appended
  to the images unless ``save_detected_map`` is false.
- A unit's ``model`` names a ControlNet the server lists (``GET /controlnet/model_list``): the exact
  "name [hash]", the name (any case), or the shortest name containing it (the extension's
  ``find_closest_lora_model_name``). The base model must be SD 1.x/2.x or SDXL without its own depth
  input: an SD2-depth model takes depth directly (``alwayson_scripts.depth2img``).
"""

from __future__ import annotations

import asyncio
import base64
import io
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
from fastapi import APIRouter, Body, Request
from PIL import Image

from .. import a1111
from ..errors import InvalidRequestError
from ..request import DEFAULTS, PARAMS, check_value
from .errors import JobFailedError
from .inputs import decode_b64
from .services import Services

router = APIRouter(prefix="/controlnet", tags=["controlnet"])

ALIASES = {"guidance": "guidance_end", "input_image": "image", "lowvram": "low_vram"}  # args.py legacy_field_alias
UNIT_FIELDS = {"weight": "control_weight", "guidance_start": "control_start", "guidance_end": "control_end"}


@dataclass
class ControlUnit:
    """The one enabled unit, translated: request fields, the ControlNet to load, and what the handler does."""

    controlnet: str  # registry name
    module: str  # "depth" | "none"
    fields: dict[str, Any]
    save_detected_map: bool = True
    detect: Optional[bytes] = None  # an image whose depth is estimated first (not the init image)
    warnings: list[str] = field(default_factory=list)


def _where(index: int, key: str) -> str:
    return f"alwayson_scripts.{a1111.CONTROLNET_SCRIPT}.args[{index}].{key}"


def module_of(name: Any, where: str) -> str:
    """The internal module name for a unit's ``module`` (internal name or UI label, any case)."""
    text = str(name).strip().lower() if name is not None else "none"
    for module in a1111.CONTROLNET_MODULES.values():
        if text in (module.name, module.label.lower()):
            return module.name
    served = ", ".join(f"{m.label}" for m in a1111.CONTROLNET_MODULES.values())
    if text in a1111.CONTROLNET_OTHER_DEPTH_MODULES:
        raise InvalidRequestError(
            f"{where} {name!r}: depth2img has no such estimator; use depth_midas (the model's own MiDaS/DPT "
            f"estimator) or none with your own depth map as the unit's image (served: {served})")
    raise InvalidRequestError(f"{where} {name!r} is not supported: depth2img serves the depth modules {served}")


def _choice(value: Any, codes: dict[str, int], labels: dict[str, str], aliases: dict[str, str], where: str) -> str:
    """Our name for an int code, a label (or an old alias of one) or our own name."""
    if isinstance(value, int) and not isinstance(value, bool):
        for ours, code in codes.items():
            if code == value:
                return ours
    elif isinstance(value, str):
        label = aliases.get(value, value)
        for ours, text in labels.items():
            if label.lower() in (text.lower(), ours):
                return ours
    options = ", ".join(f"{code} ({labels[ours]})" for ours, code in codes.items())
    raise InvalidRequestError(f"{where} {value!r} is not one of {options}")


def find_controlnet(svc: Services, name: Any, where: str) -> str:
    """The registry name of a unit's ``model`` (A1111's matching: exact title, name, shortest containing)."""
    entries = svc.registry.controlnets
    if not isinstance(name, str) or name.strip() in ("", "None"):
        raise InvalidRequestError(f"{where} is {name!r}: name a ControlNet from GET /controlnet/model_list "
                                  f"({', '.join(e.title for e in entries.values())})")
    text = name.strip()
    for entry in entries.values():
        if text == entry.title:
            return entry.name
    bare = text[: text.rindex(" [")] if text.endswith("]") and " [" in text else text
    for entry in entries.values():
        if bare.lower() == entry.name.lower():
            return entry.name
    containing = sorted((e for e in entries.values() if bare.lower() in e.name.lower()), key=lambda e: len(e.name))
    if containing:
        return containing[0].name
    raise InvalidRequestError(f"{where} {name!r} is not a ControlNet this server has; GET /controlnet/model_list "
                              f"lists them ({', '.join(e.title for e in entries.values())})")


def _unit_image(value: Any, where: str) -> Optional[bytes]:
    """The unit's image: base64, ``{"image": b64, "mask": ...}`` or ``[image, mask]`` (args.py's API forms)."""
    if isinstance(value, (list, tuple)) and value:
        value = value[0]
    if isinstance(value, dict):
        value = value.get("image")
    if value in (None, ""):
        return None
    return decode_b64(value, where)


def parse_units(script: Any, svc: Services, *, init_image: Optional[bytes]) -> Optional[ControlUnit]:
    """The enabled unit of ``alwayson_scripts.controlnet`` (None when no unit is enabled)."""
    args = script.get("args") if isinstance(script, dict) else None
    if not args:
        return None
    if not isinstance(args, list) or not all(isinstance(unit, dict) for unit in args):
        raise InvalidRequestError(f"alwayson_scripts.{a1111.CONTROLNET_SCRIPT}.args must be a list of unit objects")
    enabled = [(i, unit) for i, unit in enumerate(args) if unit.get("enabled", False)]
    if len(enabled) > 1:
        raise InvalidRequestError(f"{len(enabled)} enabled ControlNet units (args {[i for i, _ in enabled]}): depth2img "
                                  "runs one depth unit; disable the others")
    if not enabled:
        return None
    index, raw = enabled[0]
    unit = dict(raw)
    for alias, key in ALIASES.items():
        if alias in unit:
            if key in unit:
                raise InvalidRequestError(f"{_where(index, alias)} and {key} both given; {alias} is the old name of {key}")
            unit[key] = unit.pop(alias)
    module = module_of(unit.get("module", "none"), _where(index, "module"))
    controlnet = find_controlnet(svc, unit.get("model", "None"), _where(index, "model"))
    fields: dict[str, Any] = {}
    for theirs, ours in UNIT_FIELDS.items():
        if theirs in unit:
            check_value(ours, unit[theirs], PARAMS[ours], _where(index, theirs))
            fields[ours] = unit[theirs]
    start, end = fields.get("control_start", 0.0), fields.get("control_end", 1.0)
    if start > end:
        raise InvalidRequestError(f"{_where(index, 'guidance_start')} {start:g} > guidance_end {end:g}")
    if "control_mode" in unit:
        labels = {ours: label for ours, (_, label) in a1111.CONTROL_MODES.items()}
        codes = {ours: code for ours, (code, _) in a1111.CONTROL_MODES.items()}
        fields["control_mode"] = _choice(unit["control_mode"], codes, labels, {}, _where(index, "control_mode"))
    warnings: list[str] = []
    if "resize_mode" in unit:
        resize = _choice(unit["resize_mode"], a1111.CONTROLNET_RESIZE_CODES, a1111.CONTROLNET_RESIZE_MODES,
                         a1111.CONTROLNET_RESIZE_ALIASES, _where(index, "resize_mode"))
        fields["control_resize"] = resize
    if a1111.CONTROLNET_MODULES[module].resolution:  # a module that runs the estimator: its resolution slider
        if unit.get("processor_res", -1) not in (-1, None):  # -1: the module's default (512, the field's)
            check_value("processor_res", unit["processor_res"], PARAMS["processor_res"], _where(index, "processor_res"))
            fields["processor_res"] = unit["processor_res"]
        if "pixel_perfect" in unit:
            check_value("pixel_perfect", unit["pixel_perfect"], PARAMS["pixel_perfect"], _where(index, "pixel_perfect"))
            fields["pixel_perfect"] = unit["pixel_perfect"]
    image = _unit_image(unit.get("image"), _where(index, "image"))
    detect = None
    if module == "none":
        if image is None:
            raise InvalidRequestError(f"{_where(index, 'image')} is required with module none: it is the depth map")
    elif image is not None and image != init_image:
        detect = image
    elif init_image is None:
        raise InvalidRequestError(f"{_where(index, 'image')} is required: txt2img with module depth_midas estimates "
                                  "the depth of the unit's image (or give your own map with module none)")
    save = unit.get("save_detected_map", True)
    if not isinstance(save, bool):
        raise InvalidRequestError(f"{_where(index, 'save_detected_map')} must be true or false, got {save!r}")
    unit_out = ControlUnit(controlnet, module, fields, save, detect, warnings)
    if module == "none":
        unit_out.detect = None
        unit_out.fields["depth_map"] = image  # bytes: the handler moves it to the job's inputs
    return unit_out


# -- running: the detection job, and the detected map in the answer ----------------------------------


async def detect_depth(svc: Services, image: bytes, *, model: Optional[str], depth_model: Optional[str] = None,
                       controlnet: Optional[str] = None, resolution: Optional[int] = None) -> bytes:
    """The 16-bit depth PNG of ``image`` by ``model``'s estimator, through the queue (a "depth" job); the same
    model key as the generation that follows, so the pipeline is not reloaded between the two. ``resolution``:
    the estimator's short side (the unit's processor_res), else its own preprocessing."""
    fields = {"processor_res": int(resolution)} if resolution is not None else {}
    job = await asyncio.to_thread(svc.submit, "depth", fields, {"image": image}, model=model, depth_model=depth_model,
                                  source="sdapi", controlnet=controlnet)
    done = await svc.wait(job)
    if done.state != "done":
        raise JobFailedError(done.error or "the depth estimate failed", done.error_status or 500)
    return await asyncio.to_thread(svc.store.depth_path(done.id).read_bytes)


def detected_map_b64(png16: bytes) -> str:
    """A 16-bit grayscale PNG → the extension's detected map: 8-bit RGB PNG, base64."""
    with Image.open(io.BytesIO(png16)) as image:
        array = np.asarray(image).astype(np.float64)
    gray = np.clip(np.round(array / 65535.0 * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(gray).convert("RGB").save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


# -- routes --------------------------------------------------------------------------------------------


def _services(request: Request) -> Services:
    return request.app.state.services


@router.get("/version")
def version() -> dict[str, int]:
    return {"version": a1111.CONTROLNET_API_VERSION}


@router.get("/model_list")
def model_list(request: Request, update: bool = True) -> dict[str, list[str]]:
    """``{"model_list": ["name [hash]", ...]}``: the ControlNets of the models folders (catalog.list_controlnets)
    and the built-in tiny ones; ``update`` re-reads the folders, as the extension does."""
    svc = _services(request)
    if update:
        svc.registry.refresh()
    return {"model_list": sorted((e.title for e in svc.registry.controlnets.values()), key=str.lower)}


@router.get("/module_list")
def module_list(alias_names: bool = False) -> dict[str, Any]:
    """The modules depth2img serves, with the extension's ``module_detail`` (model_free, sliders)."""
    modules = list(a1111.CONTROLNET_MODULES.values())
    names = [m.label if alias_names else m.name for m in modules]
    detail = {}
    for name, module in zip(names, modules):
        sliders = []
        if module.resolution:
            value, low, high = module.resolution
            sliders.append({"name": "Resolution", "value": value, "min": low, "max": high, "step": 1})
        detail[name] = {"model_free": False, "sliders": sliders}
    return {"module_list": names, "module_detail": detail}


@router.get("/settings")
def settings() -> dict[str, int]:
    return {"control_net_unit_count": 1}


@router.post("/detect")
async def detect(
    request: Request,
    controlnet_module: str = Body("none"),
    controlnet_input_images: list[str] = Body([]),
    controlnet_processor_res: int = Body(-1),
    controlnet_threshold_a: float = Body(-1),
    controlnet_threshold_b: float = Body(-1),
    controlnet_masks: list[str] = Body([]),
    low_vram: bool = Body(False),
) -> dict[str, Any]:
    """``{"info": "Success", "images": [b64, ...]}``: each image's depth by the default model's estimator
    (module depth/depth_midas), or the image itself (none); 8-bit RGB as the extension returns."""
    svc = _services(request)
    module = module_of(controlnet_module, "controlnet_module")
    if not controlnet_input_images:
        raise InvalidRequestError("No image selected: controlnet_input_images is empty")
    resolution = DEFAULTS["processor_res"]  # -1: the module's default, 512 for depth_midas
    if controlnet_processor_res != -1:
        check_value("processor_res", controlnet_processor_res, PARAMS["processor_res"], "controlnet_processor_res")
        resolution = controlnet_processor_res
    images = []
    for i, text in enumerate(controlnet_input_images):
        data = decode_b64(text, f"controlnet_input_images[{i}]")
        if module == "none":
            from ..images import open_image

            buffer = io.BytesIO()
            open_image(data).convert("RGB").save(buffer, format="PNG")
            images.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
        else:
            model, depth_model, controlnet = svc.registry.loaded_key or (None, None, None)
            png16 = await detect_depth(svc, data, model=model, depth_model=depth_model, controlnet=controlnet,
                                       resolution=resolution)
            images.append(detected_map_b64(png16))
    return {"info": "Success", "images": images}
