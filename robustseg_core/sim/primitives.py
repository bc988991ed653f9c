"""Analytic scene primitives stored as struct-of-arrays, and a builder that collects them.

Kinds (all in the world frame, metres, z up):

* box: centre, half extents, yaw about z (radians); optionally see-through (fences): ``mesh`` =
  (pitch_x, bar_x, pitch_z, bar_z) in metres along the box's local x and z. A ray passes through
  where it falls between the bars along every patterned axis (pitch 0 = no bars along that axis):
  chain-link = both axes, slats = x only, rails = z only;
* cylinder: vertical, centre (x, y), bottom and top z, radius; capped on top;
* spheroid: centre, horizontal radius, vertical radius.

Every primitive has a material index (into the scene's ``MaterialTable``), a DELIVER class id and
a ``tag``: a number fixed when the primitive is built (from its initial geometry) that stays the
same however primitive sets are concatenated or moved, for stable per-object texture variation.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np


@dataclass
class Boxes:
    center: np.ndarray       # [N, 3] float32
    half: np.ndarray         # [N, 3] float32
    yaw: np.ndarray          # [N] float32
    material: np.ndarray     # [N] int16
    label: np.ndarray        # [N] uint8
    mesh: np.ndarray         # [N, 4] float32 (pitch_x, bar_x, pitch_z, bar_z); all 0 = solid
    tag: np.ndarray          # [N] int32

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        cos, sin = np.abs(np.cos(self.yaw)), np.abs(np.sin(self.yaw))
        extent = np.stack((cos * self.half[:, 0] + sin * self.half[:, 1],
                           sin * self.half[:, 0] + cos * self.half[:, 1], self.half[:, 2]), axis=1)
        return self.center - extent, self.center + extent


@dataclass
class Cylinders:
    center: np.ndarray       # [N, 2] float32 (x, y)
    z_range: np.ndarray      # [N, 2] float32 (bottom, top)
    radius: np.ndarray       # [N] float32
    material: np.ndarray
    label: np.ndarray
    tag: np.ndarray

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        r = self.radius[:, None]
        lo = np.concatenate((self.center - r, self.z_range[:, :1]), axis=1)
        hi = np.concatenate((self.center + r, self.z_range[:, 1:]), axis=1)
        return lo, hi


@dataclass
class Spheroids:
    center: np.ndarray       # [N, 3] float32
    radius: np.ndarray       # [N] float32 (horizontal)
    radius_z: np.ndarray     # [N] float32 (vertical)
    material: np.ndarray
    label: np.ndarray
    tag: np.ndarray

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        extent = np.stack((self.radius, self.radius, self.radius_z), axis=1)
        return self.center - extent, self.center + extent


def _empty(cls):
    shapes = {"center": (0, 3) if cls is not Cylinders else (0, 2), "half": (0, 3), "z_range": (0, 2),
              "mesh": (0, 4)}
    dtypes = {"material": np.int16, "label": np.uint8, "tag": np.int32}
    return cls(**{f.name: np.zeros(shapes.get(f.name, (0,)), dtype=dtypes.get(f.name, np.float32))
                  for f in fields(cls)})


def _concat(cls, parts):
    parts = [p for p in parts if len(p.material)]
    if not parts:
        return _empty(cls)
    if len(parts) == 1:
        return parts[0]
    return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})


@dataclass
class PrimitiveSet:
    boxes: Boxes
    cylinders: Cylinders
    spheroids: Spheroids

    @staticmethod
    def empty() -> PrimitiveSet:
        return PrimitiveSet(_empty(Boxes), _empty(Cylinders), _empty(Spheroids))

    @staticmethod
    def concat(sets: list[PrimitiveSet]) -> PrimitiveSet:
        return PrimitiveSet(_concat(Boxes, [s.boxes for s in sets]),
                            _concat(Cylinders, [s.cylinders for s in sets]),
                            _concat(Spheroids, [s.spheroids for s in sets]))

    def __len__(self) -> int:
        return len(self.boxes.material) + len(self.cylinders.material) + len(self.spheroids.material)

    def aabb(self) -> tuple[np.ndarray, np.ndarray]:
        """World AABBs of all primitives in kind order (boxes, cylinders, spheroids): lo, hi [P, 3]."""
        bounds = [self.boxes.aabb(), self.cylinders.aabb(), self.spheroids.aabb()]
        return np.concatenate([b[0] for b in bounds]), np.concatenate([b[1] for b in bounds])


class PrimitiveBuilder:
    """Collects primitives one by one (scene generation) and packs them into a ``PrimitiveSet``."""

    def __init__(self) -> None:
        self._boxes: list[tuple] = []
        self._cylinders: list[tuple] = []
        self._spheroids: list[tuple] = []

    def box(self, center, size, material: int, label: int, yaw: float = 0.0,
            mesh: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)) -> None:
        """Box with full ``size`` (length x, width y, height z) before yaw."""
        self._boxes.append((*center, size[0] / 2, size[1] / 2, size[2] / 2, yaw, material, label, *mesh))

    def box_on_ground(self, x, y, z0, size, material: int, label: int, yaw: float = 0.0,
                      mesh: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)) -> None:
        """Box whose bottom face is at height ``z0``."""
        self.box((x, y, z0 + size[2] / 2), size, material, label, yaw, mesh)

    def cylinder(self, x, y, z0, z1, radius, material: int, label: int) -> None:
        self._cylinders.append((x, y, z0, z1, radius, material, label))

    def spheroid(self, center, radius, radius_z, material: int, label: int) -> None:
        self._spheroids.append((*center, radius, radius_z, material, label))

    def build(self) -> PrimitiveSet:
        result = PrimitiveSet.empty()
        if self._boxes:
            a = np.array(self._boxes, dtype=np.float64)
            result.boxes = Boxes(a[:, 0:3].astype(np.float32), a[:, 3:6].astype(np.float32),
                                 a[:, 6].astype(np.float32), a[:, 7].astype(np.int16),
                                 a[:, 8].astype(np.uint8), a[:, 9:13].astype(np.float32), _tags(a[:, :6]))
        if self._cylinders:
            a = np.array(self._cylinders, dtype=np.float64)
            result.cylinders = Cylinders(a[:, 0:2].astype(np.float32), a[:, 2:4].astype(np.float32),
                                         a[:, 4].astype(np.float32), a[:, 5].astype(np.int16),
                                         a[:, 6].astype(np.uint8), _tags(a[:, :5]))
        if self._spheroids:
            a = np.array(self._spheroids, dtype=np.float64)
            result.spheroids = Spheroids(a[:, 0:3].astype(np.float32), a[:, 3].astype(np.float32),
                                         a[:, 4].astype(np.float32), a[:, 5].astype(np.int16),
                                         a[:, 6].astype(np.uint8), _tags(a[:, :5]))
        return result


def _tags(geometry: np.ndarray) -> np.ndarray:
    """Stable per-primitive numbers in [0, 2**31) from initial geometry [N, F] (metres, mm resolution)."""
    millimetres = np.round(geometry * 1000.0).astype(np.int64)
    weights = np.array([73856093, 19349663, 83492791, 49979687, 86028121, 67867967][: geometry.shape[1]])
    return (np.abs(millimetres * weights).sum(axis=1) % (2**31 - 1)).astype(np.int32)
