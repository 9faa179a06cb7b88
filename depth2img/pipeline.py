"""Depth-to-image generation, top to bottom, like a diffusers ``__call__``.

Numerically this is diffusers' ``StableDiffusionDepth2ImgPipeline`` (and ``StableDiffusionImg2ImgPipeline``
for plain 4-channel models): same tokenisation, depth preprocessing, timestep truncation, VAE posterior
sampling, generator consumption order and scheduler steps, so a diffusers user gets the same picture for
the same seed (tests/test_parity.py proves it). Deliberate deviations, each tested:
- a flat depth map gives a mid-depth plane instead of NaN (depth.normalize_depth);
- a batch uses one CPU generator per image seeded ``seed + i`` (A1111's convention), so image i of a
  batch is reproducible alone, and is what diffusers gives for ``generator=[Generator(seed + i), ...]``;
- non-finite latents raise, and a non-finite decode is retried once in float32 instead of returning black.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from . import __version__, a1111
from .backends import Backend, Conditioning, select_backend
from .caches import LRUCache, depth_key, module_identity, text_key
from .depth import (
    DepthMaps,
    adjust_depth,
    crop_depth,
    depth_control_params,
    estimate_depth,
    fit_depth,
    load_depth_map,
    normalize_depth,
)
from .devices import depth_device, parse_device, parse_dtype
from .fast import (Autocast, DeepCacheUNet, SkipUncondDenoiser, low_precision_dtype, native_low_precision, precision_region,
                   resolve_fast, sigma_of)
from .lowmem import enable_low_memory, held, on_device
from .compiled import CompiledUNet
from .errors import GenerationCancelled, InvalidRequestError, NonFiniteOutputError
from .images import floor_to_multiple, load_image, resize_image
from .infotext import build_infotext
from .inpaint import InpaintJob, inpaint_params, prepare_inpaint
from .models.components import Components, check_components
from .prompts import weighting
from .prompts.parser import extract_extra_networks
from .prompts.styles import apply_styles, load_styles
from .request import PERCENTILES, GenerationRequest, ImageInput, check_image_size, resolve_seeds
from .result import Result, StepInfo
from .sampling import (
    SCHEDULERS,
    CFGDenoiser,
    LatentBlend,
    denoise,
    depth_end_timestep,
    get_timesteps,
    make_scheduler,
    step_kwargs,
)

Callback = Callable[[StepInfo], Any]


@dataclass
class Plan:
    """A checked, decoded request: everything decided before the model computes anything.

    :meth:`Pipeline.plan` makes it in milliseconds (a server reports queue position and refuses bad
    input before any work); :meth:`Pipeline.run` executes it. ``notes`` become the Result's warnings.
    """

    request: GenerationRequest
    image: Image.Image | None  # what the model sees (resized, or the inpainting crop); None: depth only
    job: InpaintJob | None
    user_depth: np.ndarray | None  # the own depth map (cropped like the image for only_masked)
    seeds: list[int]
    size: tuple[int, int]  # (W, H) of the output
    notes: list[str] = field(default_factory=list)
    # Seams for callers that generate many related pictures (depth2img.batch.temporal: video). Both are
    # None for a single request, which then runs exactly as before.
    # depth_range: (lo, hi) used instead of the per-image min/max when the depth is normalised (one range
    #   for a whole clip, so a near object entering the view does not rescale the background's depth).
    depth_range: tuple[float, float] | None = None
    # wrap_scheduler(scheduler, timesteps, noise) -> scheduler: a k-diffusion-style scheduler wrapper
    #   (like LatentBlend) applied after inpainting's; ``noise`` is the initial noise of this picture.
    #   Video fusion blends the previous frame's warped latents in through it; the loop does not change.
    wrap_scheduler: Callable[[Any, torch.Tensor, torch.Tensor], Any] | None = None
    loras: list[Any] = field(default_factory=list)  # prompts.lora.LoraUse, applied for this run only
    # own_depth: None = the infotext says "own map" when a depth map was given; a caller that passes a map it
    #   estimated itself from this picture (video's pass 1) sets False, so the infotext says "estimated".
    own_depth: bool | None = None

    @property
    def keeps_input(self) -> bool:
        """Strength 0: no step runs and the photo comes back unchanged (A1111's behaviour)."""
        return self.image is not None and self.request.strength == 0


class Pipeline:
    """A loaded model. Components are attributes (as in diffusers) and may be inspected or swapped.

    ``backend`` (chosen once, here, from the components) holds what differs between model families:
    input checks, the UNet's conditioning wrapper and infotext entries.
    """

    def __init__(self, components: Components, *, device: torch.device | str | None = None, dtype: Any = None,
                 low_memory: bool = False, compile: bool = False):
        check_components(components)
        self.backend: Backend = select_backend(components)
        self.device, self.dtype = parse_device(device), parse_dtype(dtype)
        self.unet = _place(components.unet, self.device, self.dtype)
        self.vae = _place(components.vae, self.device, self.dtype)
        self.text_encoder = _place(components.text_encoder, self.device, self.dtype)
        self.tokenizer = components.tokenizer
        self.text_encoder_2 = None if components.text_encoder_2 is None else _place(components.text_encoder_2, self.device, self.dtype)
        self.tokenizer_2 = components.tokenizer_2  # SDXL's second text encoder (backends/sdxl_text.py)
        self.controlnet = None if components.controlnet is None else _place(components.controlnet, self.device, self.dtype)
        self.scheduler = components.scheduler  # its config is the base of every named sampler
        self.depth_estimator = components.depth_estimator
        if self.depth_estimator is not None:  # float32 always: DPT-Hybrid's BatchNorm (diffusers' comment)
            self.depth_estimator = _place(self.depth_estimator, depth_device(self.device), torch.float32)
        self.feature_extractor = components.feature_extractor
        self.name, self.source, self.model_hash = components.name, components.source, components.model_hash
        self.depth_source = components.depth_source
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.embeddings: Any = None  # textual inversions found in the prompt by name (prompts.embeddings)
        self.loras: Any = None  # a LoRA folder (prompts.lora.LoraLibrary) for <lora:name:w> and request.loras
        self.styles: dict[str, Any] | None = None  # A1111 styles.csv (prompts.styles), for request.styles
        # Exact-mode caches of this pipeline (caches.py): prompt embeddings and raw depth estimates, keyed on
        # everything that changes them. Replace with LRUCache(0) to turn one off.
        # low_memory (lowmem.py): VAE tiling + slicing; on CUDA the text encoder(s) and depth estimator wait on the
        # CPU; on CPU/MPS they are released (meta tensors) and restored from a spill file only while they run.
        self.low_memory = low_memory
        self.releaser = enable_low_memory(self) if low_memory else None
        # compile (compiled.py): the UNet through torch.compile; self.unet stays the eager module.
        self.compiled_unet = CompiledUNet(self.unet, self.device, low_memory=low_memory) if compile else None
        self.text_cache = LRUCache(32)  # (1, 77·chunks, D) per text; the negative/unconditional one included
        self.depth_cache = LRUCache(8)  # (1, h, w) raw estimate per image content + estimator

    @property
    def kind(self) -> str:
        """"depth" or "img2img": the backend's kind, decided at load time."""
        return self.backend.kind

    @torch.no_grad()
    def generate(
        self, request: GenerationRequest | None = None, /, *, callback: Callback | None = None, **fields: Any
    ) -> Result:
        """Run one request, or one built from keyword ``fields``; given both, the fields override the
        request's (``generate(request, seed=5)``). See :class:`GenerationRequest`."""
        if request is None:
            request = GenerationRequest(**fields)
        elif fields:
            request = request.replace(**fields)
        return self.run(self.plan(request), callback=callback)

    def plan(self, request: GenerationRequest) -> Plan:
        """0. Check inputs and decode them; nothing heavy has run yet, so bad input costs nothing."""
        request = self.check_inputs(request)
        if request.styles:  # A1111: the styled prompt is what is encoded and written to the infotext
            prompt, negative = apply_styles(request.prompt, request.negative_prompt, request.styles, self.styles)
            request = request.replace(prompt=prompt, negative_prompt=negative)
        user_depth = load_depth_map(request.depth_map) if request.depth_map is not None else None
        job = self.prepare_inpaint(request) if request.mask is not None else None
        image = job.image if job is not None else self.load_init_image(request)
        size = image.size if image is not None else self.depth_only_size(user_depth, request)
        if request.width is None:  # a size taken from the image or map obeys the requested-size limits
            check_image_size(size)
        if self.backend.depth_at_pixels and user_depth is not None:  # a ControlNet's control image: A1111's resize modes
            user_depth = fit_depth(user_depth, job.original.size if job is not None else size, request.control_resize)
        if self.backend.uses_depth and job is not None and job.box is not None and user_depth is not None:
            user_depth = crop_depth(user_depth, job.box, job.original.size)
        seeds = resolve_seeds(request.seed, request.batch_size)
        loras, lora_notes = self._requested_loras(request)
        return Plan(request, image, job, user_depth, seeds, size, notes=request.field_notes() + lora_notes, loras=loras)

    def _requested_loras(self, request: GenerationRequest) -> tuple[list[Any], list[str]]:
        if not request.loras and "<" not in request.prompt + request.negative_prompt:
            return [], []
        from .prompts import lora

        uses, notes = lora.requested(request.prompt, request.negative_prompt, request.loras, self.loras)
        if uses and self.text_encoder_2 is not None:
            raise InvalidRequestError("LoRA is not supported on SDXL models yet")
        return uses, notes

    @torch.no_grad()
    def run(self, plan: Plan, *, callback: Callback | None = None) -> Result:
        """:meth:`_run` with the plan's LoRAs attached for this run only (prompts.lora)."""
        if not plan.loras:
            return self._run(plan, callback=callback)
        from .prompts.lora import applied

        with held(self, self.text_encoder), applied(self.unet, self.text_encoder, plan.loras):  # low memory: restored
            return self._run(plan, callback=callback)  # before peft injects its layers, released after they are gone

    def _run(self, plan: Plan, *, callback: Callback | None = None) -> Result:
        """Steps 1-6 of a generation, top to bottom, for a :meth:`plan`."""
        request, image, job, notes = plan.request, plan.image, plan.job, list(plan.notes)
        batch = request.batch_size
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in plan.seeds]
        width, height = plan.size
        latent_size = (height // self.vae_scale_factor, width // self.vae_scale_factor)

        # 1. Depth: estimate on the image the model sees (or take the user's), adjust, normalise to [-1, 1].
        depth_size = (height, width) if self.backend.depth_at_pixels else latent_size  # ControlNet: full size
        depth = self.prepare_depth(image, plan.user_depth, depth_size, request, notes, plan.depth_range) if self.backend.uses_depth else None
        if plan.keeps_input:  # strength 0: the photo, unchanged (A1111); the depth is still reported
            assert image is not None
            pictures = [job.original.copy() if job is not None else image.copy() for _ in plan.seeds]
            return self._result(plan, pictures, depth, notes)

        # 2. Encode the prompt: a Conditioning with (B, 77, D) text embeddings each.
        cond, uncond = self.encode_prompt(request.prompt, request.negative_prompt, batch, request.guidance_scale > 1, notes,
                                          loras=tuple(plan.loras))

        # 3. Timesteps, truncated by strength (depth only: the whole schedule, from pure noise).
        scheduler = make_scheduler(request.scheduler, self.scheduler.config)
        scheduler.set_timesteps(request.steps, device=self.device)
        timesteps, _ = get_timesteps(scheduler, request.steps, request.strength if image is not None else 1.0)

        # 4. Latents: VAE-encode the image, sample the posterior and add noise, one generator per image.
        #    Inpainting: masked content acts on the clean latents, and the scheduler is wrapped so that
        #    after every step the kept region is the original re-noised with the same noise.
        extra_step_kwargs = step_kwargs(scheduler, generators, request.eta)
        if image is None:  # depth only: pure noise, as txt2img
            shape = (batch, self.vae.config.latent_channels, *latent_size)  # (B, 4, H/8, W/8)
            latents = randn_tensor(shape, generator=generators, device=self.device, dtype=self.dtype)
            latents = latents * scheduler.init_noise_sigma
        else:
            pixels = self.image_processor.preprocess(image).to(self.device, self.vae.dtype)  # (1, 3, H, W) in [-1, 1]
            init, noise = self.prepare_latents(pixels, generators)  # (B, 4, H/8, W/8) each
            if job is not None:
                latent_mask = job.latent_mask(latent_size, self.device, self.dtype)  # (1, 1, H/8, W/8), 1 = repaint
                init = job.prepare_init_latents(init, latent_mask, generators)
                scheduler = LatentBlend(scheduler, init, noise, latent_mask, timesteps)
            latents = scheduler.add_noise(init, noise, timesteps[:1].repeat(batch))
        if plan.wrap_scheduler is not None:  # temporal fusion (video); see Plan.wrap_scheduler
            scheduler = plan.wrap_scheduler(scheduler, timesteps, latents / scheduler.init_noise_sigma if image is None else noise)

        # 5. Denoise: the backend's conditioning wraps the UNet, guidance wraps that; the loop only
        #    sees eps = model(x, t).
        depth_cond = None if depth is None else depth.normalized.to(self.device, self.dtype).repeat(batch, 1, 1, 1)
        end_timestep = depth_end_timestep(timesteps, request.depth_end)
        #    The fast-mode knobs (fast.py) wrap the same calls; each is off unless asked for.
        base = self.unet_for(plan)
        unet = self.backend.denoiser(base, depth_cond, request, end_timestep, timesteps=timesteps)
        model: Any = CFGDenoiser(unet, cond, uncond, request.guidance_scale)
        if request.uncond_sigma > 0:
            model = SkipUncondDenoiser(model, sigma_of(scheduler), request.uncond_sigma)
        if request.low_precision and self.dtype == torch.float32:
            if not native_low_precision(self.device):
                notes.append(f"low_precision: this {self.device.type} has no native 16-bit units; it is emulated and "
                             "may be slower than float32")
            model = Autocast(model, self.device, low_precision_dtype(self.device))
        with precision_region(model):  # low_precision: one autocast region, so weights are cast once per run (fast.py)
            latents = denoise(
                scheduler,
                model,
                latents,
                timesteps,
                extra_step_kwargs=extra_step_kwargs,
                on_step=_step_reporter(callback),
            )

        # 6. Decode, refusing to return NaN/black images; inpainting puts the original back where kept.
        images = self.decode(latents, notes)
        if self.compiled_unet is not None:
            notes.extend(self.compiled_unet.take_notes())
        if job is not None:
            images = [job.composite(picture) for picture in images]
        return self._result(plan, images, depth, notes)

    def unet_for(self, plan: Plan) -> Any:
        """The UNet this run calls: DeepCache's wrapper, else the compiled UNet (load option ``compile``), else
        the eager one. DeepCache and LoRA change the module between calls, which a compiled graph must not
        see (compiled.py), so their runs take the eager UNet."""
        request = plan.request
        if request.deepcache_interval > 1:
            return DeepCacheUNet(self.unet, request.deepcache_interval)
        if self.compiled_unet is not None and not plan.loras:
            return self.compiled_unet
        return self.unet

    def _result(self, plan: Plan, images: list[Image.Image], depth: DepthMaps | None, notes: list[str]) -> Result:
        own = plan.user_depth is not None if plan.own_depth is None else plan.own_depth
        infotexts = [self.infotext(plan.request, seed, images[0].size, own) for seed in plan.seeds]
        return Result(images=images, depth_map=depth, seeds=plan.seeds, infotexts=infotexts, request=plan.request,
                      warnings=notes)

    # -- steps -------------------------------------------------------------------------------------

    def check_inputs(self, request: GenerationRequest) -> GenerationRequest:
        """Validate, then resolve the preset (request.resolved): a plan always has its sampler and steps."""
        request = resolve_fast(request.validate().resolved(), self.device)
        self.backend.check_inputs(request, model=self.name, has_estimator=self.depth_estimator is not None)
        return request

    def load_init_image(self, request: GenerationRequest) -> Image.Image | None:
        """Decode safely; apply the requested size and resize mode (else keep the size, as diffusers)."""
        if request.image is None:
            return None
        image = load_image(request.image)
        if request.width is not None and request.height is not None:
            image = resize_image(image, request.width, request.height, request.resize_mode)
        return self._check_size(image)

    def _check_size(self, image: Image.Image) -> Image.Image:
        """At least one latent pixel per side."""
        if image.width < self.vae_scale_factor or image.height < self.vae_scale_factor:
            raise InvalidRequestError(f"image is too small: {image.width}x{image.height}")
        return image

    def prepare_inpaint(self, request: GenerationRequest) -> InpaintJob:
        """Mask, blur, crop and fill (inpaint.py, A1111's rules) on the full-size decoded image."""
        assert request.image is not None and request.mask is not None  # validate() guarantees both
        image = self._check_size(load_image(request.image))
        size = (request.width, request.height) if request.width is not None and request.height is not None else None
        return prepare_inpaint(
            image,
            request.mask,
            size=size,
            resize_mode=request.resize_mode,
            mask_blur=request.mask_blur,
            masked_content=request.masked_content,
            inpaint_area=request.inpaint_area,
            padding=request.padding,
            invert=request.invert_mask,
            multiple=self.vae_scale_factor,
        )

    def depth_only_size(self, user_depth: Any, request: GenerationRequest) -> tuple[int, int]:
        """(W, H) of a depth-only generation: the requested size, else the depth map's floored to 8."""
        if request.width is not None and request.height is not None:
            return request.width, request.height
        height, width = user_depth.shape
        return floor_to_multiple(width, height, self.vae_scale_factor)

    def encode_prompt(
        self, prompt: str, negative_prompt: str, batch: int, guidance: bool, notes: list[str] | None = None,
        loras: tuple[Any, ...] = (),
    ) -> tuple[Conditioning, Conditioning | None]:
        """Text embeddings (B, 77, D), as diffusers' ``encode_prompt`` with clip_skip None.

        Each text (the negative, i.e. unconditional, one included) is encoded once per request and then
        repeated over the batch, and looked up in :attr:`text_cache` first (``loras``: those applied to
        the text encoder for this run, part of the key).

        For SD2 the folder's text encoder has 23 layers: its last hidden state after final_layer_norm
        *is* OpenCLIP's penultimate layer + ln_final, as the original "penultimate" embedder.
        """
        notes = [] if notes is None else notes
        if self.text_encoder_2 is not None:  # SDXL: two encoders, pooled embeddings (backends/sdxl_text.py)
            return encode_sdxl_prompt(self, prompt, negative_prompt, batch, guidance)
        with held(self, self.text_encoder, lazy=True):  # low memory: restored at most once, by the first cache miss
            text = self._cached_text(prompt, "prompt", notes, loras)
            negative = self._cached_text(negative_prompt, "negative prompt", notes, loras) if guidance else None
            if negative is not None and negative.shape[1] != text.shape[1]:  # A1111 chunks: pad with the empty prompt
                text, negative = weighting.pad_to_same_length(text, negative, self._cached_text("", "", [], loras))
        cond = Conditioning(text).repeat(batch)
        uncond = Conditioning(negative).repeat(batch) if negative is not None else None
        return cond, uncond

    def _cached_text(self, text: str, what: str, notes: list[str], loras: tuple[Any, ...]) -> torch.Tensor:
        """:meth:`_encode_text` through :attr:`text_cache`; the notes it wrote are replayed on a hit."""
        def compute() -> tuple[torch.Tensor, list[str]]:
            own: list[str] = []
            with on_device(self, self.text_encoder, self.device):
                return self._encode_text(text, what, own), own

        key = text_key(text, self.text_encoder, self.tokenizer, self.embeddings, loras, self.device, self.dtype)
        embedding, own = self.text_cache.get_or_compute(key + (what,), compute)
        notes.extend(own)
        return embedding

    def _encode_text(self, text: str, what: str, notes: list[str]) -> torch.Tensor:
        """(1, 77, D); an A1111 prompt (weights, BREAK, embeddings, > 75 tokens): (1, 77 * chunks, D)."""
        tokenizer = self.tokenizer
        if "<" in text:  # A1111's <lora:...> tags are taken out before encoding (prompts.lora applies them)
            text = extract_extra_networks(text)[0]
        if weighting.needs_chunking(tokenizer, text, self.embeddings):
            return self._encode_chunked(text, what, notes)
        # Plain path (no syntax, at most 75 tokens, so nothing is truncated): diffusers' own call, for parity.
        ids = tokenizer(
            text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = torch.ones_like(ids).to(self.device)
        return self.text_encoder(ids.to(self.device), attention_mask=mask)[0].to(self.dtype)  # (1, 77, D)

    def _encode_chunked(self, text: str, what: str, notes: list[str]) -> torch.Tensor:
        tokens = weighting.tokenize_prompt(self.tokenizer, text, self.embeddings)
        if tokens.dropped:
            notes.append(f"{what} is longer than {weighting.MAX_CHUNKS} chunks of {weighting.CHUNK} tokens: "
                         f"the last {tokens.dropped} tokens are dropped")
        mask = bool(getattr(self.text_encoder.config, "use_attention_mask", False))
        return weighting.encode_chunks(self.text_encoder, tokens.chunks, self.device, mask=mask).to(self.dtype)

    def prepare_depth(
        self,
        image: Image.Image | None,
        user_depth: Any | None,
        latent_size: tuple[int, int],
        request: GenerationRequest | None = None,
        notes: list[str] | None = None,
        depth_range: tuple[float, float] | None = None,
        resolution: int | None = None,
    ) -> DepthMaps:
        """The depth the UNet gets: (1, 1, h, w) in [-1, 1] (before depth_strength/depth_end, which
        :class:`DepthConcat` applies), plus the raw map (after invert/clip) for display/export.
        ``resolution``: the estimator's short side when no request says it (a ControlNet unit's detect job)."""
        if user_depth is not None:
            raw, source = torch.from_numpy(user_depth)[None], "user"  # (1, H, W)
        else:
            assert image is not None  # check_inputs: depth only needs a depth map
            key = depth_key(image, self.depth_estimator, self.feature_extractor)
            # A ControlNet's estimate runs at processor_res (or pixel perfect) and is resized to the output
            # below; SD2-depth keeps the estimator's own preprocessing (resolution None), as diffusers.
            if self.backend.depth_at_pixels and request is not None:
                from .backends.controlnet import estimator_resolution

                resolution = estimator_resolution(request, (image.height, image.width), latent_size)
            if resolution is not None:
                key = (*key, resolution)

            def compute() -> torch.Tensor:
                with on_device(self, self.depth_estimator, depth_device(self.device)):
                    return estimate_depth(self.depth_estimator, self.feature_extractor, image, resolution)

            raw = self.depth_cache.get_or_compute(key, compute)
            raw, source = raw.clone(), "estimated"  # (1, h, w); a copy, so no caller can change the cached one
        if request is not None and (request.invert_depth or tuple(request.depth_clip) != PERCENTILES):
            raw = torch.from_numpy(adjust_depth(raw[0].numpy(), invert=request.invert_depth, clip=request.depth_clip))[None]
        return DepthMaps(raw=raw[0].numpy(), normalized=normalize_depth(raw, latent_size, notes, depth_range), source=source)

    def estimate_depth(self, image: ImageInput, resolution: int | None = None) -> DepthMaps:
        """Depth of an image with this model's estimator (for ``depth2img depth`` and previews);
        ``resolution``: run the estimator at that short side (sd-webui-controlnet's processor_res)."""
        if self.depth_estimator is None:
            raise InvalidRequestError(f"'{self.name}' has no depth estimator; give a depth model")
        picture = load_image(image)
        size = (picture.height // self.vae_scale_factor, picture.width // self.vae_scale_factor)
        return self.prepare_depth(picture, None, size, resolution=resolution)

    def prepare_latents(self, pixels: torch.Tensor, generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean latents and noise, (B, 4, H/8, W/8) each. Generator i first draws the VAE posterior noise
        of image i, then its initial noise: diffusers' order for ``generator=[...]``. The encoder runs once.
        The caller adds the noise at the first timestep (``scheduler.add_noise``), as diffusers does."""
        posterior = self.vae.encode(pixels).latent_dist
        init = torch.cat([posterior.sample(generator=g) for g in generators]) * self.vae.config.scaling_factor
        init = init.to(self.dtype)
        noise = randn_tensor(init.shape, generator=generators, device=self.device, dtype=self.dtype)
        return init, noise

    def decode(self, latents: torch.Tensor, notes: list[str] | None = None) -> list[Image.Image]:
        """Latents → PIL images. Non-finite latents raise; a non-finite decode is retried once in float32
        (A1111's auto VAE precision), after which the VAE goes back to its dtype (no state changes between calls)."""
        if not torch.isfinite(latents).all():
            raise NonFiniteOutputError("unet", str(self.dtype).removeprefix("torch."), "try float32 or bfloat16")
        scaled = latents / self.vae.config.scaling_factor
        pixels = self.vae.decode(scaled.to(self.vae.dtype), return_dict=False)[0]
        if not torch.isfinite(pixels).all() and self.vae.dtype != torch.float32:
            if notes is not None:
                notes.append(f"VAE decode overflowed in {str(self.vae.dtype).removeprefix('torch.')}; retrying in float32")
            dtype = self.vae.dtype
            try:  # for this decode only: a shared pipeline (server, batch) keeps the dtype it was loaded with
                torch.nn.Module.to(self.vae, dtype=torch.float32)
                pixels = self.vae.decode(scaled.float(), return_dict=False)[0]
            finally:
                torch.nn.Module.to(self.vae, dtype=dtype)
        if not torch.isfinite(pixels).all():
            raise NonFiniteOutputError("vae", str(self.vae.dtype).removeprefix("torch."), "the model weights may be broken")
        return self.image_processor.postprocess(pixels.float(), output_type="pil")

    def infotext(self, request: GenerationRequest, seed: int, size: tuple[int, int], own_depth: bool) -> str:
        """A1111's parameters text for image ``seed`` (keys and spellings from a1111.py)."""
        sampler = a1111.SAMPLERS[request.scheduler]
        params: dict[str, object] = {
            "Steps": request.steps,
            "Sampler": sampler.name,
            "Schedule type": sampler.schedule_type,
            "CFG scale": request.guidance_scale,
            "Seed": seed,
            "Size": f"{size[0]}x{size[1]}",
            "Model hash": self.model_hash,
            "Model": self.name,
            "Denoising strength": request.strength if request.image is not None else 1.0,  # depth only: from noise
            "Eta": request.eta if request.eta and SCHEDULERS[request.scheduler].uses_eta else None,
            **self.backend.infotext(request, own_depth=own_depth, depth_source=self.depth_source),
            **inpaint_params(request),
            **depth_control_params(request),
            "Styles": ", ".join(request.styles) or None,
            "TI hashes": None if self.embeddings is None else self.embeddings.hashes(
                self.tokenizer, [request.prompt, request.negative_prompt]),
            "Lora hashes": self._lora_hashes(request),
            "NGMS": request.uncond_sigma or None,
            "DeepCache": request.deepcache_interval if request.deepcache_interval > 1 else None,
            "Precision": str(low_precision_dtype(self.device)).removeprefix("torch.")
            if request.low_precision and self.dtype == torch.float32 else None,
            **request.extra,
            "Version": f"depth2img {__version__}",
        }
        return build_infotext(request.prompt, request.negative_prompt, params)

    def _lora_hashes(self, request: GenerationRequest) -> str | None:
        if self.loras is None:
            return None
        from .prompts import lora

        return lora.hashes(self.loras, self._requested_loras(request)[0])


def encode_sdxl_prompt(pipe: Pipeline, prompt: str, negative: str, batch: int, guidance: bool
                       ) -> tuple[Conditioning, Conditioning | None]:
    from .backends.sdxl_text import encode_sdxl_text

    def encode(text: str) -> Conditioning:
        def compute() -> Conditioning:
            with on_device(pipe, pipe.text_encoder, pipe.device), on_device(pipe, pipe.text_encoder_2, pipe.device):
                return encode_sdxl_text([pipe.tokenizer, pipe.tokenizer_2], [pipe.text_encoder, pipe.text_encoder_2], text,
                                        pipe.device, pipe.dtype)

        # (1, 77, D1 + D2) and the pooled (1, P), cached as SD's one-encoder path (caches.py): both encoders' identities
        key = text_key(text, pipe.text_encoder, pipe.tokenizer, None, (), pipe.device, pipe.dtype) + (
            "sdxl", module_identity(pipe.text_encoder_2), id(pipe.tokenizer_2))
        return pipe.text_cache.get_or_compute(key, compute).repeat(batch)  # repeat: new tensors, the cached ones stay

    return encode(prompt), encode(negative) if guidance else None


def _place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> Any:
    """Move and cast a model, in eval mode. Calls torch's ``Module.to`` directly: diffusers 0.42's
    ``ModelMixin.to`` logs a "should be kept in float32: []" warning on every dtype cast, even for
    models with no fp32 modules."""
    return torch.nn.Module.to(module, device=device, dtype=dtype).eval()


def _step_reporter(callback: Callback | None) -> Callable[..., None] | None:
    if callback is None:
        return None

    def report(step: int, total: int, t: torch.Tensor, latents: torch.Tensor) -> None:
        if callback(StepInfo(step=step, total=total, timestep=int(t), latents=latents)) is False:
            raise GenerationCancelled(f"cancelled after step {step + 1} of {total}")

    return report


def load_pipeline(
    model: str | Components = "tiny",
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    depth_model: str | None = None,
    cache_dir: str | Path | None = None,
    styles_file: str | Path | None = None,
    controlnet: str | Path | None = None,
    embeddings_dir: str | Path | None = None,
    lora_dir: str | Path | None = None,
    low_memory: bool = False,
    compile: bool = False,
) -> Pipeline:
    """Load ``model`` (built-in name, diffusers folder, checkpoint file, hub id, or Components).

    ``device`` defaults to cpu and ``dtype`` to float32 (diffusers' "highest precision" default);
    ``depth_model`` swaps in any transformers depth estimator (folder or hub id); ``cache_dir`` lets a
    pickle ``.ckpt`` be converted once to a memory-mapped safetensors copy there (None: no cache);
    ``styles_file`` is an A1111 ``styles.csv`` whose names ``request.styles`` may use.
    ``controlnet`` (built-in name, folder or single file) puts the depth through a ControlNet.
    ``embeddings_dir`` holds textual-inversion files a prompt uses by file name (prompts.embeddings).
    ``lora_dir`` holds LoRA files for ``<lora:name:weight>`` and ``request.loras`` (prompts.lora).
    ``low_memory``: VAE tiling and slicing, and the text encoder(s) and depth estimator kept out of the way
    between uses: on CUDA on the CPU, on CPU/MPS released and restored from a temporary spill file (lowmem.py).
    ``compile``: run the UNet through ``torch.compile`` (compiled.py); the first image of each size pays
    the compile, reported as a note on its Result.
    """
    from .models.registry import load_components

    parsed = parse_dtype(dtype)
    components = model if isinstance(model, Components) else load_components(
        model, dtype=parsed, depth_model=depth_model, cache_dir=cache_dir, controlnet=controlnet
    )
    pipe = Pipeline(components, device=device, dtype=parsed, low_memory=low_memory, compile=compile)
    pipe.styles = load_styles(styles_file) if styles_file is not None else None
    if embeddings_dir is not None:
        set_embeddings(pipe, embeddings_dir)
    if lora_dir is not None:
        from .prompts.lora import LoraLibrary

        pipe.loras = LoraLibrary(lora_dir)
    return pipe


def set_embeddings(pipe: Pipeline, folder: str | Path) -> None:
    """Index a textual-inversion folder for ``pipe``'s text encoder (files are read when first used)."""
    from .prompts.embeddings import load_embeddings

    if pipe.text_encoder_2 is not None:
        raise InvalidRequestError("textual-inversion embeddings are not supported on SDXL models yet")
    pipe.embeddings = load_embeddings(folder, pipe.tokenizer, pipe.text_encoder)
