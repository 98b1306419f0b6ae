"""Image-completion metrics measured inside the hole only: PSNR, SSIM and mean L1.

Scoring the whole image would reward every method for the pixels it was given; only the hole
says how well it completed.
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
