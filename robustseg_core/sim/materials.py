"""Per-scene material table: texture kind, colours (linear albedo), pattern parameters, LiDAR reflectivity."""

from __future__ import annotations

import colorsys

import numpy as np

# Texture kinds (see render.py for what each draws).
TEX_NOISE = 0          # two-octave noise between colour a and b, anisotropic scale (s, t)
TEX_GRID = 1           # noise + joint lines: params = (period_s, period_t, joint_width, stagger)
TEX_FACADE = 2         # wall + window grid: params = (period_s, period_t, window_w, window_h)
TEX_GLASS = 3          # vehicle cabin: glass on vertical faces with pillars, colour b (paint) on top
TEX_VEHICLE = 4        # paint, darker bumper band, lights on front/back faces, params[0:2] = window band
TEX_SIGN = 5           # plate face colour a with border colour b on the local +-x faces, metal elsewhere
TEX_TRAFFIC_LIGHT = 6  # dark housing with three lamps on the local -x / +x faces
TEX_WATER = 7          # noise ripples plus reflected sky
TEX_LAMP = 8           # street-lamp head: glows at night
TEX_ROAD = 9           # asphalt noise; markings are added by the ground shader


def linear_from_hsv(hue: float, saturation: float, value: float) -> np.ndarray:
    """Linear-light RGB albedo from an sRGB-space HSV colour (all in [0, 1])."""
    rgb = np.array(colorsys.hsv_to_rgb(hue % 1.0, np.clip(saturation, 0, 1), np.clip(value, 0, 1)))
    return (rgb**2.2).astype(np.float32)


def random_color(rng: np.random.Generator, hue: tuple[float, float], saturation: tuple[float, float],
                 value: tuple[float, float]) -> np.ndarray:
    return linear_from_hsv(rng.uniform(*hue), rng.uniform(*saturation), rng.uniform(*value))


class MaterialTable:
    """Grows while a scene is built; ``freeze`` packs it into arrays indexed by material id."""

    def __init__(self) -> None:
        self._rows: list[tuple] = []

    def add(self, texture: int, color_a, color_b=None, *, scale=(2.0, 2.0), contrast: float = 0.3,
            params=(0.0, 0.0, 0.0, 0.0), reflectivity: float = 0.3, specular: float = 0.0) -> int:
        color_a = np.asarray(color_a, dtype=np.float32)
        color_b = color_a * 0.6 if color_b is None else np.asarray(color_b, dtype=np.float32)
        self._rows.append((texture, color_a, color_b, scale, contrast, params, reflectivity, specular))
        return len(self._rows) - 1

    def freeze(self) -> None:
        rows = self._rows
        self.texture = np.array([r[0] for r in rows], dtype=np.int8)
        self.color_a = np.array([r[1] for r in rows], dtype=np.float32)
        self.color_b = np.array([r[2] for r in rows], dtype=np.float32)
        self.scale = np.array([r[3] for r in rows], dtype=np.float32)
        self.contrast = np.array([r[4] for r in rows], dtype=np.float32)
        self.params = np.array([r[5] for r in rows], dtype=np.float32)
        self.reflectivity = np.array([r[6] for r in rows], dtype=np.float32)
        self.specular = np.array([r[7] for r in rows], dtype=np.float32)

    def __len__(self) -> int:
        return len(self._rows)
