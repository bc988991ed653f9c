"""How widely a scene's look is drawn: the benchmark's ranges, or wider ones for encoder pretraining.

The benchmark's scenes draw camera pose, sun, materials and light from the ranges written in
``style.SceneStyle.sample``, ``Scene._make_palette`` and ``sensors_sim.make_condition``. The
``"wide"`` randomisation stands in for the variety of ImageNet when the shared encoder is pretrained
on generated data (``pretrain_encoder``): on top of the benchmark's draws it re-draws the camera
intrinsics and pose, the sun, the light's level and tint, the camera exposure, and shifts the hue,
saturation and brightness of every material, from its own random stream ``[seed, 9]``. A scene's
benchmark draws are therefore untouched by the option: ``"benchmark"`` renders bit-identical data.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, replace

import numpy as np

#: The random stream (second seed word) the wide draws use; the benchmark's streams are 0..3 and 100+.
WIDE_STREAM = 9


@dataclass(frozen=True)
class Randomization:
    """Ranges (low, high) of the per-scene draws that replace or scale the benchmark's.

    Angles in degrees, heights in metres; ``*_scale`` multiply the benchmark's value; hue shifts are
    fractions of the colour wheel (0.5 = opposite colour).
    """

    name: str
    hfov_deg: tuple[float, float]
    camera_height_m: tuple[float, float]
    camera_pitch_deg: tuple[float, float]
    camera_roll_deg: tuple[float, float]
    sun_elevation_deg: tuple[float, float]
    light_scale: tuple[float, float]
    light_tint: float                        # max relative change of one colour channel of the light
    exposure_scale: tuple[float, float]
    material_hue_shift: float                # max |shift| per material
    material_saturation_scale: tuple[float, float]
    material_value_scale: tuple[float, float]


#: Ranges for pretraining: wider than the benchmark's in every drawn quantity (benchmark: hfov 90,
#: height 1.35..2.1 m, pitch -1..5, roll -1..1, sun 15..65 deg, light jitter 0.85..1.15).
WIDE = Randomization(
    name="wide",
    hfov_deg=(55.0, 120.0),
    camera_height_m=(1.1, 3.0),
    camera_pitch_deg=(-4.0, 10.0),
    camera_roll_deg=(-4.0, 4.0),
    sun_elevation_deg=(4.0, 85.0),
    light_scale=(0.5, 1.8),
    light_tint=0.25,
    exposure_scale=(0.55, 1.7),
    material_hue_shift=0.12,
    material_saturation_scale=(0.4, 1.6),
    material_value_scale=(0.6, 1.4),
)

#: Names accepted by ``DriveConfig.randomization`` and ``generate_dataset --randomization``.
RANDOMIZATIONS: dict[str, Randomization | None] = {"benchmark": None, "wide": WIDE}


def resolve(name: str) -> Randomization | None:
    """The ranges called ``name`` (None for the benchmark's own); ValueError for an unknown name."""
    if name not in RANDOMIZATIONS:
        raise ValueError(f"unknown randomization {name!r}; expected one of {tuple(RANDOMIZATIONS)}")
    return RANDOMIZATIONS[name]


def wide_rng(seed: int, part: int) -> np.random.Generator:
    """The wide draws' own stream of scene ``seed`` (independent of every benchmark stream); ``part``
    0 is the scene's (style, materials), 1 the drive's (intrinsics, light)."""
    return np.random.default_rng([int(seed), WIDE_STREAM, int(part)])


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def widen_style(style, spread: Randomization, rng: np.random.Generator):
    """``style`` (a ``SceneStyle``) with camera pose and sun re-drawn from ``spread``."""
    return replace(
        style,
        camera_height=_uniform(rng, spread.camera_height_m),
        camera_pitch_deg=_uniform(rng, spread.camera_pitch_deg),
        camera_roll_deg=_uniform(rng, spread.camera_roll_deg),
        sun_elevation_deg=_uniform(rng, spread.sun_elevation_deg),
    )


def widen_materials(color_a: np.ndarray, color_b: np.ndarray, spread: Randomization,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Shift hue, saturation and brightness of every material (one draw per material, applied to
    both of its colours). Colours are linear-light albedo [N, 3] in [0, 1]; returns new arrays."""
    count = len(color_a)
    hue = rng.uniform(-spread.material_hue_shift, spread.material_hue_shift, count)
    saturation = rng.uniform(*spread.material_saturation_scale, count)
    value = rng.uniform(*spread.material_value_scale, count)
    shifted = []
    for colors in (color_a, color_b):
        out = np.empty_like(colors)
        for i, linear in enumerate(colors):
            h, s, v = colorsys.rgb_to_hsv(*np.clip(linear, 0.0, 1.0) ** (1 / 2.2))
            rgb = colorsys.hsv_to_rgb((h + hue[i]) % 1.0, min(s * saturation[i], 1.0), min(v * value[i], 1.0))
            out[i] = np.asarray(rgb, np.float32) ** 2.2
        shifted.append(out)
    return shifted[0], shifted[1]


def widen_condition(condition, spread: Randomization, rng: np.random.Generator):
    """``condition`` (a ``sensors_sim.Condition``) with the light's level and tint and the camera
    exposure re-scaled from ``spread``."""
    level = _uniform(rng, spread.light_scale)
    tint = (1.0 + rng.uniform(-spread.light_tint, spread.light_tint, 3)).astype(np.float32)
    lighting = condition.lighting
    lighting = replace(lighting, sun=lighting.sun * level * tint, ambient=lighting.ambient * level * tint)
    return replace(condition, lighting=lighting, exposure=condition.exposure * _uniform(rng, spread.exposure_scale))
