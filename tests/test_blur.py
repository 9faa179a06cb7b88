"""The inpainting mask blur is A1111's (cv2.GaussianBlur, kernel size 2·int(2.5σ+0.5)+1, BORDER_REFLECT_101),
checked against OpenCV itself for σ in 0..64, fractional ones included."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from depth2img.inpaint import blur_mask

cv2 = pytest.importorskip("cv2")  # opencv-python-headless: a test dependency (pyproject [test])

SIGMAS = sorted({0.1, 0.2, 0.3, 0.5, 0.59, 0.6, 0.61, 1.0, 1.4, 1.8, 1.99, 2.2, 3.0, 3.8, 4.0, 4.2, 7.5, 12.3, 19.8, 32.0, 47.3, 63.99, 64.0}
                | {round(x, 3) for x in np.random.default_rng(0).uniform(0.05, 64, 40)})


def _masks(h=150, w=170):
    rng = np.random.default_rng(1)
    square = np.zeros((h, w), np.uint8)
    square[40:110, 50:120] = 255
    return [square, rng.integers(0, 256, (h, w), dtype=np.uint8)]


def _a1111_float(mask: np.ndarray, sigma: float) -> np.ndarray:
    """A1111's two passes with OpenCV's own kernel at A1111's size, in float64 (no fixed point), rounded per pass."""
    size = 2 * int(2.5 * sigma + 0.5) + 1
    kernel = cv2.getGaussianKernel(size, sigma, cv2.CV_64F)
    x = mask.astype(np.float64)
    x = np.round(cv2.sepFilter2D(x, cv2.CV_64F, kernel, np.ones((1, 1)), borderType=cv2.BORDER_REFLECT_101))
    x = np.round(cv2.sepFilter2D(x, cv2.CV_64F, np.ones((1, 1)), kernel, borderType=cv2.BORDER_REFLECT_101))
    return np.clip(x, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("sigma", SIGMAS)
def test_blur_equals_opencv_with_a1111s_kernel(sigma):
    for mask in _masks():
        got = np.asarray(blur_mask(Image.fromarray(mask), sigma))
        assert np.array_equal(got, _a1111_float(mask, sigma)), sigma
        size = 2 * int(2.5 * sigma + 0.5) + 1
        ref = cv2.GaussianBlur(cv2.GaussianBlur(mask, (size, 1), sigma), (1, size), sigma)  # A1111's exact calls
        assert np.abs(got.astype(int) - ref).max() <= 2  # OpenCV's uint8 path is fixed-point


def test_an_all_white_mask_stays_white_and_zero_blur_is_identity():
    white = Image.new("L", (40, 30), 255)
    assert np.asarray(blur_mask(white, 7.3)).min() == 255
    mask = Image.fromarray(_masks()[1])
    assert np.array_equal(np.asarray(blur_mask(mask, 0)), np.asarray(mask))
