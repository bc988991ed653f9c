"""Sensor models on top of the renderer: weather and lighting conditions, the RGB camera (exposure,
noise, the motion-blur / over- / under-exposure failures), the spinning LiDAR (with the
lidar-jitter failure) and the event camera (log-intensity change between consecutive frames, with
the event-low-resolution failure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from robustseg_core.classes import CONDITIONS, FAILURE_CASES
from robustseg_core.sensors.camera import rotation_rpy
from robustseg_core.sensors.events import EVENT_DTYPE
from robustseg_core.sim.render import Lighting

FAILURES = FAILURE_CASES  # the simulator's name for DELIVER's failure cases


@dataclass(frozen=True)
class Condition:
    """Weather and light of a drive, drawn once from its seed (see ``make_condition``)."""

    name: str
    lighting: Lighting
    exposure: float                 # radiance -> [0, 1] sensor signal
    analog_gain: float              # multiplies the camera's noise
    fog_visibility_m: float         # inf = no fog
    fog_color: np.ndarray
    rain: float                     # streak density, 0 = dry
    event_noise: float              # std of log-intensity noise per pixel and frame
    event_background_rate: float    # noise events per pixel per second
    lidar_rain_dropout: float       # share of LiDAR returns lost to rain


def make_condition(name: str, rng: np.random.Generator, sun_elevation_deg: float, sun_azimuth_deg: float) -> Condition:
    """Lighting, fog, rain and sensor-noise settings of condition ``name`` (one of ``CONDITIONS``).

    sun: strong sun with ground shadows, clear sky; cloud: diffuse light, overcast sky; fog: cloud
    light plus fog with 25..90 m visibility; rain: darker, wet (mirror-like) ground, streaks, light
    haze, more event noise, some LiDAR returns lost and rain-drop returns; night: moonlight-level
    ambient, street lamps, headlights, lit windows, high camera gain (noise) and event noise.
    """
    if name not in CONDITIONS:
        raise ValueError(f"unknown condition {name!r}; expected one of {CONDITIONS}")
    elevation = math.radians(sun_elevation_deg)
    azimuth = math.radians(sun_azimuth_deg)
    sun_direction = np.array([math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth),
                              math.sin(elevation)], dtype=np.float32)
    jitter = float(rng.uniform(0.85, 1.15))
    clear_horizon = np.array([0.75, 0.85, 1.0], np.float32)
    clear_zenith = np.array([0.22, 0.42, 0.95], np.float32)
    overcast = np.array([0.78, 0.8, 0.84], np.float32) * float(rng.uniform(0.8, 1.1))
    fog_color = np.array([0.72, 0.74, 0.77], np.float32) * float(rng.uniform(0.8, 1.05))
    common = dict(fog_visibility_m=math.inf, fog_color=fog_color, rain=0.0, event_noise=0.02,
                  event_background_rate=0.05, lidar_rain_dropout=0.0, analog_gain=1.0)
    if name == "sun":
        lighting = Lighting(sun_direction, np.array([1.0, 0.95, 0.85], np.float32) * 3.2 * jitter,
                            np.array([0.36, 0.46, 0.66], np.float32) * 0.55, clear_horizon * 1.2, clear_zenith * 0.9,
                            float(rng.uniform(0.0, 0.3)), False, False, True, 0.0, 0.0, 0.0)
        return Condition(name, lighting, exposure=0.3 / jitter, **common)
    if name in ("cloud", "fog", "rain"):
        dim = 0.55 if name == "rain" else 1.0
        lighting = Lighting(sun_direction, np.array([1.0, 0.97, 0.92], np.float32) * 0.35 * dim * jitter,
                            np.array([0.62, 0.64, 0.68], np.float32) * 1.1 * dim * jitter, overcast * dim,
                            overcast * 0.85 * dim, float(rng.uniform(0.6, 1.0)), False, name == "rain", False,
                            0.0, 0.0, 0.0)
        exposure = 0.62 / ((0.8 if name == "rain" else 1.0) * jitter)  # rain stays darker
        if name == "fog":
            common.update(fog_visibility_m=float(rng.uniform(25.0, 90.0)))
        if name == "rain":
            common.update(rain=float(rng.uniform(0.5, 1.0)), event_noise=0.04, event_background_rate=0.4,
                          lidar_rain_dropout=float(rng.uniform(0.02, 0.08)),
                          fog_visibility_m=float(rng.uniform(150, 400)))
        return Condition(name, lighting, exposure=exposure, **common)
    night_sky = np.array([0.003, 0.004, 0.009], np.float32)
    lighting = Lighting(sun_direction, np.zeros(3, np.float32), np.array([0.006, 0.007, 0.012], np.float32) * jitter,
                        night_sky * 2.0, night_sky, 0.0, True, False, False, float(rng.uniform(8.0, 20.0)),
                        float(rng.uniform(6.0, 14.0)), 0.0)
    common.update(analog_gain=8.0, event_noise=0.07, event_background_rate=0.5)
    return Condition(name, lighting, exposure=float(rng.uniform(2.5, 4.0)), **common)


def apply_weather(radiance: np.ndarray, distance: np.ndarray, hit: np.ndarray, condition: Condition,
                  rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Fog (attenuation towards the fog colour with distance) and rain streaks on radiance [N, 3]."""
    if math.isfinite(condition.fog_visibility_m):
        extinction = 3.0 / condition.fog_visibility_m
        transmittance = np.where(hit, np.exp(-extinction * np.where(hit, distance, 0.0)), 0.0).astype(np.float32)
        fog = condition.fog_color * (condition.lighting.ambient.mean() / 0.7 if condition.name != "night" else 0.05)
        radiance = radiance * transmittance[:, None] + fog[None, :] * (1 - transmittance)[:, None]
    if condition.rain > 0:
        height, width = shape
        seeds = np.zeros((height, width), np.float32)
        count = int(condition.rain * height * width / 180)
        seeds[rng.integers(0, height, count), rng.integers(0, width, count)] = rng.uniform(0.5, 1.0, count)
        length = max(5, height // 18)
        kernel = np.zeros((length, length), np.float32)
        slant = rng.uniform(-0.25, 0.25)
        for i in range(length):
            kernel[i, int(round((length - 1) / 2 + slant * (i - length / 2)))] = 1.0 / length
        streaks = cv2.filter2D(seeds, -1, kernel, borderType=cv2.BORDER_CONSTANT).reshape(-1)
        level = condition.lighting.sky_horizon.mean() * 0.8
        radiance = radiance * (1 - 0.5 * streaks[:, None]) + (streaks * level)[:, None]
    return radiance


# ----------------------------------------------------------------------------- RGB camera


def motion_blur(radiance: np.ndarray, flow: np.ndarray, samples: int = 9) -> np.ndarray:
    """Average of radiance [H, W, 3] sampled along per-pixel image motion ``flow`` [H, W, 2] (pixels)."""
    height, width = radiance.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    accumulated = np.zeros_like(radiance)
    for k in range(samples):
        fraction = k / (samples - 1)
        map_x = grid_x + flow[..., 0] * fraction
        map_y = grid_y + flow[..., 1] * fraction
        accumulated += cv2.remap(radiance, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return accumulated / samples


def exposure_fault(failure: str | None, rng: np.random.Generator) -> tuple[float, float]:
    """(exposure multiplier, extra noise gain) of a drive: 4..8x for overexposure, 0.06..0.15x (and
    twice the noise gain) for underexposure, (1, 1) otherwise."""
    if failure == "overexposure":
        return float(rng.uniform(4.0, 8.0)), 1.0
    if failure == "underexposure":
        return float(rng.uniform(0.06, 0.15)), 2.0
    return 1.0, 1.0


def expose(radiance: np.ndarray, exposure: float, analog_gain: float, rng: np.random.Generator) -> np.ndarray:
    """Linear radiance [H, W, 3] -> 8-bit sRGB-like image: exposure, shot and read noise scaled by
    ``analog_gain``, clipping, gamma 1/2.2."""
    signal = np.clip(radiance * np.float32(exposure), 0.0, None)
    noise_std = np.sqrt(0.0004 * analog_gain * np.minimum(signal, 1.0) + (0.0015 * analog_gain) ** 2)
    signal = signal + rng.standard_normal(signal.shape, dtype=np.float32) * noise_std
    encoded = np.clip(signal, 0.0, 1.0) ** (1 / 2.2)
    return np.rint(encoded * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------- LiDAR


@dataclass(frozen=True)
class LidarModel:
    """A 32-beam spinning LiDAR: HDL-32E-like vertical field of view (+10.67..-30.67 deg, 1.33 deg
    between beams), 0.5 deg azimuth steps over 360 deg, 100 m range, 2 cm range noise, 1 % dropout.
    Intensity = reflectivity of the material x (0.25 + 0.75 |cos incidence|) + noise; surfaces of
    zero reflectivity (water) return nothing. One instantaneous scan per frame (no rolling sweep)."""

    beams: int = 32
    elevation_top_deg: float = 10.67
    elevation_bottom_deg: float = -30.67
    azimuth_steps: int = 720
    max_range_m: float = 100.0
    range_noise_m: float = 0.02
    dropout: float = 0.01

    def elevations(self) -> np.ndarray:
        """Beam elevations in radians, top to bottom."""
        return np.radians(np.linspace(self.elevation_top_deg, self.elevation_bottom_deg, self.beams))


def lidar_points(local_directions: np.ndarray, rays: np.ndarray, distance: np.ndarray, normal_dot: np.ndarray,
                 reflectivity: np.ndarray, model: LidarModel, condition: Condition, failure: str | None,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Returns of the hit rays as points [N, 4] (x, y, z, intensity) in the sensor frame, and a keep mask [K]."""
    count = len(rays)
    ranges = distance + rng.normal(0.0, model.range_noise_m, count).astype(np.float32)
    intensity = reflectivity * (0.25 + 0.75 * np.abs(normal_dot)) + rng.normal(0.0, 0.02, count)
    keep = (reflectivity > 0.02) & (ranges > 0.3) & (ranges <= model.max_range_m)
    keep &= rng.random(count) >= model.dropout + condition.lidar_rain_dropout
    xyz = local_directions[rays] * ranges[:, None]
    points = np.concatenate((xyz, np.clip(intensity, 0.0, 1.0)[:, None]), axis=1)[keep].astype(np.float32)
    if condition.rain > 0:
        drops = int(rng.poisson(150 * condition.rain))
        direction = rng.normal(size=(drops, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        direction[:, 2] = -np.abs(direction[:, 2]) * 0.3
        drop_points = direction * rng.uniform(0.8, 8.0, (drops, 1))
        drop_intensity = rng.uniform(0.0, 0.1, (drops, 1))
        points = np.concatenate((points, np.concatenate((drop_points, drop_intensity), axis=1).astype(np.float32)))
    if failure == "lidarjitter":
        points = jitter_points(points, rng)
    return points, keep


def jitter_points(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """LiDAR-jitter failure: a random rigid pose error (~1 deg, ~8 cm) plus per-point noise (5..25 cm)."""
    angles = rng.normal(0.0, math.radians(1.0), 3)
    rotation = rotation_rpy(*angles).astype(np.float32)
    offset = rng.normal(0.0, 0.08, 3).astype(np.float32)
    sigma = rng.uniform(0.05, 0.25)
    jittered = points.copy()
    jittered[:, :3] = points[:, :3] @ rotation.T + offset + rng.normal(0.0, sigma, (len(points), 3)).astype(np.float32)
    return jittered


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class EventModel:
    """DVS-like event camera sharing the RGB camera's optics."""

    threshold: float = 0.3             # log-intensity contrast per event
    threshold_spread: float = 0.04     # std of the per-pixel threshold
    max_events_per_pixel: int = 24
    log_epsilon: float = 0.01


def luminance(radiance: np.ndarray) -> np.ndarray:
    return radiance @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def simulate_events(luminance_prev: np.ndarray, luminance_now: np.ndarray, t_prev: float, t_now: float,
                    thresholds: np.ndarray, model: EventModel, condition: Condition,
                    rng: np.random.Generator) -> np.ndarray:
    """Events (EVENT_DTYPE, sorted by time) from two luminance images [H, W] of one sensor.

    Each pixel fires ``floor(|dlog I| / C)`` events of the sign of the change, at the times the
    log intensity crosses each threshold level under linear interpolation over (t_prev, t_now];
    plus per-pixel log-intensity noise and uniformly random background events.
    """
    height, width = luminance_now.shape
    log_prev = np.log(luminance_prev * condition.exposure + model.log_epsilon)
    log_now = np.log(luminance_now * condition.exposure + model.log_epsilon)
    change = (log_now - log_prev).reshape(-1)
    change = change + rng.normal(0.0, condition.event_noise, change.shape).astype(np.float32)
    magnitude = np.abs(change)
    counts = np.minimum(np.floor(magnitude / thresholds.reshape(-1)), model.max_events_per_pixel).astype(np.int64)
    pixels = np.flatnonzero(counts)
    per_pixel = counts[pixels]
    total = int(per_pixel.sum())
    dt = t_now - t_prev
    pixel_of_event = np.repeat(pixels, per_pixel)
    order = np.arange(total) - np.repeat(np.cumsum(per_pixel) - per_pixel, per_pixel)
    crossing = (order + 1) * thresholds.reshape(-1)[pixel_of_event] / magnitude[pixel_of_event]
    times = t_prev + dt * np.clip(crossing + rng.normal(0.0, 0.02, total), 1e-6, 1.0)
    polarity = np.where(change[pixel_of_event] > 0, 1, -1).astype(np.int8)

    noise_count = int(rng.poisson(condition.event_background_rate * height * width * dt))
    noise_pixels = rng.integers(0, height * width, noise_count)
    noise_times = t_prev + dt * rng.uniform(1e-6, 1.0, noise_count)
    noise_polarity = rng.choice(np.array([-1, 1], dtype=np.int8), noise_count)

    all_pixels = np.concatenate((pixel_of_event, noise_pixels))
    events = np.empty(len(all_pixels), dtype=EVENT_DTYPE)
    events["x"] = all_pixels % width
    events["y"] = all_pixels // width
    events["t"] = np.concatenate((times, noise_times))
    events["polarity"] = np.concatenate((polarity, noise_polarity))
    return events[np.argsort(events["t"])]
