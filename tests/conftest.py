"""Shared fixtures: real photos from scikit-image, tiny seeded components, warnings kept quiet."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

# Ray reads this switch once, when it is imported (ray_constants.ENABLE_RAY_CLUSTER): 0 keeps every node
# of the tests' Ray clusters on 127.0.0.1 instead of the machine's address (tests/_ray.py sets the rest).
# Only Ray reads it; set before any test module imports ray.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def photo(name: str, size: tuple[int, int] | None = None) -> Image.Image:
    """A scikit-image sample photo (astronaut, chelsea, coffee, motorcycle) as RGB, optionally resized (W, H)."""
    from skimage import data

    array = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    image = Image.fromarray(np.asarray(array, dtype=np.uint8)).convert("RGB")
    return image.resize(size, Image.Resampling.LANCZOS) if size else image


@pytest.fixture(scope="session")
def tiny_pipe():
    """The built-in tiny depth model (CPU, float32). Session-scoped: tests must not mutate it."""
    from depth2img import load_pipeline

    return load_pipeline("tiny")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: a test that takes more than a few seconds")
