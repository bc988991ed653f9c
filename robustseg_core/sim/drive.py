"""A drive: one procedural scene, an ego vehicle moving along it, and its sensors rendered at any time.

Sensor rig (vehicle frame x forward, y left, z up, origin on the ground under the camera):
the camera at height ``style.camera_height`` with per-scene pitch and roll jitter; the LiDAR on the
roof, 0.2..0.45 m above and ~0.3 m behind the camera, axes aligned with the vehicle. The ego
drives along +x in one of the forward lanes at constant speed (0 in some scenes).

Everything in a frame is a function of (seed, config, time): noise generators are seeded with
(seed, stream, time in microseconds), so ``Drive(seed, config).frame_at(t)`` is reproducible and
frames can be rendered in any order. Events at time t come from the change between the camera
images at ``t - 1 / frame_rate`` and t (the previous image is cached when frames come in order).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from robustseg_core.classes import CLASS_ID, IGNORE_INDEX
from robustseg_core.sensors.camera import (
    R_BODY_OPTICAL,
    CameraIntrinsics,
    invert_transform,
    make_transform,
    rotation_rpy,
)
from robustseg_core.sensors.depth import depth_to_hha, encode_depth_png
from robustseg_core.sensors.events import events_to_frame
from robustseg_core.sensors.lidar import lidar_to_image
from robustseg_core.sim.actors import seed_index
from robustseg_core.sim.primitives import PrimitiveSet
from robustseg_core.sim.randomization import resolve, wide_rng, widen_condition
from robustseg_core.sim.raycast import KIND_BOX, KIND_CYLINDER, KIND_SPHEROID, PinholeRayGrid, SphericalRayGrid, cast
from robustseg_core.sim.render import shade, sky_color, surface_at
from robustseg_core.sim.scene import Scene, check_seed
from robustseg_core.sim.sensors_sim import (
    CONDITIONS,
    FAILURES,
    EventModel,
    LidarModel,
    apply_weather,
    expose,
    exposure_fault,
    lidar_points,
    luminance,
    make_condition,
    motion_blur,
    simulate_events,
)

SKY = CLASS_ID["Sky"]
VIEW_BEHIND_M = 110.0
VIEW_AHEAD_M = 360.0
_STREAM_WEATHER, _STREAM_CAMERA, _STREAM_LIDAR, _STREAM_EVENTS, _STREAM_BLUR = range(5)


@dataclass(frozen=True)
class DriveConfig:
    """Sensor and condition settings of a drive."""

    width: int = 256                  # camera image size, pixels
    height: int = 256
    hfov_deg: float = 90.0            # camera horizontal field of view, degrees (a widened randomization draws it)
    frame_rate: float = 10.0          # Hz; the events of a frame span the previous 1 / frame_rate s
    condition: str = "sun"            # one of CONDITIONS
    failure: str | None = None        # None or one of FAILURES
    randomization: str = "benchmark"  # "benchmark", or "wide" for pretraining data (sim/randomization.py)
    lidar: LidarModel = field(default_factory=LidarModel)
    events: EventModel = field(default_factory=EventModel)

    def __post_init__(self) -> None:
        if self.condition not in CONDITIONS:
            raise ValueError(f"unknown condition {self.condition!r}; expected one of {CONDITIONS}")
        if self.failure is not None and self.failure not in FAILURES:
            raise ValueError(f"unknown failure case {self.failure!r}; expected one of {FAILURES} or None")
        if resolve(self.randomization) is not None and self.hfov_deg != DriveConfig.hfov_deg:
            raise ValueError(f"hfov_deg {self.hfov_deg} with randomization {self.randomization!r}: that "
                             "randomisation draws each scene's field of view; leave hfov_deg at its default")
        if self.width < 8 or self.height < 8:
            raise ValueError(f"image size must be at least 8x8, got {self.width}x{self.height}")
        if self.frame_rate <= 0:
            raise ValueError(f"frame_rate must be positive, got {self.frame_rate}")


@dataclass
class Frame:
    """All sensor data of one instant. Units: metres, seconds; frames as documented per field."""

    index: int | None
    stamp: float                      # seconds since the drive started
    rgb: np.ndarray                   # uint8 [H, W, 3]
    depth: np.ndarray                 # float32 [H, W] planar depth, 0 = no surface (sky)
    labels: np.ndarray                # uint8 [H, W] DELIVER class ids 0..24
    moving: np.ndarray                # bool [H, W] pixels showing an actor that moves at this instant
    lidar_points: np.ndarray          # float32 [N, 4] x, y, z (LiDAR frame), intensity 0..1
    lidar_labels: np.ndarray          # uint8 [N] class id per point (255 = rain drop)
    events: np.ndarray                # EVENT_DTYPE, sorted by t
    event_size: tuple[int, int]       # event sensor (width, height)
    event_window: tuple[float, float]  # (t_start, t_end) of the events
    intrinsics: CameraIntrinsics
    R_world_cam: np.ndarray           # [3, 3] optical frame -> world
    T_world_cam: np.ndarray           # [4, 4]
    T_cam_lidar: np.ndarray           # [4, 4] LiDAR frame -> camera optical frame
    camera_height_m: float
    condition: str
    failure: str | None


def encode_frame(frame: Frame) -> dict[str, np.ndarray]:
    """The frame as the images a DELIVER-layout data set stores (all uint8 [H, W, 3] unless noted).

    Keys: ``rgb``; ``hha`` (network depth input); ``depth_png`` (CARLA 24-bit raw depth);
    ``lidar``; ``event`` (at the event sensor's size, half size for eventlowres);
    ``labels`` (uint8 [H, W] class ids).
    """
    return {
        "rgb": frame.rgb,
        "hha": depth_to_hha(frame.depth, frame.intrinsics, frame.R_world_cam, frame.camera_height_m),
        "depth_png": encode_depth_png(frame.depth),
        "lidar": lidar_to_image(frame.lidar_points, frame.intrinsics, frame.T_cam_lidar),
        "event": events_to_frame(frame.events, frame.event_size[0], frame.event_size[1], *frame.event_window),
        "labels": frame.labels,
    }


@dataclass
class _CameraRender:
    radiance: np.ndarray   # [H * W, 3] after weather
    depth: np.ndarray
    labels: np.ndarray
    moving: np.ndarray
    flow_inputs: tuple | None


class Drive:
    """One scene plus ego trajectory, actors and conditions; renders frames at any time."""

    def __init__(self, seed: int, config: DriveConfig | None = None) -> None:
        """``seed``: a whole number in [0, 2**32) (``ValueError`` naming it otherwise)."""
        self.seed = check_seed(seed, "drive seed")
        self.config = config or DriveConfig()
        self.scene = Scene(self.seed, self.config.randomization)
        style = self.scene.style
        self.condition = make_condition(self.config.condition, np.random.default_rng([self.seed, 2]),
                                        style.sun_elevation_deg, style.sun_azimuth_deg)
        hfov_deg = self.config.hfov_deg
        spread = resolve(self.config.randomization)
        if spread:
            wide = wide_rng(self.seed, 1)
            hfov_deg = float(wide.uniform(*spread.hfov_deg))
            self.condition = widen_condition(self.condition, spread, wide)
        rng = np.random.default_rng([self.seed, 1])  # rig and sensors: independent of the condition
        self.intrinsics = CameraIntrinsics.from_fov(self.config.width, self.config.height, hfov_deg)
        self.camera_height_m = style.camera_height
        R_vehicle_cam = rotation_rpy(math.radians(style.camera_roll_deg), math.radians(style.camera_pitch_deg),
                                     0.0) @ R_BODY_OPTICAL
        self.T_vehicle_cam = make_transform(R_vehicle_cam, (0.0, 0.0, style.camera_height))
        lidar_offset = (rng.uniform(-0.5, -0.1), rng.uniform(-0.1, 0.1), style.camera_height + rng.uniform(0.2, 0.45))
        self.T_vehicle_lidar = make_transform(np.eye(3), lidar_offset)
        self.T_cam_lidar = invert_transform(self.T_vehicle_cam) @ self.T_vehicle_lidar
        self.ego_y = style.road.forward_lane_center(style.ego_lane)
        self.ego_speed = style.ego_speed
        self.blur_exposure_s = float(rng.uniform(0.08, 0.2))
        self.shake_rate = rng.normal(0.0, 0.3, 2)
        exposure_scale, noise_gain = exposure_fault(self.config.failure, np.random.default_rng([self.seed, 3]))
        self.camera_exposure = self.condition.exposure * exposure_scale
        self.camera_gain = self.condition.analog_gain * noise_gain
        self.event_size = ((self.config.width // 2, self.config.height // 2) if self.config.failure == "eventlowres"
                           else (self.config.width, self.config.height))
        event_model = self.config.events
        self.event_thresholds = np.clip(
            rng.normal(event_model.threshold, event_model.threshold_spread, (self.event_size[1], self.event_size[0])),
            0.05, None).astype(np.float32)
        self.camera_grid = PinholeRayGrid(self.intrinsics, R_vehicle_cam, np.zeros(3))
        lidar = self.config.lidar
        self.lidar_grid = SphericalRayGrid(lidar.elevations(), lidar.azimuth_steps, np.eye(3), np.zeros(3),
                                           max_distance=lidar.max_range_m + 1.0)
        self._radiance_cache: dict[int, np.ndarray] = {}
        self.timings: dict[str, float] = {}
        self._sky = sky_color(self.camera_grid.directions(), self.condition.lighting, self.scene)

    # ------------------------------------------------------------------ poses

    def T_world_vehicle(self, t: float) -> np.ndarray:
        """Ego vehicle pose at time ``t`` (4x4; origin on the ground under the camera, x forward)."""
        return make_transform(np.eye(3), (self.ego_speed * t, self.ego_y, 0.0))

    def T_world_cam(self, t: float) -> np.ndarray:
        """Camera optical frame pose at time ``t`` (4x4)."""
        return self.T_world_vehicle(t) @ self.T_vehicle_cam

    @property
    def R_world_cam(self) -> np.ndarray:
        """Camera orientation (optical frame -> world), constant along the straight drive."""
        return self.T_vehicle_cam[:3, :3].copy()

    def stamp(self, index: int) -> float:
        """Time in seconds of frame ``index``."""
        return index / self.config.frame_rate

    # ------------------------------------------------------------------ frames

    def frame(self, index: int) -> Frame:
        """Frame number ``index`` (time ``index / frame_rate``)."""
        return self.frame_at(self.stamp(index), index)

    def frames(self, count: int, start: int = 0) -> Iterator[Frame]:
        """Frames ``start .. start + count - 1`` in order."""
        for index in range(start, start + count):
            yield self.frame(index)

    def frame_at(self, t: float, index: int | None = None) -> Frame:
        """All sensors at time ``t`` seconds. Stage durations (s) are left in ``self.timings``."""
        config = self.config
        dt = 1.0 / config.frame_rate
        clock = time.perf_counter()
        timings = {}

        def lap(stage: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[stage] = timings.get(stage, 0.0) + now - clock
            clock = now

        world = self._world(t)
        lap("world")
        current = self._render_camera(t, world, with_details=True)
        lap("camera")
        previous = self._radiance_cache.get(_time_key(t - dt))
        if previous is None:
            previous = self._render_camera(t - dt, self._world(t - dt), with_details=False).radiance
            lap("camera_previous")
        self._radiance_cache = {_time_key(t): current.radiance}
        events = self._events(previous, current.radiance, t - dt, t)
        lap("events")
        radiance = current.radiance.reshape(config.height, config.width, 3)
        if config.failure == "motionblur":
            radiance = motion_blur(radiance, self._flow(t, *current.flow_inputs))
        rgb = expose(radiance, self.camera_exposure, self.camera_gain, self._rng(_STREAM_CAMERA, t))
        lap("exposure")
        points, point_labels = self._lidar(t, world)
        lap("lidar")
        self.timings = timings
        return Frame(
            index=index, stamp=float(t), rgb=rgb, depth=current.depth, labels=current.labels, moving=current.moving,
            lidar_points=points, lidar_labels=point_labels, events=events, event_size=self.event_size,
            event_window=(float(t - dt), float(t)), intrinsics=self.intrinsics, R_world_cam=self.R_world_cam,
            T_world_cam=self.T_world_cam(t), T_cam_lidar=self.T_cam_lidar.copy(),
            camera_height_m=self.camera_height_m, condition=config.condition, failure=config.failure,
        )

    # ------------------------------------------------------------------ internals

    def _rng(self, stream: int, t: float) -> np.random.Generator:
        return np.random.default_rng([self.seed, 100 + stream, seed_index(_time_key(t))])

    def _world(self, t: float):
        """(window, primitives posed at t, per-kind velocities) around the ego at time t."""
        x = self.ego_speed * t
        x_lo, x_hi = x - VIEW_BEHIND_M, x + VIEW_AHEAD_M
        window = self.scene.window(x_lo, x_hi)
        movers = type(window.movers).concat([window.movers, self.scene.lane_movers(t, x_lo, x_hi)])
        posed = movers.pose(t)
        primitives = PrimitiveSet.concat([window.static, posed])
        static = window.static
        velocities = tuple(
            np.concatenate((np.zeros((count, 2), np.float32), moving))
            for count, moving in zip((len(static.boxes.material), len(static.cylinders.material),
                                      len(static.spheroids.material)), movers.velocities(t)))
        return window, primitives, velocities

    def _render_camera(self, t: float, world, with_details: bool) -> _CameraRender:
        window, primitives, velocities = world
        config = self.config
        grid = self.camera_grid
        grid.origin = self.T_world_cam(t)[:3, 3]
        hits = cast(grid, primitives)
        pixel_angle = 1.0 / self.intrinsics.fx
        surface = surface_at(grid, hits, primitives, self.scene, window, pixel_angle)
        lighting = replace(self.condition.lighting, time=float(t))
        forward = self.R_world_cam[:, 2]
        radiance, hit = shade(surface, grid, self.scene, window, primitives, lighting, pixel_angle, forward,
                              self._sky)
        radiance = apply_weather(radiance, hits.t, hit, self.condition, self._rng(_STREAM_WEATHER, t),
                                 (config.height, config.width))
        if not with_details:
            return _CameraRender(radiance.astype(np.float32), None, None, None, None)
        depth = np.zeros(grid.size, dtype=np.float32)
        depth[surface.rays] = surface.t * grid.forward_cos[surface.rays]
        labels = np.full(grid.size, SKY, dtype=np.uint8)
        labels[surface.rays] = surface.label
        moving = np.zeros(grid.size, dtype=bool)
        hit_velocity = _hit_velocities(surface, hits, velocities)
        moving[surface.rays] = np.hypot(hit_velocity[:, 0], hit_velocity[:, 1]) > 0.05
        flow_inputs = (surface, hits, velocities) if config.failure == "motionblur" else None
        shape = (config.height, config.width)
        return _CameraRender(radiance.astype(np.float32), depth.reshape(shape), labels.reshape(shape),
                             moving.reshape(shape), flow_inputs)

    def _flow(self, t: float, surface, hits, velocities) -> np.ndarray:
        """Image motion [H, W, 2] (pixels) over the blur exposure, pointing back to where each point came from."""
        config, k = self.config, self.intrinsics
        exposure = self.blur_exposure_s
        ego_velocity = np.array([self.ego_speed, 0.0, 0.0], np.float32)
        relative = _hit_velocities(surface, hits, velocities) - ego_velocity
        origin = self.T_world_cam(t)[:3, 3]
        shake = rotation_rpy(self.shake_rate[0] * exposure, self.shake_rate[1] * exposure, 0.0)
        earlier = (surface.point - relative * exposure - origin) @ (self.R_world_cam @ shake)
        now = (surface.point - origin) @ self.R_world_cam
        z_then = np.clip(earlier[:, 2], 0.05, None)
        z_now = np.clip(now[:, 2], 0.05, None)
        flow = np.zeros((config.height * config.width, 2), np.float32)
        flow[surface.rays, 0] = k.fx * (earlier[:, 0] / z_then - now[:, 0] / z_now)
        flow[surface.rays, 1] = k.fy * (earlier[:, 1] / z_then - now[:, 1] / z_now)
        return flow.reshape(config.height, config.width, 2)

    def _events(self, radiance_prev: np.ndarray, radiance_now: np.ndarray, t_prev: float, t_now: float) -> np.ndarray:
        shape = (self.config.height, self.config.width)
        lum_prev = luminance(radiance_prev).reshape(shape)
        lum_now = luminance(radiance_now).reshape(shape)
        if self.event_size != (self.config.width, self.config.height):
            lum_prev = cv2.resize(lum_prev, self.event_size, interpolation=cv2.INTER_AREA)
            lum_now = cv2.resize(lum_now, self.event_size, interpolation=cv2.INTER_AREA)
        return simulate_events(lum_prev, lum_now, t_prev, t_now, self.event_thresholds, self.config.events,
                               self.condition, self._rng(_STREAM_EVENTS, t_now))

    def _lidar(self, t: float, world) -> tuple[np.ndarray, np.ndarray]:
        window, primitives, _ = world
        grid = self.lidar_grid
        grid.origin = (self.T_world_vehicle(t) @ self.T_vehicle_lidar)[:3, 3]
        hits = cast(grid, primitives)
        surface = surface_at(grid, hits, primitives, self.scene, window)
        directions = np.stack((grid.dx[surface.rays], grid.dy[surface.rays], grid.dz[surface.rays]), axis=1)
        normal_dot = np.einsum("ij,ij->i", surface.normal, directions)
        reflectivity = self.scene.materials.reflectivity[surface.material]
        rng = self._rng(_STREAM_LIDAR, t)
        points, keep = lidar_points(grid.local_directions.astype(np.float32), surface.rays, surface.t, normal_dot,
                                    reflectivity, self.config.lidar, self.condition, self.config.failure, rng)
        labels = surface.label[keep]
        if len(points) > len(labels):
            labels = np.concatenate((labels, np.full(len(points) - len(labels), IGNORE_INDEX, np.uint8)))
        return points, labels


def _hit_velocities(surface, hits, velocities) -> np.ndarray:
    """World velocity [K, 3] (m/s) of the primitive seen by each hit ray (0 for the ground)."""
    result = np.zeros((len(surface.rays), 3), np.float32)
    kinds = hits.kind[surface.rays]
    indices = hits.index[surface.rays]
    for kind_code, velocity in zip((KIND_BOX, KIND_CYLINDER, KIND_SPHEROID), velocities):
        sel = np.flatnonzero(kinds == kind_code)
        result[sel, :2] = velocity[indices[sel]]
    return result


def _time_key(t: float) -> int:
    """Time in whole microseconds (cache and seed key)."""
    return int(round(t * 1e6))
