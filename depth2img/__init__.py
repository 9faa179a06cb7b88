"""depth2img: a photo and a prompt in, a new image out that keeps the photo's 3-D composition.

Stable Diffusion 2's depth model conditioned on text, image and a depth map (MiDaS DPT-Hybrid, another
estimator, or your own map). Public API::

    from depth2img import load_pipeline
    pipe = load_pipeline("tiny")  # or a diffusers folder, a .ckpt/.safetensors file, a hub id
    result = pipe.generate(image="photo.png", prompt="a marble statue", strength=1.0, seed=1)
    result.images[0].save("out.png")

Importing this package is cheap and has no side effects: torch and friends load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["GenerationRequest", "Pipeline", "Result", "load_pipeline", "__version__"]

if TYPE_CHECKING:
    from .pipeline import Pipeline, load_pipeline
    from .request import GenerationRequest
    from .result import Result


def __getattr__(name: str) -> Any:  # PEP 562 lazy exports
    if name in ("Pipeline", "load_pipeline"):
        from . import pipeline

        return getattr(pipeline, name)
    if name == "GenerationRequest":
        from .request import GenerationRequest

        return GenerationRequest
    if name == "Result":
        from .result import Result

        return Result
    raise AttributeError(f"module 'depth2img' has no attribute {name!r}")
