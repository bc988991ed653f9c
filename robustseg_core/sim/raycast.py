"""Vectorised ray casting of structured ray grids against the ground plane and analytic primitives.

A ray grid is a [rows, cols] set of rays from one origin: a pinhole camera (regular in pixels) or a
spinning LiDAR (regular in beam elevation x azimuth). Each primitive's world AABB maps to a
conservative rectangle of grid cells, so only (primitive, ray) pairs inside those rectangles are
intersected, all kinds at once with flat numpy arrays. The nearest hit per ray is a min over
int64 keys ``(float32 bits of t) << 32 | primitive id``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robustseg_core.sensors.camera import CameraIntrinsics
from robustseg_core.sim.primitives import PrimitiveSet

KIND_NONE, KIND_GROUND, KIND_BOX, KIND_CYLINDER, KIND_SPHEROID = 0, 1, 2, 3, 4
GROUND_ID = 1
FIRST_PRIMITIVE_ID = 2
_NO_HIT = np.int64(np.iinfo(np.int64).max)
_EPS = 1e-4

# Corner i of an AABB takes lo/hi per axis from bits (x: bit 0, y: bit 1, z: bit 2); the 12 edges.
_CORNER_BITS = np.array([[(i >> a) & 1 for a in range(3)] for i in range(8)], dtype=bool)
_EDGES = np.array([(i, i | (1 << a)) for i in range(8) for a in range(3) if not (i >> a) & 1])


def _corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """AABB corners [P, 8, 3]."""
    return np.where(_CORNER_BITS[None], hi[:, None, :], lo[:, None, :])


class RayGrid:
    """Rays of unit direction (dx, dy, dz) [rows * cols] from one world-frame ``origin``."""

    origin: np.ndarray
    rows: int
    cols: int
    dx: np.ndarray
    dy: np.ndarray
    dz: np.ndarray
    wraps_columns = False
    max_distance: float

    @property
    def size(self) -> int:
        return self.rows * self.cols

    def cull(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Grid rectangles [r0, r1) x [c0, c1) that may hit each AABB (empty when r1 <= r0 or c1 <= c0)."""
        raise NotImplementedError

    def directions(self) -> np.ndarray:
        return np.stack((self.dx, self.dy, self.dz), axis=1)


class PinholeRayGrid(RayGrid):
    """One ray per pixel centre of a pinhole camera at ``origin`` with orientation ``R_world_cam``."""

    def __init__(self, intrinsics: CameraIntrinsics, R_world_cam: np.ndarray, origin: np.ndarray,
                 max_distance: float = 600.0, near: float = 0.05) -> None:
        self.intrinsics = intrinsics
        self.rows, self.cols = intrinsics.height, intrinsics.width
        self.origin = np.asarray(origin, dtype=np.float64)
        self.R_world_cam = np.asarray(R_world_cam, dtype=np.float64)
        self.max_distance = max_distance
        self.near = near
        rays = intrinsics.pixel_rays().reshape(-1, 3)
        self.forward_cos = (1.0 / np.linalg.norm(rays, axis=1)).astype(np.float32)  # z_cam per unit length
        world = (rays * self.forward_cos[:, None]) @ self.R_world_cam.T
        self.dx, self.dy, self.dz = (world[:, i].astype(np.float32).copy() for i in range(3))
        k = intrinsics
        left, right = (-0.5 - k.cx) / k.fx, (k.width - 0.5 - k.cx) / k.fx
        top, bottom = (-0.5 - k.cy) / k.fy, (k.height - 0.5 - k.cy) / k.fy
        planes = np.array([[1, 0, -left], [-1, 0, right], [0, 1, -top], [0, -1, bottom], [0, 0, 1]], dtype=np.float64)
        self._plane_normals = planes @ self.R_world_cam.T  # world frame, inward
        self._plane_offsets = np.array([0, 0, 0, 0, near])

    def cull(self, lo, hi):
        count = len(lo)
        r0 = np.zeros(count, dtype=np.int64)
        r1, c0, c1 = r0.copy(), r0.copy(), r0.copy()
        if count == 0:
            return r0, r1, c0, c1
        center, half = (lo + hi) / 2 - self.origin, (hi - lo) / 2
        support = center @ self._plane_normals.T + half @ np.abs(self._plane_normals).T
        forward = self.R_world_cam[:, 2]
        nearest = center @ forward - half @ np.abs(forward)
        inside = np.flatnonzero(np.all(support >= self._plane_offsets - 1e-6, axis=1) & (nearest < self.max_distance))
        if len(inside):
            r0[inside], r1[inside], c0[inside], c1[inside] = self._project_rectangles(lo[inside], hi[inside])
        return r0, r1, c0, c1

    def _project_rectangles(self, lo, hi):
        cam = (_corners(lo, hi) - self.origin) @ self.R_world_cam  # [P, 8, 3] optical frame
        z = cam[..., 2]
        a, b = cam[:, _EDGES[:, 0]], cam[:, _EDGES[:, 1]]
        za, zb = a[..., 2], b[..., 2]
        crosses = (za - self.near) * (zb - self.near) < 0
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(crosses, (self.near - za) / np.where(crosses, zb - za, 1.0), 0.0)
        crossing = a + frac[..., None] * (b - a)
        points = np.concatenate((cam, crossing), axis=1)
        valid = np.concatenate((z >= self.near, crosses), axis=1)
        pz = np.where(valid, points[..., 2], 1.0)
        k = self.intrinsics
        u = k.fx * points[..., 0] / pz + k.cx
        v = k.fy * points[..., 1] / pz + k.cy
        inf = np.inf
        umin = np.where(valid, u, inf).min(axis=1)
        umax = np.where(valid, u, -inf).max(axis=1)
        vmin = np.where(valid, v, inf).min(axis=1)
        vmax = np.where(valid, v, -inf).max(axis=1)
        zmin = np.where(valid, points[..., 2], inf).min(axis=1)
        visible = valid.any(axis=1) & (zmin < self.max_distance)
        big = 1e6
        c0 = np.clip(np.ceil(np.clip(umin, -big, big) - 0.5), 0, self.cols)
        c1 = np.clip(np.floor(np.clip(umax, -big, big) + 0.5) + 1, 0, self.cols)
        r0 = np.clip(np.ceil(np.clip(vmin, -big, big) - 0.5), 0, self.rows)
        r1 = np.clip(np.floor(np.clip(vmax, -big, big) + 0.5) + 1, 0, self.rows)
        r1 = np.where(visible, r1, r0)
        return r0.astype(np.int64), r1.astype(np.int64), c0.astype(np.int64), c1.astype(np.int64)


class SphericalRayGrid(RayGrid):
    """Spinning multi-beam LiDAR: rows = beams (elevations, descending), cols = azimuth steps over 360 deg.

    Column j looks at azimuth ``-pi + (j + 0.5) * 2 pi / cols`` in the sensor frame (x forward, y left).
    """

    wraps_columns = True

    def __init__(self, elevations_rad: np.ndarray, azimuth_steps: int, R_world_sensor: np.ndarray,
                 origin: np.ndarray, max_distance: float = 120.0) -> None:
        elevations = np.sort(np.asarray(elevations_rad, dtype=np.float64))[::-1]
        self.elevations = elevations
        self.rows, self.cols = len(elevations), int(azimuth_steps)
        self.azimuth_step = 2.0 * np.pi / self.cols
        self.azimuths = -np.pi + (np.arange(self.cols) + 0.5) * self.azimuth_step
        self.origin = np.asarray(origin, dtype=np.float64)
        self.R_world_sensor = np.asarray(R_world_sensor, dtype=np.float64)
        self.max_distance = max_distance
        cos_el = np.cos(elevations)[:, None]
        local = np.stack((cos_el * np.cos(self.azimuths)[None, :], cos_el * np.sin(self.azimuths)[None, :],
                          np.repeat(np.sin(elevations)[:, None], self.cols, axis=1)), axis=-1).reshape(-1, 3)
        self.local_directions = local
        world = local @ self.R_world_sensor.T
        self.dx, self.dy, self.dz = (world[:, i].astype(np.float32).copy() for i in range(3))

    def cull(self, lo, hi):
        count = len(lo)
        r0 = np.zeros(count, dtype=np.int64)
        r1, c0, c1 = r0.copy(), r0.copy(), r0.copy()
        gap = np.maximum(np.maximum(lo - self.origin, self.origin - hi), 0.0)
        near = np.flatnonzero(np.einsum("ij,ij->i", gap, gap) < self.max_distance**2)
        if len(near):
            r0[near], r1[near], c0[near], c1[near] = self._angular_rectangles(lo[near], hi[near])
        return r0, r1, c0, c1

    def _angular_rectangles(self, lo, hi):
        local = (_corners(lo, hi) - self.origin) @ self.R_world_sensor  # sensor frame
        llo, lhi = local.min(axis=1), local.max(axis=1)
        gap_x = np.maximum(np.maximum(llo[:, 0], -lhi[:, 0]), 0.0)
        gap_y = np.maximum(np.maximum(llo[:, 1], -lhi[:, 1]), 0.0)
        dmin = np.hypot(gap_x, gap_y)
        xs = np.stack((llo[:, 0], lhi[:, 0], llo[:, 0], lhi[:, 0]), axis=1)
        ys = np.stack((llo[:, 1], llo[:, 1], lhi[:, 1], lhi[:, 1]), axis=1)
        dmax = np.hypot(xs, ys).max(axis=1)
        center_az = np.arctan2(ys.mean(axis=1), xs.mean(axis=1))
        rel = np.angle(np.exp(1j * (np.arctan2(ys, xs) - center_az[:, None])))
        az_lo = center_az + rel.min(axis=1)
        az_hi = center_az + rel.max(axis=1)
        inside = dmin <= 1e-6
        step = self.azimuth_step
        c0 = np.ceil((az_lo + np.pi) / step - 0.5 - 1e-6)
        c1 = np.floor((az_hi + np.pi) / step - 0.5 + 1e-6) + 1
        full = inside | (c1 - c0 >= self.cols)
        c0 = np.where(full, 0, c0)
        c1 = np.where(full, self.cols, c1)
        zlo, zhi = llo[:, 2], lhi[:, 2]
        el_hi = np.arctan2(zhi, np.where(zhi > 0, dmin, dmax))
        el_lo = np.arctan2(zlo, np.where(zlo > 0, dmax, dmin))
        ascending = self.elevations[::-1]
        lo_idx = np.searchsorted(ascending, el_lo - 1e-6, side="left")
        hi_idx = np.searchsorted(ascending, el_hi + 1e-6, side="right")
        r0 = self.rows - hi_idx
        r1 = self.rows - lo_idx
        return r0.astype(np.int64), r1.astype(np.int64), c0.astype(np.int64), c1.astype(np.int64)


def rect_pairs(r0, r1, c0, c1, cols: int, wrap: bool) -> tuple[np.ndarray, np.ndarray]:
    """All (primitive index, flat ray index) pairs inside the per-primitive grid rectangles."""
    heights = np.maximum(r1 - r0, 0)
    widths = np.maximum(c1 - c0, 0)
    counts = heights * widths
    nonempty = np.flatnonzero(counts)
    if len(nonempty) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    counts = counts[nonempty]
    total = int(counts.sum())
    prim = np.repeat(nonempty, counts)
    starts = np.cumsum(counts) - counts
    local = np.arange(total, dtype=np.int64) - np.repeat(starts, counts)
    width_per_pair = np.repeat(widths[nonempty], counts)
    row = np.repeat(r0[nonempty], counts) + local // width_per_pair
    col = np.repeat(c0[nonempty], counts) + local % width_per_pair
    if wrap:
        col %= cols
    return prim, row * cols + col


@dataclass
class Hits:
    """Nearest hit per ray: distance ``t`` (inf = none), ``kind`` (KIND_*) and ``index`` within its kind."""

    t: np.ndarray
    kind: np.ndarray
    index: np.ndarray


def _key(t: np.ndarray, ids: np.ndarray) -> np.ndarray:
    return (t.astype(np.float32).view(np.int32).astype(np.int64) << 32) | ids.astype(np.int64)


def _intersect_boxes(grid: RayGrid, boxes, prim: np.ndarray, ray: np.ndarray) -> np.ndarray:
    """Entry distance of each (box, ray) pair; inf for a miss (or a hole of a see-through box)."""
    cos = np.cos(boxes.yaw)
    sin = np.sin(boxes.yaw)
    rel = (grid.origin[None, :] - boxes.center).astype(np.float32)
    local_ox = (cos * rel[:, 0] + sin * rel[:, 1])[prim]
    local_oy = (-sin * rel[:, 0] + cos * rel[:, 1])[prim]
    local_oz = rel[:, 2][prim]
    c, s = cos[prim], sin[prim]
    dx, dy, dz = grid.dx[ray], grid.dy[ray], grid.dz[ray]
    ldx = c * dx + s * dy
    ldy = c * dy - s * dx
    half = boxes.half[prim]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / ldx
        ta = (-half[:, 0] - local_ox) * inv
        tb = (half[:, 0] - local_ox) * inv
        t_near = np.minimum(ta, tb)
        t_far = np.maximum(ta, tb)
        inv = 1.0 / ldy
        ta = (-half[:, 1] - local_oy) * inv
        tb = (half[:, 1] - local_oy) * inv
        np.maximum(t_near, np.minimum(ta, tb), out=t_near)
        np.minimum(t_far, np.maximum(ta, tb), out=t_far)
        inv = 1.0 / dz
        ta = (-half[:, 2] - local_oz) * inv
        tb = (half[:, 2] - local_oz) * inv
        np.maximum(t_near, np.minimum(ta, tb), out=t_near)
        np.minimum(t_far, np.maximum(ta, tb), out=t_far)
        hit = (t_far >= t_near) & (t_near > _EPS)
    t = np.where(hit, t_near, np.inf).astype(np.float32)
    see_through = (boxes.mesh[:, 0] > 0) | (boxes.mesh[:, 2] > 0)
    if see_through.any():
        idx = np.flatnonzero(see_through[prim] & hit)
        tm = t[idx]
        mesh = boxes.mesh[prim[idx]]
        along = local_ox[idx] + tm * ldx[idx] + half[idx, 0]
        up = local_oz[idx] + tm * dz[idx] + half[idx, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            gap_x = (mesh[:, 0] <= 0) | (np.mod(along, mesh[:, 0]) > mesh[:, 1])
            gap_z = (mesh[:, 2] <= 0) | (np.mod(up, mesh[:, 2]) > mesh[:, 3])
        t[idx[gap_x & gap_z]] = np.inf
    return t


def _intersect_cylinders(grid: RayGrid, cylinders, prim: np.ndarray, ray: np.ndarray) -> np.ndarray:
    ox, oy, oz = grid.origin
    rel_x = (ox - cylinders.center[:, 0]).astype(np.float32)[prim]
    rel_y = (oy - cylinders.center[:, 1]).astype(np.float32)[prim]
    radius = cylinders.radius[prim]
    z0 = cylinders.z_range[prim, 0]
    z1 = cylinders.z_range[prim, 1]
    dx, dy, dz = grid.dx[ray], grid.dy[ray], grid.dz[ray]
    a = dx * dx + dy * dy
    b = rel_x * dx + rel_y * dy
    c = rel_x * rel_x + rel_y * rel_y - radius * radius
    disc = b * b - a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        z_side = np.float32(oz) + t_side * dz
        side = (disc >= 0) & (t_side > _EPS) & (z_side >= z0) & (z_side <= z1) & (c > 0)
        t_cap = (z1 - np.float32(oz)) / dz
        cap_x = rel_x + t_cap * dx
        cap_y = rel_y + t_cap * dy
        cap = (np.float32(oz) > z1) & (t_cap > _EPS) & (cap_x * cap_x + cap_y * cap_y <= radius * radius)
    t = np.where(side, t_side, np.inf)
    t = np.where(cap & (t_cap < t), t_cap, t)
    return t.astype(np.float32)


def _intersect_spheroids(grid: RayGrid, spheroids, prim: np.ndarray, ray: np.ndarray) -> np.ndarray:
    rel = (grid.origin[None, :] - spheroids.center).astype(np.float32)
    squash = (spheroids.radius / spheroids.radius_z).astype(np.float32)
    rx, ry = rel[prim, 0], rel[prim, 1]
    k = squash[prim]
    rz = rel[prim, 2] * k
    radius = spheroids.radius[prim]
    dx, dy = grid.dx[ray], grid.dy[ray]
    dz = grid.dz[ray] * k
    a = dx * dx + dy * dy + dz * dz
    b = rx * dx + ry * dy + rz * dz
    c = rx * rx + ry * ry + rz * rz - radius * radius
    disc = b * b - a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
    return np.where((disc >= 0) & (t > _EPS) & (c > 0), t, np.inf).astype(np.float32)


def cast(grid: RayGrid, primitives: PrimitiveSet, ground: bool = True) -> Hits:
    """Nearest hit of every ray of ``grid`` against the ground plane z = 0 and ``primitives``."""
    n_box = len(primitives.boxes.material)
    n_cyl = len(primitives.cylinders.material)
    zbuffer = np.full(grid.size, _NO_HIT, dtype=np.int64)
    if ground:
        oz = np.float32(grid.origin[2])
        with np.errstate(divide="ignore"):
            t_ground = np.where(grid.dz < 0, -oz / grid.dz, np.inf).astype(np.float32)
        hit = t_ground < grid.max_distance
        zbuffer[hit] = _key(t_ground[hit], np.full(int(hit.sum()), GROUND_ID))

    lo, hi = primitives.aabb()
    r0, r1, c0, c1 = grid.cull(lo, hi)
    prim, ray = rect_pairs(r0, r1, c0, c1, grid.cols, grid.wraps_columns)
    if len(prim):
        t = np.empty(len(prim), dtype=np.float32)
        is_box = prim < n_box
        is_cyl = (prim >= n_box) & (prim < n_box + n_cyl)
        is_sph = prim >= n_box + n_cyl
        for mask, kernel, offset, group in (
            (is_box, _intersect_boxes, 0, primitives.boxes),
            (is_cyl, _intersect_cylinders, n_box, primitives.cylinders),
            (is_sph, _intersect_spheroids, n_box + n_cyl, primitives.spheroids),
        ):
            idx = np.flatnonzero(mask)
            if len(idx):
                t[idx] = kernel(grid, group, prim[idx] - offset, ray[idx])
        hit = t < grid.max_distance
        np.minimum.at(zbuffer, ray[hit], _key(t[hit], prim[hit] + FIRST_PRIMITIVE_ID))

    found = zbuffer != _NO_HIT
    ids = np.where(found, zbuffer & 0xFFFFFFFF, 0)
    t_all = np.where(found, (zbuffer >> 32).astype(np.int32).view(np.float32), np.inf).astype(np.float32)
    kind = np.zeros(grid.size, dtype=np.int8)
    index = np.zeros(grid.size, dtype=np.int32)
    kind[ids == GROUND_ID] = KIND_GROUND
    prim_index = ids - FIRST_PRIMITIVE_ID
    for kind_code, start, stop in ((KIND_BOX, 0, n_box), (KIND_CYLINDER, n_box, n_box + n_cyl),
                                   (KIND_SPHEROID, n_box + n_cyl, len(primitives))):
        sel = found & (prim_index >= start) & (prim_index < stop)
        kind[sel] = kind_code
        index[sel] = prim_index[sel] - start
    return Hits(t_all, kind, index)
