"""Image-completion metrics measured inside the hole only: PSNR, SSIM, mean L1 and detail.

Scoring the whole image would reward every method for the pixels it was given; only the hole
says how well it completed. PSNR and L1 reward a blurred average of the plausible fills, so
`hole_gradient` measures the other half of quality: how much texture and edge a fill has (the
detail ratio is a method's mean `hole_gradient` over the real photo's, per bin).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

#: Stands in for an infinite PSNR (a hole reproduced exactly), so means stay finite.
PSNR_CAP = 100.0
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
PEAK = 255.0
#: The hole is eroded by this many pixels before gradients are measured, so the step between a
#: fill and its surroundings (a seam, or its absence) does not count as detail.
DETAIL_ERODE = 2


def _hole(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    hole = np.asarray(mask) > 0
    if hole.shape != image.shape[:2]:
        raise ValueError(f"mask shape {hole.shape} does not match image shape {image.shape}")
    if not hole.any():
        raise ValueError("the hole is empty: metrics inside it are undefined")
    return hole


def psnr(result: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB over the hole's pixels and channels (peak 255), capped at `PSNR_CAP`.

    Only the hole counts: pixels outside it are the original for every method and would only
    inflate the score by an amount that depends on the hole's size.
    """
    hole = _hole(mask, truth)
    diff = result[hole].astype(np.float64) - truth[hole].astype(np.float64)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(PEAK * PEAK / mse))


def mean_l1(result: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error over the hole's pixels and channels, in [0, 1] units (/255)."""
    hole = _hole(mask, truth)
    diff = result[hole].astype(np.float64) - truth[hole].astype(np.float64)
    return float(np.mean(np.abs(diff)) / PEAK)


def ssim_map(result: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Wang et al. (2004) SSIM at every pixel (11x11 Gaussian, sigma 1.5), averaged over channels.

    Computed over the whole image so that windows at the hole's edge see the real surroundings,
    as they do in the standard definition; the caller averages over the pixels it cares about.
    """
    x = np.asarray(result, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} and {y.shape}")
    c1 = (SSIM_K1 * PEAK) ** 2
    c2 = (SSIM_K2 * PEAK) ** 2

    def blur(z: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(
            z,
            (SSIM_WINDOW, SSIM_WINDOW),
            sigmaX=SSIM_SIGMA,
            sigmaY=SSIM_SIGMA,
            borderType=cv2.BORDER_REFLECT_101,
        )

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x * mu_x
    var_y = blur(y * y) - mu_y * mu_y
    cov = blur(x * y) - mu_x * mu_y
    numerator = (2.0 * mu_x * mu_y + c1) * (2.0 * cov + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    values = numerator / denominator
    return values.mean(axis=2) if values.ndim == 3 else values


def ssim(result: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean of `ssim_map` over the hole's pixels."""
    hole = _hole(mask, truth)
    return float(ssim_map(result, truth)[hole].mean())


def _detail_region(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The hole eroded by `DETAIL_ERODE` pixels, where texture measures look."""
    size = 2 * DETAIL_ERODE + 1
    return cv2.erode(_hole(mask, image).view(np.uint8), np.ones((size, size), np.uint8)) > 0


def hole_gradient(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean Sobel gradient magnitude of `image`'s luma over the hole eroded by `DETAIL_ERODE`
    pixels (NaN where erosion leaves nothing: a hole too thin to hold texture)."""
    inner = _detail_region(image, mask)
    if not inner.any():
        return float("nan")
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    dx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    dy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    return float(cv2.magnitude(dx, dy)[inner].mean())


def hole_checker(image: np.ndarray, mask: np.ndarray, lag: int) -> float:
    """Mean mixed second difference of `image`'s luma at `lag`, |x[i,j] - x[i+lag,j] -
    x[i,j+lag] + x[i+lag,j+lag]|, over the hole eroded as for `hole_gradient` (NaN likewise).

    A checkerboard of period 2 x lag answers it at full strength while blur, ramps and edges
    along either axis cancel in it: over the same pixels, its ratio to the photo's, divided by
    the detail ratio, tells a fill's regular weave (the transposed convolutions' artefact under
    an adversarial loss) from the photo's own texture (`benchmarks/fill_texture.py`). Each
    pixel's window reaches `lag` pixels right and down, so `lag` may not exceed the erosion: the
    window then stays inside the hole.
    """
    if not 1 <= lag <= DETAIL_ERODE:
        raise ValueError(f"lag must be 1 to {DETAIL_ERODE} (the hole's erosion), not {lag}")
    inner = _detail_region(image, mask)
    inner[-lag:, :] = False
    inner[:, -lag:] = False
    if not inner.any():
        return float("nan")
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY).astype(np.float32)
    mixed = np.abs(grey[:-lag, :-lag] - grey[lag:, :-lag] - grey[:-lag, lag:] + grey[lag:, lag:])
    return float(mixed[inner[:-lag, :-lag]].mean())


def detail_ratio(fill_gradients: np.ndarray, truth_gradients: np.ndarray) -> float:
    """Mean hole gradient of a method's fills over that of the real photos, on the pairs where
    both are defined: 1 is the photos' own texture, 0 a flat fill. A ratio of means, not a mean
    of ratios, so a flat sky in the truth cannot make one pair dominate."""
    fills = np.asarray(fill_gradients, dtype=np.float64)
    truths = np.asarray(truth_gradients, dtype=np.float64)
    defined = np.isfinite(fills) & np.isfinite(truths)
    total = truths[defined].sum()
    if not defined.any() or total <= 0:
        return float("nan")
    return float(fills[defined].sum() / total)
