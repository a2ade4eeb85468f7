"""Colour conversions of the protocol (paper §4.1): MATLAB `rgb2ycbcr`, BT.601 studio swing."""

from __future__ import annotations

import numpy as np

# MATLAB rgb2ycbcr for R, G, B in [0, 1]; rows give Y, Cb, Cr, offsets (16, 128, 128).
RGB_TO_YCBCR = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]
)
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])


def _as_rgb_float(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim < 3 or rgb.shape[-1] != 3:
        raise ValueError(f"expected (..., 3) RGB, got shape {rgb.shape}")
    return rgb.astype(np.float64) / 255.0


def round_to_uint8(levels) -> np.ndarray:
    """Values on the 0..255 scale as the uint8 image they stand for: rounded, then clipped."""
    return np.clip(np.round(levels), 0, 255).astype(np.uint8)


def rgb_to_y(rgb_uint8: np.ndarray) -> np.ndarray:
    """Y of YCbCr as MATLAB `rgb2ycbcr` (studio swing, [16, 235]) rounded to uint8."""
    return round_to_uint8(_as_rgb_float(rgb_uint8) @ RGB_TO_YCBCR[0] + YCBCR_OFFSET[0])


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """Full YCbCr as MATLAB `rgb2ycbcr` of RGB in 0..255 (uint8, or float as it is), float64 (not
    rounded), shape (..., 3)."""
    return _as_rgb_float(rgb) @ RGB_TO_YCBCR.T + YCBCR_OFFSET


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_ycbcr` (MATLAB `ycbcr2rgb`), rounded and clipped to uint8."""
    inv = np.linalg.inv(RGB_TO_YCBCR)
    rgb = (np.asarray(ycbcr, np.float64) - YCBCR_OFFSET) @ inv.T * 255.0
    return round_to_uint8(rgb)


def gray_to_y(gray_uint8: np.ndarray) -> np.ndarray:
    """Studio-swing Y of a full-range grey image (R = G = B = grey)."""
    return rgb_to_y(np.repeat(np.asarray(gray_uint8)[..., None], 3, axis=-1))
