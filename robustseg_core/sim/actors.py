"""Road users and their motion: part templates (cars, trucks, buses, two-wheelers, pedestrians),
moving primitive sets posed at any time, and traffic lanes that produce an endless, seeded stream
of actors.

Motion of a moving primitive (all parts of one actor share it), along a unit direction in the
ground plane: linear ``D(t) = speed * t``, or back and forth over ``span`` metres (pedestrians on a
crosswalk) ``D(t) = tri(speed * t + phase) - tri(phase)``; plus a limb swing
``swing_amp * sin(2 pi swing_freq t + swing_phase)`` along the same direction. Time 0 is the
pose the actor was generated in, so the scene at time t depends on (seed, t) only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from robustseg_core.classes import CLASS_ID
from robustseg_core.sim.primitives import PrimitiveBuilder, PrimitiveSet

CARS, TRUCK, BUS, TWO_WHEELER, PEDESTRIAN = (CLASS_ID[n] for n in ("Cars", "Truck", "Bus", "TwoWheeler", "Pedestrian"))
MOTION_FIELDS = 8  # dir_x, dir_y, speed, span, phase, swing_amp, swing_freq, swing_phase


class MotionBuilder(PrimitiveBuilder):
    """A primitive builder that tags every part with the current ``motion`` tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.motion: tuple[float, ...] = (0.0,) * MOTION_FIELDS
        self._motion = {"box": [], "cylinder": [], "spheroid": []}

    def box(self, *args, **kwargs) -> None:
        super().box(*args, **kwargs)
        self._motion["box"].append(self.motion)

    def cylinder(self, *args, **kwargs) -> None:
        super().cylinder(*args, **kwargs)
        self._motion["cylinder"].append(self.motion)

    def spheroid(self, *args, **kwargs) -> None:
        super().spheroid(*args, **kwargs)
        self._motion["spheroid"].append(self.motion)

    def build_moving(self) -> MovingPrimitives:
        def pack(rows):
            return np.array(rows, dtype=np.float32).reshape(-1, MOTION_FIELDS)
        return MovingPrimitives(self.build(), pack(self._motion["box"]), pack(self._motion["cylinder"]),
                                pack(self._motion["spheroid"]))


@dataclass
class MovingPrimitives:
    """Primitives at their time-0 pose plus one motion row per primitive of each kind."""

    reference: PrimitiveSet
    box_motion: np.ndarray
    cylinder_motion: np.ndarray
    spheroid_motion: np.ndarray

    @staticmethod
    def empty() -> MovingPrimitives:
        zero = np.zeros((0, MOTION_FIELDS), dtype=np.float32)
        return MovingPrimitives(PrimitiveSet.empty(), zero, zero.copy(), zero.copy())

    @staticmethod
    def concat(items: list[MovingPrimitives]) -> MovingPrimitives:
        items = [m for m in items if len(m.reference)]
        if not items:
            return MovingPrimitives.empty()
        return MovingPrimitives(PrimitiveSet.concat([m.reference for m in items]),
                                np.concatenate([m.box_motion for m in items]),
                                np.concatenate([m.cylinder_motion for m in items]),
                                np.concatenate([m.spheroid_motion for m in items]))

    def shifted(self, dx: float) -> MovingPrimitives:
        """The same set translated by ``dx`` along world x."""
        ref = self.reference
        boxes = _replace(ref.boxes, center=ref.boxes.center + np.array([dx, 0, 0], np.float32))
        cylinders = _replace(ref.cylinders, center=ref.cylinders.center + np.array([dx, 0], np.float32))
        spheroids = _replace(ref.spheroids, center=ref.spheroids.center + np.array([dx, 0, 0], np.float32))
        return MovingPrimitives(PrimitiveSet(boxes, cylinders, spheroids), self.box_motion,
                                self.cylinder_motion, self.spheroid_motion)

    def pose(self, t: float) -> PrimitiveSet:
        """Primitives at time ``t`` (seconds)."""
        ref = self.reference
        boxes = _replace(ref.boxes, center=ref.boxes.center + _displacement(self.box_motion, t, 3))
        cylinders = _replace(ref.cylinders, center=ref.cylinders.center + _displacement(self.cylinder_motion, t, 2))
        spheroids = _replace(ref.spheroids, center=ref.spheroids.center + _displacement(self.spheroid_motion, t, 3))
        return PrimitiveSet(boxes, cylinders, spheroids)


    def velocities(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World xy velocity [N, 2] (m/s) of every box, cylinder and spheroid at time ``t``."""
        step = 1e-3
        return tuple((_displacement(motion, t + step, 2) - _displacement(motion, t - step, 2)) / (2 * step)
                     for motion in (self.box_motion, self.cylinder_motion, self.spheroid_motion))


def _replace(group, **changes):
    return type(group)(**{**group.__dict__, **changes})


def _triangle(u: np.ndarray, span: np.ndarray) -> np.ndarray:
    safe = np.where(span > 0, span, 1.0)
    return safe - np.abs(np.mod(u, 2 * safe) - safe)


def _displacement(motion: np.ndarray, t: float, dims: int) -> np.ndarray:
    if len(motion) == 0:
        return np.zeros((0, dims), dtype=np.float32)
    t = np.float64(t)
    dir_x, dir_y, speed, span, phase, amp, freq, swing_phase = (motion[:, i].astype(np.float64) for i in range(8))
    travel = np.where(span > 0, _triangle(speed * t + phase, span) - _triangle(phase, span), speed * t)
    travel = travel + amp * np.sin(2 * np.pi * freq * t + swing_phase)
    out = np.zeros((len(motion), dims))
    out[:, 0] = dir_x * travel
    out[:, 1] = dir_y * travel
    return out.astype(np.float32)


# ----------------------------------------------------------------------------- templates


def _offset(x: float, y: float, yaw: float, dx: float, dy: float) -> tuple[float, float]:
    c, s = math.cos(yaw), math.sin(yaw)
    return x + c * dx - s * dy, y + s * dx + c * dy


def add_car(b: PrimitiveBuilder, x: float, y: float, yaw: float, rng: np.random.Generator, mats: dict) -> float:
    """A car (body, cabin, four wheels) centred at (x, y) heading ``yaw``; returns its length."""
    length, width = rng.uniform(3.7, 5.0), rng.uniform(1.65, 1.95)
    height = rng.uniform(1.35, 1.85)
    clearance = 0.28
    body_top = clearance + (height - clearance) * rng.uniform(0.45, 0.6)
    paint = int(rng.choice(mats["paint"]))
    b.box_on_ground(x, y, clearance, (length, width, body_top - clearance), paint, CARS, yaw)
    cabin_len = length * rng.uniform(0.45, 0.6)
    cx, cy = _offset(x, y, yaw, -length * rng.uniform(0.02, 0.1), 0.0)
    b.box_on_ground(cx, cy, body_top, (cabin_len, width * 0.9, height - body_top), mats["cabin"][paint], CARS, yaw)
    for fx in (-0.32, 0.32):
        for fy in (-1, 1):
            wx, wy = _offset(x, y, yaw, fx * length, fy * (width / 2 - 0.12))
            b.box_on_ground(wx, wy, 0.0, (0.62, 0.22, 0.62), mats["tyre"], CARS, yaw)
    return length


def add_truck(b: PrimitiveBuilder, x: float, y: float, yaw: float, rng: np.random.Generator, mats: dict) -> float:
    """Cab plus cargo box (label Truck); returns its length."""
    length, width = rng.uniform(6.5, 10.0), rng.uniform(2.3, 2.5)
    cab_len = 2.2
    paint = int(rng.choice(mats["paint"]))
    cargo = int(rng.choice(mats["cargo"]))
    fx, fy = _offset(x, y, yaw, length / 2 - cab_len / 2, 0.0)
    b.box_on_ground(fx, fy, 0.45, (cab_len, width, rng.uniform(2.4, 2.9)), mats["cab"][paint], TRUCK, yaw)
    cargo_len = length - cab_len - 0.3
    gx, gy = _offset(x, y, yaw, -length / 2 + cargo_len / 2, 0.0)
    b.box_on_ground(gx, gy, 0.9, (cargo_len, width, rng.uniform(2.5, 3.1)), cargo, TRUCK, yaw)
    for fxr in (-0.4, -0.25, 0.38):
        for side in (-1, 1):
            wx, wy = _offset(x, y, yaw, fxr * length, side * (width / 2 - 0.2))
            b.box_on_ground(wx, wy, 0.0, (0.95, 0.35, 0.95), mats["tyre"], TRUCK, yaw)
    return length


def add_bus(b: PrimitiveBuilder, x: float, y: float, yaw: float, rng: np.random.Generator, mats: dict) -> float:
    """Bus body with a window band (label Bus); returns its length."""
    length, width, height = rng.uniform(9.5, 12.5), 2.5, rng.uniform(2.9, 3.3)
    b.box_on_ground(x, y, 0.35, (length, width, height - 0.35), int(rng.choice(mats["bus"])), BUS, yaw)
    for fxr in (-0.3, 0.33):
        for side in (-1, 1):
            wx, wy = _offset(x, y, yaw, fxr * length, side * (width / 2 - 0.2))
            b.box_on_ground(wx, wy, 0.0, (1.0, 0.3, 1.0), mats["tyre"], BUS, yaw)
    return length


def add_two_wheeler(b: PrimitiveBuilder, x: float, y: float, yaw: float, rng: np.random.Generator, mats: dict,
                    rider: bool = True, base_z: float = 0.0) -> float:
    """Bicycle or motorbike standing on ``base_z`` (with its rider unless parked), all labelled
    TwoWheeler; returns its length."""
    motorbike = rng.random() < 0.5
    length = 2.0 if motorbike else 1.75
    frame = int(rng.choice(mats["paint"]))
    for fx in (-0.55, 0.55):
        wx, wy = _offset(x, y, yaw, fx * length / 1.75, 0.0)
        b.box_on_ground(wx, wy, base_z, (0.65, 0.08 if not motorbike else 0.14, 0.65), mats["tyre"], TWO_WHEELER,
                        yaw)
    b.box_on_ground(x, y, base_z + 0.4, (length * 0.6, 0.12 if not motorbike else 0.35, 0.4 if not motorbike else 0.5),
                    frame, TWO_WHEELER, yaw)
    if not rider:
        return length
    cloth = int(rng.choice(mats["cloth"]))
    rx, ry = _offset(x, y, yaw, -0.15, 0.0)
    b.box_on_ground(rx, ry, base_z + 0.55, (0.35, 0.32, 0.45), int(rng.choice(mats["cloth"])), TWO_WHEELER, yaw)
    b.box_on_ground(rx, ry, base_z + 1.0, (0.28, 0.4, 0.55), cloth, TWO_WHEELER, yaw)
    head = mats["helmet"] if motorbike else int(rng.choice(mats["skin"]))
    b.spheroid((rx, ry, base_z + 1.68), 0.13, 0.14, head, TWO_WHEELER)
    return length


def add_pedestrian(b: MotionBuilder | PrimitiveBuilder, x: float, y: float, heading: float,
                   rng: np.random.Generator, mats: dict, walking: bool, base_z: float = 0.0) -> None:
    """A pedestrian standing at (x, y) on height ``base_z``; when ``walking``, legs and arms swing
    along the motion direction.

    The parts take ``b.motion`` (direction, speed, ...) as set by the caller; the swing is added here.
    """
    height = rng.uniform(1.5, 1.95)
    legs_h = 0.47 * height
    torso_h = 0.33 * height
    pants, shirt, skin = (int(rng.choice(mats[k])) for k in ("cloth", "cloth", "skin"))
    base_motion = getattr(b, "motion", None)
    cadence = rng.uniform(0.8, 1.1)
    phase = rng.uniform(0, 2 * np.pi)
    for side, sign in ((-1, 1.0), (1, -1.0)):
        lx, ly = _offset(x, y, heading, 0.0, side * 0.09)
        if base_motion is not None:
            swing = 0.12 * sign if walking else 0.0
            b.motion = base_motion[:5] + (swing, cadence, phase)
        b.box_on_ground(lx, ly, base_z, (0.15, 0.14, legs_h), pants, PEDESTRIAN, heading)
    for side, sign in ((-1, -1.0), (1, 1.0)):
        ax, ay = _offset(x, y, heading, 0.0, side * 0.25)
        if base_motion is not None:
            swing = 0.08 * sign if walking else 0.0
            b.motion = base_motion[:5] + (swing, cadence, phase)
        b.box_on_ground(ax, ay, base_z + legs_h + 0.05 * height, (0.1, 0.09, 0.3 * height), shirt, PEDESTRIAN,
                        heading)
    if base_motion is not None:
        b.motion = base_motion
    b.box_on_ground(x, y, base_z + legs_h, (0.24, 0.4, torso_h), shirt, PEDESTRIAN, heading)
    b.spheroid((x, y, base_z + legs_h + torso_h + 0.13 * height * 0.6), 0.1, 0.12, skin, PEDESTRIAN)


VEHICLE_TEMPLATES = {"car": add_car, "truck": add_truck, "bus": add_bus, "two_wheeler": add_two_wheeler}
VEHICLE_LENGTH_HINT = {"car": 5.0, "truck": 10.0, "bus": 12.5, "two_wheeler": 2.0}


# ----------------------------------------------------------------------------- traffic lanes


@dataclass(frozen=True)
class TrafficLane:
    """An endless lane of actors moving at one speed (so they never overlap each other).

    Actors are generated in windows of ``WINDOW`` metres of the lane coordinate
    ``xi = x - velocity * t``, seeded by (scene seed, lane id, window index).
    ``keep_clear`` is an xi interval left empty (in the ego's lane: everything behind and just
    ahead of the ego's start, so the lane's faster vehicles pull away from it and never reach it).
    """

    lane_id: int
    y: float
    velocity: float                     # m/s along world x (negative = oncoming)
    kind: str                           # "vehicles" or "pedestrians"
    mix: tuple[float, float, float, float] = (0.68, 0.1, 0.07, 0.15)  # car, truck, bus, two-wheeler
    gap_range: tuple[float, float] = (8.0, 40.0)
    keep_clear: tuple[float, float] | None = None
    base_z: float = 0.0                 # height of the surface the actors stand on (raised sidewalks)

    WINDOW = 80.0

    def windows_for(self, t: float, x_lo: float, x_hi: float) -> range:
        xi_lo, xi_hi = x_lo - self.velocity * t, x_hi - self.velocity * t
        return range(math.floor(xi_lo / self.WINDOW), math.floor(xi_hi / self.WINDOW) + 1)

    def generate(self, seed: int, window: int, mats: dict) -> MovingPrimitives:
        rng = np.random.default_rng([seed, 31, self.lane_id, seed_index(window)])
        builder = MotionBuilder()
        heading = 0.0 if self.velocity >= 0 else math.pi
        direction = (1.0, 0.0)
        builder.motion = (*direction, float(self.velocity), 0.0, 0.0, 0.0, 0.0, 0.0)
        start, stop = window * self.WINDOW, (window + 1) * self.WINDOW
        position = start + rng.uniform(0, self.gap_range[1])
        kinds = ("car", "truck", "bus", "two_wheeler")
        while True:
            if self.kind == "pedestrians":
                half = 0.5
            else:
                kind = kinds[int(rng.choice(4, p=np.asarray(self.mix) / sum(self.mix)))]
                half = VEHICLE_LENGTH_HINT[kind] / 2
            center = position + half
            if center + half > stop:
                break
            clear = self.keep_clear is None or not (self.keep_clear[0] - half < center < self.keep_clear[1] + half)
            if clear:
                if self.kind == "pedestrians":
                    add_pedestrian(builder, center, self.y + rng.uniform(-0.1, 0.1), heading, rng, mats,
                                   walking=self.velocity != 0, base_z=self.base_z)
                else:
                    # Two-wheelers keep to the right of their lane (-y when driving towards +x).
                    right = -1.0 if self.velocity >= 0 else 1.0
                    lateral = rng.uniform(0.6, 1.0) * right if kind == "two_wheeler" else rng.uniform(-0.25, 0.25)
                    VEHICLE_TEMPLATES[kind](builder, center, self.y + lateral, heading, rng, mats)
            position = center + half + rng.uniform(*self.gap_range)
        return builder.build_moving()


def seed_index(index: int) -> int:
    """Map any integer to a distinct non-negative one (``numpy`` seed material must be non-negative)."""
    return 2 * index if index >= 0 else -2 * index - 1
