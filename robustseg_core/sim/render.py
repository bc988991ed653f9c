"""From ray hits to surfaces (point, normal, label, material, texture coordinates) and, for the
camera, to linear radiance with procedural textures and simple lighting.

Radiance is linear RGB (arbitrary units, ~1 for a white surface in full sun before exposure).
Lighting: hemispherical sky ambient + sun (Lambert) with ground shadows, emissive lamps, lit
windows, vehicle and traffic lights; at night street lamps and the ego's headlights as point /
spot lights; a mirror-like sky reflection on glass, water and wet roads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from robustseg_core.classes import CLASS_ID
from robustseg_core.sim.materials import (
    TEX_FACADE,
    TEX_GLASS,
    TEX_GRID,
    TEX_LAMP,
    TEX_NOISE,
    TEX_ROAD,
    TEX_SIGN,
    TEX_TRAFFIC_LIGHT,
    TEX_VEHICLE,
    TEX_WATER,
)
from robustseg_core.sim.primitives import PrimitiveSet
from robustseg_core.sim.raycast import KIND_BOX, KIND_CYLINDER, KIND_GROUND, KIND_SPHEROID, Hits, RayGrid
from robustseg_core.sim.scene import Scene, WorldWindow
from robustseg_core.sim.style import ZONE_LABELS, ZONE_ROAD
from robustseg_core.sim.textures import band_coverage, hash_unit, pulse_coverage, sample_noise

FACE_GROUND, FACE_CYLINDER, FACE_CAP, FACE_SPHEROID = 9, 6, 7, 8
PAINT_WHITE = np.array([0.72, 0.72, 0.70], dtype=np.float32)
PAINT_YELLOW = np.array([0.70, 0.48, 0.06], dtype=np.float32)
ROAD_LINE = CLASS_ID["RoadLine"]


@dataclass
class Surface:
    """Hit surfaces of the rays ``rays`` (indices into the grid), arrays over those K rays."""

    rays: np.ndarray       # [K] int64
    t: np.ndarray          # [K] float32 distance along the ray
    point: np.ndarray      # [K, 3] float32 world
    normal: np.ndarray     # [K, 3] float32 world, unit
    label: np.ndarray      # [K] uint8
    material: np.ndarray   # [K] int16
    tex: np.ndarray        # [K, 2] float32 surface coordinates (metres)
    face: np.ndarray       # [K] int8: box faces 0..5 (+x, -x, +y, -y, +z, -z local), 6..9 see FACE_*
    local: np.ndarray      # [K, 3] float32 box-local point (from the box centre), 0 elsewhere
    half: np.ndarray       # [K, 3] float32 box half extents, 0 elsewhere
    tag: np.ndarray        # [K] int32 stable per-object number (for per-object variation), 0 on the ground
    paint: np.ndarray      # [K, 2] float32 white / yellow paint coverage (camera ground only)


def surface_at(grid: RayGrid, hits: Hits, primitives: PrimitiveSet, scene: Scene, window: WorldWindow,
               pixel_angle: float | None = None) -> Surface:
    """Evaluate every hit of ``grid``.

    With ``pixel_angle`` (radians per pixel, camera grids) road markings are evaluated: RoadLine
    labels and box-filtered paint coverage. Without it (LiDAR) markings count as Road.
    """
    rays = np.flatnonzero(hits.kind > 0)
    k = len(rays)
    t = hits.t[rays]
    d = np.stack((grid.dx[rays], grid.dy[rays], grid.dz[rays]), axis=1)
    point = (grid.origin.astype(np.float32) + t[:, None] * d).astype(np.float32)
    normal = np.zeros((k, 3), dtype=np.float32)
    label = np.zeros(k, dtype=np.uint8)
    material = np.zeros(k, dtype=np.int16)
    tex = np.zeros((k, 2), dtype=np.float32)
    face = np.zeros(k, dtype=np.int8)
    local = np.zeros((k, 3), dtype=np.float32)
    half = np.zeros((k, 3), dtype=np.float32)
    tag = np.zeros(k, dtype=np.int32)
    paint = np.zeros((k, 2), dtype=np.float32)
    kind = hits.kind[rays]
    index = hits.index[rays]

    sel = np.flatnonzero(kind == KIND_GROUND)
    if len(sel):
        x, y = point[sel, 0], point[sel, 1]
        point[sel, 2] = 0.0
        zones = scene.ground_zones(window, x, y)
        label[sel] = ZONE_LABELS[zones]
        material[sel] = scene.zone_material[zones]
        normal[sel, 2] = 1.0
        tex[sel, 0], tex[sel, 1] = x, y
        face[sel] = FACE_GROUND
        on_road = np.flatnonzero(zones == ZONE_ROAD)
        if len(on_road) and pixel_angle is not None:
            road = sel[on_road]
            fp_x, fp_y = ground_footprints(d[road], t[road], pixel_angle)
            painted, white, yellow = scene.road_markings(window, point[road, 0], point[road, 1], fp_x, fp_y)
            label[road[painted]] = ROAD_LINE
            paint[road, 0], paint[road, 1] = white, yellow

    boxes = primitives.boxes
    sel = np.flatnonzero(kind == KIND_BOX)
    if len(sel):
        i = index[sel]
        yaw = boxes.yaw[i]
        cos, sin = np.cos(yaw), np.sin(yaw)
        rel = point[sel] - boxes.center[i]
        lx = cos * rel[:, 0] + sin * rel[:, 1]
        ly = -sin * rel[:, 0] + cos * rel[:, 1]
        lz = rel[:, 2]
        h = boxes.half[i]
        loc = np.stack((lx, ly, lz), axis=1)
        axis = np.argmax(np.abs(loc) / np.maximum(h, 1e-6), axis=1)
        positive = np.take_along_axis(loc, axis[:, None], axis=1)[:, 0] >= 0
        sign = np.where(positive, 1.0, -1.0).astype(np.float32)
        n = np.zeros((len(sel), 3), dtype=np.float32)
        n[:, 0] = np.where(axis == 0, cos * sign, np.where(axis == 1, -sin * sign, 0.0))
        n[:, 1] = np.where(axis == 0, sin * sign, np.where(axis == 1, cos * sign, 0.0))
        n[:, 2] = np.where(axis == 2, sign, 0.0)
        normal[sel] = n
        face[sel] = axis * 2 + (~positive)
        tex[sel, 0] = np.where(axis == 0, ly + h[:, 1], lx + h[:, 0])
        tex[sel, 1] = np.where(axis == 2, ly + h[:, 1], lz + h[:, 2])
        local[sel] = loc
        half[sel] = h
        label[sel] = boxes.label[i]
        material[sel] = boxes.material[i]
        tag[sel] = boxes.tag[i]

    cylinders = primitives.cylinders
    sel = np.flatnonzero(kind == KIND_CYLINDER)
    if len(sel):
        i = index[sel]
        rel_x = point[sel, 0] - cylinders.center[i, 0]
        rel_y = point[sel, 1] - cylinders.center[i, 1]
        radius = cylinders.radius[i]
        top = cylinders.z_range[i, 1]
        cap = (point[sel, 2] >= top - 2e-3 * np.maximum(1.0, t[sel])) & (rel_x**2 + rel_y**2 < radius**2 * 0.995)
        inv_r = 1.0 / radius
        normal[sel, 0] = np.where(cap, 0.0, rel_x * inv_r)
        normal[sel, 1] = np.where(cap, 0.0, rel_y * inv_r)
        normal[sel, 2] = np.where(cap, 1.0, 0.0)
        face[sel] = np.where(cap, FACE_CAP, FACE_CYLINDER)
        tex[sel, 0] = np.arctan2(rel_y, rel_x) * radius
        tex[sel, 1] = point[sel, 2] - cylinders.z_range[i, 0]
        label[sel] = cylinders.label[i]
        material[sel] = cylinders.material[i]
        tag[sel] = cylinders.tag[i]

    spheroids = primitives.spheroids
    sel = np.flatnonzero(kind == KIND_SPHEROID)
    if len(sel):
        i = index[sel]
        rel = point[sel] - spheroids.center[i]
        squash = (spheroids.radius[i] / spheroids.radius_z[i]) ** 2
        n = np.stack((rel[:, 0], rel[:, 1], rel[:, 2] * squash), axis=1)
        normal[sel] = n / np.sqrt(np.einsum("ij,ij->i", n, n)).clip(1e-6)[:, None]
        face[sel] = FACE_SPHEROID
        tex[sel, 0] = np.arctan2(rel[:, 1], rel[:, 0]) * spheroids.radius[i]
        tex[sel, 1] = rel[:, 2]
        label[sel] = spheroids.label[i]
        material[sel] = spheroids.material[i]
        tag[sel] = spheroids.tag[i]

    return Surface(rays, t, point, normal, label, material, tex, face, local, half, tag, paint)


def ground_footprints(directions: np.ndarray, t: np.ndarray, pixel_angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Extent (metres) of one pixel on the ground along world x and y."""
    horizontal = np.sqrt(directions[:, 0] ** 2 + directions[:, 1] ** 2).clip(1e-6)
    hx, hy = np.abs(directions[:, 0]) / horizontal, np.abs(directions[:, 1]) / horizontal
    across = t * pixel_angle
    along = np.minimum(across / np.abs(directions[:, 2]).clip(1e-3), 50.0)
    fp_x = np.sqrt((hx * along) ** 2 + (hy * across) ** 2)
    fp_y = np.sqrt((hy * along) ** 2 + (hx * across) ** 2)
    return fp_x.astype(np.float32), fp_y.astype(np.float32)


# ----------------------------------------------------------------------------- lighting


@dataclass
class Lighting:
    """Illumination of one frame (linear RGB)."""

    sun_direction: np.ndarray      # [3] unit, towards the sun
    sun: np.ndarray                # [3]
    ambient: np.ndarray            # [3] sky light on an up-facing surface
    sky_horizon: np.ndarray        # [3]
    sky_zenith: np.ndarray         # [3]
    cloudiness: float              # 0 clear .. 1 overcast
    night: bool
    wet: bool
    shadows: bool
    lamp_intensity: float
    headlight_intensity: float
    time: float


def shade(surface: Surface, grid: RayGrid, scene: Scene, window: WorldWindow, primitives: PrimitiveSet,
          lighting: Lighting, pixel_angle: float, camera_forward: np.ndarray, sky: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """Linear radiance [rows * cols, 3] of every ray of a camera grid, and the hit mask [rows * cols].

    ``sky`` [rows * cols, 3] is the sky radiance along every ray (``sky_color(grid.directions())``).
    """
    radiance = sky.copy()
    rays = surface.rays
    if len(rays) == 0:
        return radiance, np.zeros(grid.size, dtype=bool)
    d = np.stack((grid.dx[rays], grid.dy[rays], grid.dz[rays]), axis=1)
    cos_incidence = np.abs(np.einsum("ij,ij->i", surface.normal, d)).clip(0.15, 1.0)
    footprint = (surface.t * pixel_angle / cos_incidence).astype(np.float32)
    albedo, emission, specular = surface_albedo(surface, scene, footprint, lighting)

    n = surface.normal
    ambient = lighting.ambient[None, :] * (0.55 + 0.45 * n[:, 2:3])
    direct = np.clip(n @ lighting.sun_direction, 0.0, None)[:, None] * lighting.sun[None, :]
    if lighting.shadows and lighting.sun_direction[2] > 0.05:
        lit = 1.0 - ground_shadow(surface, grid, primitives, lighting.sun_direction)
        direct = direct * lit[:, None]
    irradiance = ambient + direct
    if lighting.night:
        irradiance = irradiance + night_lights(surface, grid, window, lighting, camera_forward)
    color = albedo * irradiance + emission
    if lighting.wet:
        horizontal = surface.normal[:, 2] > 0.9
        specular = np.where(horizontal, np.maximum(specular, 0.25), specular)
    mirror = np.flatnonzero(specular > 0)
    if len(mirror):
        dm, nm = d[mirror], n[mirror]
        reflected = dm - 2.0 * np.einsum("ij,ij->i", dm, nm)[:, None] * nm
        weight = specular[mirror, None]
        color[mirror] = color[mirror] * (1 - weight) + weight * sky_color(reflected, lighting)
    radiance[rays] = color
    hit = np.zeros(grid.size, dtype=bool)
    hit[rays] = True
    return radiance, hit


def sky_color(directions: np.ndarray, lighting: Lighting, scene: Scene | None = None) -> np.ndarray:
    """Sky radiance [K, 3] seen along unit ``directions`` [K, 3]."""
    up = np.clip(directions[:, 2], 0.0, 1.0)[:, None]
    blend = np.sqrt(up)
    color = lighting.sky_horizon[None, :] * (1 - blend) + lighting.sky_zenith[None, :] * blend
    if not lighting.night:
        sun_cos = directions @ lighting.sun_direction
        glow = (np.exp(64.0 * (sun_cos - 1.0)) * 0.6 + np.exp(900.0 * (sun_cos - 1.0)) * 8.0) * (
            1.0 - lighting.cloudiness * 0.9)
        color = color + glow[:, None] * lighting.sun[None, :] * 0.3
    if scene is not None and lighting.cloudiness > 0:
        height = np.clip(directions[:, 2], 0.02, None)
        s = directions[:, 0] / height * 3.0 + 37.0
        t = directions[:, 1] / height * 3.0
        clouds = sample_noise(scene.noise_tiles[1], s, t)
        cover = np.clip((clouds - (0.75 - 0.5 * lighting.cloudiness)) * 3.0, 0.0, 1.0) * np.clip(up[:, 0] * 8, 0, 1)
        cloud_color = lighting.sky_horizon * (1.1 - 0.5 * lighting.cloudiness)
        color = color * (1 - cover[:, None]) + cover[:, None] * cloud_color[None, :]
    return color.astype(np.float32)


# ----------------------------------------------------------------------------- textures


def surface_albedo(surface: Surface, scene: Scene, footprint: np.ndarray, lighting: Lighting
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Albedo [K, 3], emitted radiance [K, 3] and mirror weight [K] of every hit surface."""
    mats = scene.materials
    k = len(surface.rays)
    albedo = np.zeros((k, 3), dtype=np.float32)
    emission = np.zeros((k, 3), dtype=np.float32)
    specular = mats.specular[surface.material].astype(np.float32)
    texture = mats.texture[surface.material]
    for kind in np.unique(texture):
        sel = np.flatnonzero(texture == kind)
        args = (surface, sel, scene, footprint[sel], lighting)
        if kind == TEX_NOISE:
            albedo[sel] = _noise_albedo(*args)
            specular[sel] = 0.0
        elif kind == TEX_GRID:
            albedo[sel] = _grid_albedo(*args)
        elif kind == TEX_ROAD:
            albedo[sel] = _road_albedo(*args)
        elif kind == TEX_FACADE:
            albedo[sel], emission[sel], specular[sel] = _facade(*args)
        elif kind == TEX_GLASS:
            albedo[sel], specular[sel] = _cabin(*args)
        elif kind == TEX_VEHICLE:
            albedo[sel], emission[sel], specular[sel] = _vehicle(*args)
        elif kind == TEX_SIGN:
            albedo[sel] = _sign(*args)
        elif kind == TEX_TRAFFIC_LIGHT:
            albedo[sel], emission[sel] = _traffic_light(*args)
        elif kind == TEX_WATER:
            albedo[sel] = _noise_albedo(*args)
        elif kind == TEX_LAMP:
            albedo[sel] = mats.color_a[surface.material[sel]]
            if lighting.night:
                emission[sel] = np.array([1.0, 0.85, 0.6], dtype=np.float32) * 6.0
    return albedo, emission, specular


def _noise_mix(surface: Surface, sel: np.ndarray, scene: Scene, footprint: np.ndarray, mat: np.ndarray) -> np.ndarray:
    mats = scene.materials
    scale = mats.scale[mat]
    offset = (surface.tag[sel] % 997).astype(np.float32) * 7.31
    s = surface.tex[sel, 0] + offset
    t = surface.tex[sel, 1] + offset * 0.37
    coarse = sample_noise(scene.noise_tiles[0], s * scale[:, 0], t * np.maximum(scale[:, 1], 1e-3))
    fine = sample_noise(scene.noise_tiles[1], s * scale[:, 0] * 4.3, t * np.maximum(scale[:, 1], 1e-3) * 4.3)
    texel = 1.0 / np.maximum(np.maximum(scale[:, 0], scale[:, 1]), 1e-3)
    fade_coarse = np.clip(1.5 * texel / footprint - 0.5, 0.0, 1.0)
    fade_fine = np.clip(1.5 * texel / (4.3 * footprint) - 0.5, 0.0, 1.0)
    g = 0.5 + 1.6 * (coarse - 0.5) * fade_coarse + 0.9 * (fine - 0.5) * fade_fine
    return np.clip(mats.contrast[mat] * g, 0.0, 1.0)


def _noise_albedo(surface, sel, scene, footprint, lighting) -> np.ndarray:
    mat = surface.material[sel]
    mix = _noise_mix(surface, sel, scene, footprint, mat)[:, None]
    mats = scene.materials
    return mats.color_a[mat] * (1 - mix) + mats.color_b[mat] * mix


def _grid_albedo(surface, sel, scene, footprint, lighting) -> np.ndarray:
    mats = scene.materials
    mat = surface.material[sel]
    base = _noise_albedo(surface, sel, scene, footprint, lighting)
    period_s, period_t, joint, stagger = (mats.params[mat, i] for i in range(4))
    s, t = surface.tex[sel, 0], surface.tex[sel, 1]
    row = np.floor(t / period_t)
    s = s + stagger * period_s * np.mod(row, 2)
    tile_variation = hash_unit(np.floor(s / period_s), row, surface.tag[sel]) - 0.5
    fade = np.clip(period_s / footprint / 4.0 - 0.25, 0.0, 1.0)
    base = base * (1.0 + 0.25 * tile_variation * fade)[:, None]
    joint_s = pulse_coverage(s, period_s, joint, footprint)
    joint_t = pulse_coverage(t, period_t, joint, footprint)
    joints = 1.0 - (1.0 - joint_s) * (1.0 - joint_t)
    return base * (1 - joints[:, None]) + mats.color_b[mat] * 0.7 * joints[:, None]


def _road_albedo(surface, sel, scene, footprint, lighting) -> np.ndarray:
    base = _noise_albedo(surface, sel, scene, footprint, lighting)
    paint = surface.paint[sel]
    if not paint.any():
        return base
    wear_noise = sample_noise(scene.noise_tiles[0], surface.tex[sel, 0] * 2.0, surface.tex[sel, 1] * 2.0)
    alpha = np.clip(scene.style.paint_wear * (0.75 + 0.6 * (wear_noise - 0.5)), 0.0, 1.0)
    white = (paint[:, 0] * alpha)[:, None]
    yellow = (paint[:, 1] * alpha)[:, None]
    return base * (1 - white - yellow).clip(0, 1) + PAINT_WHITE * white + PAINT_YELLOW * yellow


def _vertical(face: np.ndarray) -> np.ndarray:
    return face < 4


def _facade(surface, sel, scene, footprint, lighting):
    mats = scene.materials
    mat = surface.material[sel]
    wall = _noise_albedo(surface, sel, scene, footprint, lighting)
    period_s, period_t, win_w, win_h = (mats.params[mat, i] for i in range(4))
    s, t = surface.tex[sel, 0], surface.tex[sel, 1]
    margin = (period_s - win_w) / 2
    sill = period_t * 0.3
    window = (pulse_coverage(s - margin, period_s, win_w, footprint)
              * pulse_coverage(t - sill, period_t, win_h, footprint))
    height = 2 * surface.half[sel, 2]
    window *= (_vertical(surface.face[sel]) & (t < height - 0.8) & (s > 0.5)
               & (s < 2 * np.maximum(surface.half[sel, 0], surface.half[sel, 1]) - 0.5))
    glass = mats.color_b[mat]
    albedo = wall * (1 - window[:, None]) + glass * window[:, None]
    emission = np.zeros_like(albedo)
    if lighting.night:
        lit = hash_unit(np.floor((s - margin) / period_s), np.floor((t - sill) / period_t), surface.tag[sel]) < 0.35
        warmth = np.array([1.0, 0.78, 0.45], dtype=np.float32)
        emission = (window * lit)[:, None] * warmth * 0.5
    specular = mats.specular[mat] * window
    return albedo, emission, specular


def _cabin(surface, sel, scene, footprint, lighting):
    mats = scene.materials
    mat = surface.material[sel]
    vertical = _vertical(surface.face[sel])
    s, t = surface.tex[sel, 0], surface.tex[sel, 1]
    width = 2 * np.where(surface.face[sel] < 2, surface.half[sel, 1], surface.half[sel, 0])
    height = 2 * surface.half[sel, 2]
    frame = 1.0 - band_coverage(s, 0.1, width - 0.1, footprint) * band_coverage(t, 0.05, height - 0.08, footprint)
    glass_weight = np.where(vertical, 1.0 - frame, 0.0)
    albedo = mats.color_a[mat] * glass_weight[:, None] + mats.color_b[mat] * (1 - glass_weight)[:, None]
    return albedo, mats.specular[mat] * glass_weight


def _vehicle(surface, sel, scene, footprint, lighting):
    mats = scene.materials
    mat = surface.material[sel]
    face = surface.face[sel]
    local, half = surface.local[sel], surface.half[sel]
    t = surface.tex[sel, 1]
    paint = mats.color_a[mat]
    height = 2 * half[:, 2]
    bumper = (1.0 - band_coverage(t, 0.22, 1e3, footprint)) * _vertical(face)
    albedo = paint * (1 - 0.7 * bumper)[:, None]
    band_lo, band_hi = mats.params[mat, 0], mats.params[mat, 1]
    specular = mats.specular[mat].copy()
    has_band = band_hi > 0
    if has_band.any():
        s = surface.tex[sel, 0]
        band = band_coverage(t / np.maximum(height, 1e-3), band_lo, band_hi, footprint / np.maximum(height, 1e-3))
        pillars = pulse_coverage(s, 1.3, 0.15, footprint)
        glass = band * (1 - pillars) * _vertical(face) * has_band
        albedo = albedo * (1 - glass[:, None]) + mats.color_b[mat] * glass[:, None]
        specular = specular * (1 - glass) + 0.5 * glass
    lateral = np.abs(local[:, 1])
    lamp = ((face <= 1) & (lateral > half[:, 1] - 0.45) & (lateral < half[:, 1] - 0.08)
            & (np.abs(local[:, 2] - 0.2 * half[:, 2]) < np.minimum(0.12, 0.3 * half[:, 2])) & (half[:, 1] > 0.5))
    front = lamp & (face == 0)
    back = lamp & (face == 1)
    albedo[front] = (0.8, 0.8, 0.75)
    albedo[back] = (0.5, 0.02, 0.02)
    emission = np.zeros_like(albedo)
    if lighting.night:
        emission[front] = (4.0, 3.8, 3.2)
        emission[back] = (1.5, 0.05, 0.03)
    return albedo, emission, specular


def _sign(surface, sel, scene, footprint, lighting) -> np.ndarray:
    mats = scene.materials
    mat = surface.material[sel]
    face = surface.face[sel]
    local, half = surface.local[sel], surface.half[sel]
    border = mats.params[mat, 0]
    inner = (np.abs(local[:, 1]) < half[:, 1] - border) & (np.abs(local[:, 2]) < half[:, 2] - border)
    symbol = np.abs(local[:, 2]) < half[:, 2] * 0.18
    plate = np.where((inner & ~symbol)[:, None], mats.color_a[mat], mats.color_b[mat])
    metal = np.full_like(plate, 0.25)
    front = (face == 0) | (face == 1)
    return np.where(front[:, None], plate, metal)


def _traffic_light(surface, sel, scene, footprint, lighting) -> tuple[np.ndarray, np.ndarray]:
    mats = scene.materials
    mat = surface.material[sel]
    face = surface.face[sel]
    local, half = surface.local[sel], surface.half[sel]
    albedo = mats.color_a[mat].copy()
    emission = np.zeros_like(albedo)
    front = face <= 1
    radius = 0.32 * half[:, 1] * 2 * 0.5
    phase = np.mod(lighting.time + surface.tag[sel] % 7 * 3.1, 20.0)
    active = np.where(phase < 9.0, 2, np.where(phase < 11.0, 1, 0))  # 0 red (top), 1 yellow, 2 green
    colors = np.array([[1.0, 0.08, 0.05], [1.0, 0.6, 0.05], [0.1, 1.0, 0.4]], dtype=np.float32)
    for lamp in range(3):
        center_z = (0.6 - 0.6 * lamp) * half[:, 2]
        disc = front & ((local[:, 1] ** 2 + (local[:, 2] - center_z) ** 2) < radius**2)
        on = disc & (active == lamp)
        albedo[disc] = colors[lamp] * 0.08
        emission[on] = colors[lamp] * (6.0 if lighting.night else 3.0)
    return albedo, emission


# ----------------------------------------------------------------------------- night and shadows


def night_lights(surface: Surface, grid: RayGrid, window: WorldWindow, lighting: Lighting,
                 camera_forward: np.ndarray) -> np.ndarray:
    """Irradiance [K, 3] from street lamps near the camera and the ego's headlights.

    Lamps are cut-off luminaires: intensity falls with the square of the cosine from straight
    down, so they light the ground in pools and leave facades at their height dark. Headlights:
    a ~20 deg cone from 0.7 m above the ground, aimed along the ego's heading, 3 deg down.
    """
    point, normal = surface.point, surface.normal
    irradiance = np.zeros((len(point), 3), dtype=np.float32)
    lamps = window.lamps
    if len(lamps):
        distance = np.hypot(lamps[:, 0] - grid.origin[0], lamps[:, 1] - grid.origin[1])
        warm = np.array([1.0, 0.85, 0.6], dtype=np.float32)
        for lamp in lamps[np.argsort(distance)[:10]].astype(np.float32):
            to_lamp = lamp - point
            dist2 = np.einsum("ij,ij->i", to_lamp, to_lamp) + np.float32(1e-4)
            inverse = 1.0 / np.sqrt(dist2)
            cos = np.clip(np.einsum("ij,ij->i", to_lamp, normal) * inverse, 0.0, None)
            downward = np.clip(to_lamp[:, 2] * inverse, 0.0, None) ** 2
            irradiance += (lighting.lamp_intensity * cos * downward / (dist2 + 1.0))[:, None] * warm
    heading = np.array([camera_forward[0], camera_forward[1], 0.0], np.float32)
    heading /= max(float(np.linalg.norm(heading)), 1e-6)
    aim = heading * np.float32(np.cos(np.radians(3.0))) - np.array([0, 0, np.sin(np.radians(3.0))], np.float32)
    origin = np.array([grid.origin[0], grid.origin[1], 0.7], np.float32)
    to_point = point - origin
    dist = np.sqrt(np.einsum("ij,ij->i", to_point, to_point)).clip(1e-3)
    direction = to_point / dist[:, None]
    beam = np.clip((direction @ aim - 0.93) / 0.05, 0.0, 1.0)
    cos = np.clip(-np.einsum("ij,ij->i", direction, normal), 0.0, None)
    white = np.array([1.0, 0.97, 0.9], dtype=np.float32)
    irradiance += (lighting.headlight_intensity * beam * cos / (dist**2 + 1.0))[:, None] * white
    return irradiance


#: Top-down shadow maps: (cell size m, x range relative to the camera m, half width in y m); the
#: first map that contains a point is used. Cells are anchored to world coordinates, so static
#: shadows do not crawl as the camera moves.
SHADOW_MAPS = ((0.025, (-5.0, 25.0), 16.0), (0.1, (-10.0, 150.0), 60.0))


def ground_shadow(surface: Surface, grid: RayGrid, primitives: PrimitiveSet, sun_direction: np.ndarray) -> np.ndarray:
    """Shadow weight in [0, 1] per hit: 1 where a primitive blocks the sun for near-ground surfaces.

    Each primitive's AABB is projected along the sun onto the ground; the convex hulls are drawn
    (anti-aliased) into top-down shadow maps (``SHADOW_MAPS``), which are sampled bilinearly for
    horizontal surfaces below 0.3 m (ground, sidewalk tops).
    """
    weight = np.zeros(len(surface.rays), dtype=np.float32)
    pending = np.flatnonzero((surface.normal[:, 2] > 0.95) & (surface.point[:, 2] < 0.3))
    lo, hi = primitives.aabb()
    reach = max(ahead[1] for _, ahead, _ in SHADOW_MAPS) + 40.0
    near = (hi[:, 0] > grid.origin[0] - reach) & (lo[:, 0] < grid.origin[0] + reach)
    casters = np.flatnonzero((hi[:, 2] > 0.35) & near)
    if len(pending) == 0 or len(casters) == 0:
        return weight
    corners = np.stack([np.where(np.array(bits, bool), hi[casters], lo[casters])
                        for bits in np.ndindex(2, 2, 2)], axis=1).astype(np.float64)
    sun = sun_direction / sun_direction[2]
    ground = (corners[..., :2] - corners[..., 2:3] * sun[None, None, :2]).astype(np.float32)
    hulls = [cv2.convexHull(polygon)[:, 0, :].astype(np.float64) for polygon in ground]
    for resolution, (ahead_lo, ahead_hi), half_width in SHADOW_MAPS:
        x0 = math.floor((grid.origin[0] + ahead_lo) / resolution) * resolution
        y0 = -half_width
        cols = int(round((ahead_hi - ahead_lo) / resolution))
        rows = int(round(2 * half_width / resolution))
        shadow_map = np.zeros((rows, cols), dtype=np.uint8)
        origin = np.array([x0, y0])
        cells = [np.round(np.clip((hull - origin) / resolution, -3e5, 3e5) * 4).astype(np.int32) for hull in hulls]
        cv2.fillPoly(shadow_map, cells, 255, lineType=cv2.LINE_AA, shift=2)
        point = surface.point[pending]
        col = (point[:, 0] - x0) / resolution - 0.5
        row = (point[:, 1] - y0) / resolution - 0.5
        inside = (col >= 0) & (col < cols - 1) & (row >= 0) & (row < rows - 1)
        col, row = col[inside], row[inside]
        c0, r0 = col.astype(np.int64), row.astype(np.int64)
        fc, fr = (col - c0).astype(np.float32), (row - r0).astype(np.float32)
        flat = shadow_map.reshape(-1)
        base = r0 * cols + c0
        top = flat[base] * (1 - fc) + flat[base + 1] * fc
        bottom = flat[base + cols] * (1 - fc) + flat[base + cols + 1] * fc
        weight[pending[inside]] = (top * (1 - fr) + bottom * fr) / 255.0
        pending = pending[~inside]
        if len(pending) == 0:
            break
    return weight
