"""Procedural driving scenes: a per-scene style drawn from the seed (``style.py``), and an endless
straight street built lazily in 40 m chunks (``chunks.py``), each seeded by (seed, chunk index).

Ground pixels get a zone (road, sidewalk, terrain, ground, water, rail track) from
``ground_zones``; lane markings, crosswalks and stop lines (label RoadLine) from ``road_markings``.
Markings are flat paint with the road's LiDAR reflectivity: only colour tells them apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from robustseg_core.sim.actors import MovingPrimitives, TrafficLane
from robustseg_core.sim.chunks import Chunk, ChunkBuilder
from robustseg_core.sim.materials import MaterialTable
from robustseg_core.sim.primitives import PrimitiveSet
from robustseg_core.sim.randomization import resolve, wide_rng, widen_materials, widen_style
from robustseg_core.sim.style import CHUNK_LENGTH, ZONE_ROAD, ZONE_SIDEWALK, SceneStyle, make_palette
from robustseg_core.sim.textures import band_coverage, pulse_coverage, tileable_noise


#: Seeds are whole numbers in [0, SEED_LIMIT): numpy seeds by 32-bit words, so a larger seed would repeat the
#: scenes of smaller ones.
SEED_LIMIT = 2**32


def check_seed(seed, what: str = "seed") -> int:
    """``seed`` as an int; ``ValueError`` naming it unless it is a whole number in [0, 2**32)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"{what} {seed!r}: expected a whole number within 0..{SEED_LIMIT - 1} (numpy seeds by "
                         "32-bit words, so larger seeds would repeat the scenes of smaller ones)")
    return int(seed)


@dataclass
class WorldWindow:
    """Everything static within a range of chunks, concatenated."""

    static: PrimitiveSet
    movers: MovingPrimitives
    segments: list[np.ndarray]
    crosswalks: np.ndarray
    stop_lines: np.ndarray
    lamps: np.ndarray


class Scene:
    """One procedural street: style, materials, noise tiles and a cache of generated chunks."""

    def __init__(self, seed: int, randomization: str = "benchmark") -> None:
        self.seed = check_seed(seed, "scene seed")
        spread = resolve(randomization)
        rng = np.random.default_rng([self.seed, 0])
        self.style = SceneStyle.sample(rng)
        wide = wide_rng(self.seed, 0) if spread else None
        if spread:
            self.style = widen_style(self.style, spread, wide)
        self.materials = MaterialTable()
        self.palette = make_palette(self.materials, self.style, rng)
        self.materials.freeze()
        if spread:
            self.materials.color_a, self.materials.color_b = widen_materials(
                self.materials.color_a, self.materials.color_b, spread, wide)
        self.noise_tiles = [tileable_noise(rng, falloff=f) for f in (1.3, 1.8)]
        self.zone_material = np.array([self.palette.road, self.palette.sidewalk, self.palette.terrain,
                                       self.palette.ground, self.palette.water, self.palette.rail_bed], dtype=np.int16)
        self.lanes = self._make_lanes(rng)
        self._chunks: dict[int, Chunk] = {}
        self._window_key: tuple[int, int] | None = None
        self._window: WorldWindow | None = None
        self._lane_cache: dict[tuple[int, int], MovingPrimitives] = {}

    # ------------------------------------------------------------------ traffic

    def _make_lanes(self, rng: np.random.Generator) -> list[TrafficLane]:
        style, road = self.style, self.style.road
        lanes = []
        density = rng.uniform(0.5, 1.5)
        gaps = (6.0 / density, 45.0 / density)
        ego_y = road.forward_lane_center(style.ego_lane)
        for i in range(road.lanes_forward):
            if i == style.ego_lane:
                # Vehicles ahead of the ego only, pulling away from it (the ego starts at x = 0).
                lanes.append(TrafficLane(len(lanes), ego_y, style.ego_speed + float(rng.uniform(0.5, 5.0)),
                                         "vehicles", gap_range=gaps, keep_clear=(-1e9, 12.0)))
            else:
                lanes.append(TrafficLane(len(lanes), road.forward_lane_center(i), float(rng.uniform(2.0, 15.0)),
                                         "vehicles", gap_range=gaps))
        for i in range(road.lanes_backward):
            lanes.append(TrafficLane(len(lanes), (i + 0.5) * road.lane_width, -float(rng.uniform(4.0, 15.0)),
                                     "vehicles", gap_range=gaps))
        ped_gaps = (3.0 / style.pedestrian_density, 30.0 / style.pedestrian_density)
        for side, sign in ((0, -1.0), (1, 1.0)):
            width = style.sidewalk_width[side]
            if width <= 0:
                continue
            edge = -road.right_edge if side == 0 else road.left_edge
            for offset in (0.3, 0.7):
                y = sign * (edge + width * offset)
                speed = float(rng.uniform(0.8, 1.6)) * rng.choice([-1.0, 1.0])
                lanes.append(TrafficLane(len(lanes), y, speed, "pedestrians", gap_range=ped_gaps,
                                         base_z=style.curb_height))
        return lanes

    def lane_movers(self, t: float, x_lo: float, x_hi: float) -> MovingPrimitives:
        """Actors of every traffic lane that may be within [x_lo, x_hi] at time ``t`` (reference pose)."""
        items = []
        for lane in self.lanes:
            for window in lane.windows_for(t, x_lo, x_hi):
                key = (lane.lane_id, window)
                if key not in self._lane_cache:
                    if len(self._lane_cache) > 256:
                        self._lane_cache.clear()
                    self._lane_cache[key] = lane.generate(self.seed, window, self.palette.actors)
                items.append(self._lane_cache[key])
        return MovingPrimitives.concat(items)

    # ------------------------------------------------------------------ chunks

    def window(self, x_lo: float, x_hi: float) -> WorldWindow:
        """Static content of all chunks overlapping [x_lo, x_hi] (cached while the range is unchanged)."""
        key = (math.floor(x_lo / CHUNK_LENGTH), math.floor(x_hi / CHUNK_LENGTH))
        if key != self._window_key:
            chunks = [self.chunk(k) for k in range(key[0], key[1] + 1)]
            self._window = WorldWindow(
                PrimitiveSet.concat([c.static for c in chunks]),
                MovingPrimitives.concat([c.movers for c in chunks]),
                [np.concatenate([c.segments[side] for c in chunks]) for side in (0, 1)],
                np.concatenate([c.crosswalks for c in chunks]).reshape(-1, 2),
                np.concatenate([c.stop_lines for c in chunks]).reshape(-1, 2),
                np.concatenate([c.lamps for c in chunks]).reshape(-1, 3),
            )
            self._window_key = key
        return self._window

    def chunk(self, index: int) -> Chunk:
        if index not in self._chunks:
            if len(self._chunks) > 64:
                self._chunks.clear()
            self._chunks[index] = ChunkBuilder(self, index).build()
        return self._chunks[index]

    # ------------------------------------------------------------------ ground

    def side_edges(self) -> tuple[float, float]:
        """|y| of the road edge on the right and left side."""
        return -self.style.road.right_edge, self.style.road.left_edge

    def ground_zones(self, window: WorldWindow, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Zone id (ZONE_*) of ground points (x, y) [K]."""
        road = self.style.road
        zones = np.full(x.shape, ZONE_ROAD, dtype=np.int8)
        edges = self.side_edges()
        for side in (0, 1):
            on_side = (y < road.right_edge) if side == 0 else (y > road.left_edge)
            idx = np.flatnonzero(on_side)
            if len(idx) == 0:
                continue
            lateral = np.abs(y[idx])
            segments = window.segments[side]
            seg = np.clip(np.searchsorted(segments[:, 0], x[idx], side="right") - 1, 0, len(segments) - 1)
            row = segments[seg]
            zone = np.where(lateral < row[:, 2], row[:, 1],
                            np.where(lateral < row[:, 4], row[:, 3], row[:, 5])).astype(np.int8)
            sidewalk_end = edges[side] + self.style.sidewalk_width[side]
            zone[lateral < sidewalk_end] = ZONE_SIDEWALK
            zones[idx] = zone
        return zones

    def road_markings(self, window: WorldWindow, x: np.ndarray, y: np.ndarray, footprint_x: np.ndarray,
                      footprint_y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Paint on road points: (is paint at the point [K] bool, white coverage [K], yellow coverage [K]).

        Coverages are box-filtered over the pixel footprint (for colour); the boolean is the exact
        point sample (for the label).
        """
        road = self.style.road
        painted = np.zeros(x.shape, dtype=bool)
        white = np.zeros(x.shape, dtype=np.float32)
        yellow = np.zeros(x.shape, dtype=np.float32)
        reach_x = footprint_x * 0.5
        for x0, x1 in window.crosswalks:
            near = np.flatnonzero((x > x0 - reach_x) & (x < x1 + reach_x))
            if len(near) == 0:
                continue
            xs, ys = x[near], y[near] - road.right_edge - 0.25
            bar = road.crosswalk_bar
            cover = band_coverage(xs, x0, x1, footprint_x[near]) * pulse_coverage(ys, 2 * bar, bar, footprint_y[near])
            white[near] = np.maximum(white[near], cover)
            painted[near] |= (xs >= x0) & (xs < x1) & (np.mod(ys, 2 * bar) < bar)
        for x0, x1 in window.stop_lines:
            near = np.flatnonzero((x > x0 - reach_x) & (x < x1 + reach_x) & (y > road.right_edge + 0.3) & (y < -0.1))
            xs = x[near]
            white[near] = np.maximum(white[near], band_coverage(xs, x0, x1, footprint_x[near]))
            painted[near] |= (xs >= x0) & (xs < x1)
        in_crosswalk = np.zeros(x.shape, dtype=bool)
        for x0, x1 in window.crosswalks:
            in_crosswalk |= (x >= x0) & (x < x1)
        dash_offset = 0.37 * road.dash_period
        half_fp_y = footprint_y * 0.5
        for line in road.boundaries:
            offsets = (-line.width / 2 - 0.06, line.width / 2 + 0.06) if line.double else (0.0,)
            for offset in offsets:
                center = line.y + offset
                near = np.flatnonzero(np.abs(y - center) < line.width / 2 + half_fp_y)
                if len(near) == 0:
                    continue
                xs, ys = x[near], y[near]
                cover = band_coverage(ys, center - line.width / 2, center + line.width / 2, footprint_y[near])
                exact = np.abs(ys - center) < line.width / 2
                if line.dashed:
                    cover = cover * pulse_coverage(xs + dash_offset, road.dash_period, road.dash_length,
                                                   footprint_x[near])
                    exact &= np.mod(xs + dash_offset, road.dash_period) < road.dash_length
                free = ~in_crosswalk[near]
                painted[near] |= exact & free
                target = yellow if line.yellow else white
                target[near] = np.maximum(target[near], cover * free)
        return painted, white, yellow
