"""Procedural texture helpers: tileable noise and anti-aliased periodic patterns.

Textures are evaluated at world-space texture coordinates (metres). To keep static surfaces from
flickering between frames (which would fire spurious events), every pattern is filtered by the
pixel's footprint (metres covered by one pixel at the hit point): noise fades to its mean and
periodic pulses are box-filtered analytically.
"""

from __future__ import annotations

import numpy as np

NOISE_TILE_SIZE = 256


def tileable_noise(rng: np.random.Generator, size: int = NOISE_TILE_SIZE, falloff: float = 1.6) -> np.ndarray:
    """Smooth tileable noise [size, size] float32 in [0, 1] with a 1/f^falloff spectrum."""
    freq = np.fft.fftfreq(size)
    radius = np.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2)
    radius[0, 0] = 1.0
    spectrum = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / radius**falloff
    spectrum[0, 0] = 0.0
    field = np.fft.ifft2(spectrum).real
    field -= field.min()
    field /= max(field.max(), 1e-12)
    return field.astype(np.float32)


def sample_noise(tile: np.ndarray, s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Bilinear, wrapping lookup of ``tile`` at texel coordinates (s, t) (float arrays, same shape)."""
    size = tile.shape[0]
    mask = size - 1
    s0f = np.floor(s)
    t0f = np.floor(t)
    fs = (s - s0f).astype(np.float32)
    ft = (t - t0f).astype(np.float32)
    s0 = s0f.astype(np.int64) & mask
    t0 = t0f.astype(np.int64) & mask
    s1 = (s0 + 1) & mask
    t1 = (t0 + 1) & mask
    flat = tile.ravel()
    row0 = t0 * size
    row1 = t1 * size
    top = flat[row0 + s0] * (1 - fs) + flat[row0 + s1] * fs
    bottom = flat[row1 + s0] * (1 - fs) + flat[row1 + s1] * fs
    return top * (1 - ft) + bottom * ft


def filtered_noise(tile: np.ndarray, s: np.ndarray, t: np.ndarray, texels_per_m: float | np.ndarray,
                   footprint_m: np.ndarray) -> np.ndarray:
    """Noise in [0, 1] at metre coordinates (s, t), faded towards 0.5 where a pixel covers many texels."""
    value = sample_noise(tile, s * texels_per_m, t * texels_per_m)
    fade = np.clip(1.5 / (np.asarray(texels_per_m, dtype=np.float32) * footprint_m) - 0.5, 0.0, 1.0)
    return 0.5 + (value - 0.5) * fade


def _pulse_integral(s: np.ndarray, period: float | np.ndarray, width: float | np.ndarray) -> np.ndarray:
    """Integral from 0 to s of a periodic pulse that is 1 on [k*period, k*period + width)."""
    cycles = np.floor(s / period)
    return cycles * width + np.minimum(s - cycles * period, width)


def pulse_coverage(s: np.ndarray, period: float | np.ndarray, width: float | np.ndarray,
                   footprint_m: np.ndarray) -> np.ndarray:
    """Box-filtered coverage in [0, 1] of a pulse train (1 on [k*period, k*period + width)) over a pixel footprint."""
    half = 0.5 * np.maximum(footprint_m, 1e-4)
    covered = _pulse_integral(s + half, period, width) - _pulse_integral(s - half, period, width)
    return np.clip(covered / (2.0 * half), 0.0, 1.0)


def band_coverage(s: np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray, footprint_m: np.ndarray) -> np.ndarray:
    """Box-filtered coverage in [0, 1] of the single band lo <= s < hi over a pixel footprint."""
    half = 0.5 * np.maximum(footprint_m, 1e-4)
    covered = np.clip(np.minimum(s + half, hi) - np.maximum(s - half, lo), 0.0, None)
    return np.clip(covered / (2.0 * half), 0.0, 1.0)


def hash_unit(*keys: np.ndarray) -> np.ndarray:
    """Deterministic pseudo-random float in [0, 1) from integer arrays (cell indices)."""
    value = np.uint64(0x9E3779B97F4A7C15)
    acc = np.full(np.broadcast(*keys).shape, value, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for key in keys:
            acc ^= np.asarray(key).astype(np.int64).astype(np.uint64) + np.uint64(0x632BE59BD9B4E019)
            acc *= np.uint64(0xBF58476D1CE4E5B9)
            acc ^= acc >> np.uint64(29)
            acc *= np.uint64(0x94D049BB133111EB)
            acc ^= acc >> np.uint64(32)
    return (acc >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)
