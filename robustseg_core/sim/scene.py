"""Procedural driving scenes: a per-scene style drawn from the seed, and an endless straight street
built lazily in 40 m chunks, each seeded by (seed, chunk index).

World frame: x along the road (the ego drives towards +x), y left, z up, ground z = 0. The road
occupies ``right_edge <= y <= left_edge``; lanes for +x traffic lie at y < 0 (right-hand traffic).
Across the road, each side has (outwards) an optional sidewalk (raised by ``curb_height`` or flush),
then per segment of 10..35 m a "verge" zone and a "back" zone of ground, plus the segment's
objects (buildings, parks, walls, fences, parking lots, canals, rail corridors, open land).

Ground pixels get a zone (road, sidewalk, terrain, ground, water, rail track) from
``ground_zones``; lane markings, crosswalks and stop lines (label RoadLine) from ``road_markings``.
Markings are flat paint with the road's LiDAR reflectivity: only colour tells them apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from robustseg_core.classes import CLASS_ID
from robustseg_core.sim.actors import (
    MotionBuilder,
    MovingPrimitives,
    TrafficLane,
    add_bus,
    add_car,
    add_pedestrian,
    add_truck,
    add_two_wheeler,
    seed_index,
)
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
    MaterialTable,
    linear_from_hsv,
    random_color,
)
from robustseg_core.sim.primitives import PrimitiveBuilder, PrimitiveSet
from robustseg_core.sim.randomization import resolve, wide_rng, widen_materials, widen_style
from robustseg_core.sim.textures import band_coverage, pulse_coverage, tileable_noise

C = CLASS_ID
ZONE_ROAD, ZONE_SIDEWALK, ZONE_TERRAIN, ZONE_GROUND, ZONE_WATER, ZONE_RAIL = range(6)
ZONE_LABELS = np.array([C["Road"], C["SideWalk"], C["Terrain"], C["Ground"], C["Water"], C["RailTrack"]],
                       dtype=np.uint8)
SEGMENT_TYPES = ("buildings", "park", "wall", "fence", "parking", "water", "rail", "open")
DISTRICTS = {
    "urban": (0.5, 0.1, 0.1, 0.07, 0.12, 0.03, 0.03, 0.05),
    "suburban": (0.3, 0.25, 0.1, 0.15, 0.08, 0.04, 0.03, 0.05),
    "industrial": (0.15, 0.05, 0.25, 0.22, 0.13, 0.05, 0.12, 0.03),
    "rural": (0.05, 0.2, 0.05, 0.15, 0.05, 0.15, 0.1, 0.25),
}
CHUNK_LENGTH = 40.0


@dataclass
class Boundary:
    """A longitudinal road marking line at lateral position ``y``."""

    y: float
    width: float
    dashed: bool
    double: bool
    yellow: bool


@dataclass
class RoadLayout:
    lane_width: float
    lanes_forward: int
    lanes_backward: int
    parking_right: bool
    parking_left: bool
    parking_width: float
    right_edge: float
    left_edge: float
    boundaries: list[Boundary]
    dash_length: float
    dash_period: float
    crosswalk_bar: float

    def forward_lane_center(self, index: int) -> float:
        """Centre y of forward lane ``index`` (0 = next to the centre line)."""
        return -(index + 0.5) * self.lane_width


@dataclass
class SceneStyle:
    """Everything about a scene that is drawn once from its seed."""

    district: str
    segment_weights: np.ndarray
    road: RoadLayout
    sidewalk_width: tuple[float, float]       # right, left (0 = no sidewalk)
    curb_height: float                        # 0 = flush sidewalks
    sidewalk_like_road: bool
    poles_like_walls: bool
    fence_like_wall: bool
    paint_wear: float
    crosswalk_chance: float
    bridge_chance: float
    lamp_spacing: float
    lamp_phase: float
    building_height: tuple[float, float]
    tree_density: float
    pedestrian_density: float
    camera_height: float
    camera_pitch_deg: float
    camera_roll_deg: float
    ego_lane: int
    ego_speed: float
    sun_elevation_deg: float
    sun_azimuth_deg: float

    @staticmethod
    def sample(rng: np.random.Generator) -> SceneStyle:
        district = str(rng.choice(list(DISTRICTS)))
        weights = np.array(DISTRICTS[district]) * rng.uniform(0.4, 1.6, size=len(SEGMENT_TYPES))
        lanes_forward = int(rng.choice([1, 2, 3], p=[0.45, 0.4, 0.15]))
        lanes_backward = int(rng.choice([0, 1, 2], p=[0.15, 0.55, 0.3]))
        lane_width = rng.uniform(2.9, 3.8)
        parking_right, parking_left = bool(rng.random() < 0.35), bool(rng.random() < 0.25)
        parking_width = rng.uniform(2.1, 2.5)
        right_edge = -(lanes_forward * lane_width + parking_right * parking_width)
        left_edge = lanes_backward * lane_width + parking_left * parking_width
        line_width = rng.uniform(0.1, 0.2)
        boundaries = [Boundary(-k * lane_width, line_width, True, False, False) for k in range(1, lanes_forward)]
        boundaries += [Boundary(k * lane_width, line_width, True, False, False) for k in range(1, lanes_backward)]
        if lanes_backward:
            centre = str(rng.choice(["double_yellow", "yellow", "dashed_white", "white"]))
            boundaries.append(Boundary(0.0, line_width, centre == "dashed_white", centre == "double_yellow",
                                       "yellow" in centre))
        if parking_right:
            boundaries.append(Boundary(-lanes_forward * lane_width, line_width, bool(rng.random() < 0.5), False, False))
        if parking_left:
            boundaries.append(Boundary(lanes_backward * lane_width, line_width, bool(rng.random() < 0.5), False, False))
        if rng.random() < 0.7:
            if not parking_right:
                boundaries.append(Boundary(right_edge + 0.35, line_width, False, False, False))
            if not parking_left:
                boundaries.append(Boundary(left_edge - 0.35, line_width, False, False, lanes_backward == 0))
        dash_length = rng.uniform(1.5, 4.0)
        road = RoadLayout(lane_width, lanes_forward, lanes_backward, parking_right, parking_left, parking_width,
                          right_edge, left_edge, boundaries, dash_length, dash_length + rng.uniform(2.0, 8.0),
                          rng.uniform(0.4, 0.6))
        rural = district == "rural"
        # A sidewalk coloured like the road is always raised, so that geometry can still tell them apart.
        sidewalk_like_road = bool(rng.random() < 0.25)
        curb_height = float(rng.uniform(0.1, 0.2)) if sidewalk_like_road or rng.random() >= 0.25 else 0.0
        sidewalks = tuple(float(rng.uniform(1.6, 5.0)) if rng.random() > (0.45 if rural else 0.05) else 0.0
                          for _ in range(2))
        return SceneStyle(
            district=district,
            segment_weights=weights / weights.sum(),
            road=road,
            sidewalk_width=sidewalks,
            curb_height=curb_height,
            sidewalk_like_road=sidewalk_like_road,
            poles_like_walls=bool(rng.random() < 0.3),
            fence_like_wall=bool(rng.random() < 0.35),
            paint_wear=float(rng.uniform(0.3, 1.0)),
            crosswalk_chance=float(rng.uniform(0.15, 0.5)),
            bridge_chance=float(rng.uniform(0.0, 0.15)),
            lamp_spacing=float(rng.uniform(18, 35)),
            lamp_phase=float(rng.uniform(0, 35)),
            building_height=(float(rng.uniform(5, 12)), float(rng.uniform(14, 45))),
            tree_density=float(rng.uniform(0.2, 1.0)),
            pedestrian_density=float(rng.uniform(0.3, 1.0)),
            camera_height=float(rng.uniform(1.35, 2.1)),
            camera_pitch_deg=float(rng.uniform(-1.0, 5.0)),
            camera_roll_deg=float(rng.uniform(-1.0, 1.0)),
            ego_lane=int(rng.integers(lanes_forward)),
            ego_speed=0.0 if rng.random() < 0.2 else float(rng.uniform(2.0, 12.0)),
            sun_elevation_deg=float(rng.uniform(15, 65)),
            sun_azimuth_deg=float(rng.uniform(0, 360)),
        )


@dataclass
class Chunk:
    """Static content of one 40 m chunk (and crossing pedestrians, which move)."""

    static: PrimitiveSet
    movers: MovingPrimitives
    segments: list[np.ndarray]        # per side: [S, 6] (x_start, inner zone, inner end |y|, verge zone,
    #                                   verge end |y|, back zone)
    crosswalks: np.ndarray            # [C, 2] x ranges
    stop_lines: np.ndarray            # [C, 2] x ranges
    lamps: np.ndarray                 # [L, 3] lamp-head positions


@dataclass
class WorldWindow:
    """Everything static within a range of chunks, concatenated."""

    static: PrimitiveSet
    movers: MovingPrimitives
    segments: list[np.ndarray]
    crosswalks: np.ndarray
    stop_lines: np.ndarray
    lamps: np.ndarray


@dataclass
class Palette:
    """Material ids of one scene, grouped by use."""

    road: int
    sidewalk: int
    terrain: int
    ground: int
    lot: int
    water: int
    rail_bed: int
    rail: int
    facades: list[int]
    walls: list[int]
    fence: int
    pole: int
    lamp_head: int
    foliage: list[int]
    bark: int
    hedge: int
    signs: list[int]
    traffic_light: int
    static: list[int]
    dynamic: list[int]
    other: list[int]
    guard_rail: int
    bridge: int
    actors: dict = field(default_factory=dict)


class Scene:
    """One procedural street: style, materials, noise tiles and a cache of generated chunks."""

    def __init__(self, seed: int, randomization: str = "benchmark") -> None:
        self.seed = int(seed)
        spread = resolve(randomization)
        rng = np.random.default_rng([self.seed, 0])
        self.style = SceneStyle.sample(rng)
        wide = wide_rng(self.seed, 0) if spread else None
        if spread:
            self.style = widen_style(self.style, spread, wide)
        self.materials = MaterialTable()
        self.palette = self._make_palette(rng)
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

    # ------------------------------------------------------------------ materials

    def _make_palette(self, rng: np.random.Generator) -> Palette:
        m = self.materials
        style = self.style
        grey = rng.uniform(0.035, 0.16)
        road_color = np.clip(grey * rng.uniform(0.92, 1.08, size=3), 0, 1)
        asphalt_scale = rng.uniform(1.5, 4.0)
        road = m.add(TEX_ROAD, road_color, road_color * rng.uniform(0.6, 0.85), scale=(asphalt_scale, asphalt_scale),
                     contrast=rng.uniform(0.3, 0.8), reflectivity=0.12)
        if style.sidewalk_like_road:
            sidewalk = road  # raised sidewalks of the road's material: only the curb's geometry tells them apart
        else:
            tile = random_color(rng, (0.0, 0.15), (0.0, 0.35), (0.45, 0.85))
            period = rng.uniform(0.25, 0.6)
            # A flush sidewalk is told from the road by colour and texture only (same LiDAR reflectivity).
            sidewalk = m.add(TEX_GRID, tile, tile * rng.uniform(0.4, 0.75), scale=(4.0, 4.0),
                             contrast=rng.uniform(0.2, 0.5),
                             params=(period, period * rng.choice([1.0, 2.0]), rng.uniform(0.01, 0.03), 0.5),
                             reflectivity=0.12 if style.curb_height == 0 else 0.25)
        terrain = m.add(TEX_NOISE, random_color(rng, (0.13, 0.3), (0.35, 0.75), (0.25, 0.6)),
                        random_color(rng, (0.08, 0.2), (0.3, 0.7), (0.2, 0.45)), scale=(2.5, 2.5), contrast=1.0,
                        reflectivity=0.45)
        ground = m.add(TEX_NOISE, random_color(rng, (0.05, 0.12), (0.2, 0.5), (0.3, 0.6)),
                       random_color(rng, (0.05, 0.12), (0.1, 0.4), (0.2, 0.4)), scale=(3.0, 3.0), contrast=1.0,
                       reflectivity=0.3)
        lot_grey = rng.uniform(0.06, 0.2)
        lot = m.add(TEX_NOISE, np.full(3, lot_grey), np.full(3, lot_grey * 0.7), scale=(2.0, 2.0), contrast=0.8,
                    reflectivity=0.15)
        water = m.add(TEX_WATER, random_color(rng, (0.45, 0.6), (0.3, 0.7), (0.15, 0.4)),
                      random_color(rng, (0.3, 0.5), (0.2, 0.6), (0.1, 0.3)), scale=(1.5, 0.8), contrast=1.0,
                      reflectivity=0.0, specular=0.35)
        rail_bed = m.add(TEX_GRID, random_color(rng, (0.0, 0.1), (0.0, 0.2), (0.3, 0.5)),
                         random_color(rng, (0.05, 0.1), (0.3, 0.6), (0.15, 0.3)), scale=(8.0, 8.0), contrast=0.8,
                         params=(0.6, 100.0, 0.25, 0.0), reflectivity=0.25)
        rail = m.add(TEX_NOISE, np.full(3, 0.3), np.full(3, 0.15), scale=(4, 4), contrast=0.3, reflectivity=0.7)
        facades = []
        for _ in range(6):
            wall_color = random_color(rng, (0.0, 0.15) if rng.random() < 0.7 else (0.0, 1.0), (0.0, 0.45), (0.3, 0.9))
            glass = random_color(rng, (0.5, 0.65), (0.05, 0.4), (0.1, 0.35))
            floor = rng.uniform(2.8, 3.8)
            spacing = rng.uniform(1.8, 4.5)
            facades.append(m.add(TEX_FACADE, wall_color, glass, scale=(rng.uniform(1, 4),) * 2, contrast=0.4,
                                 params=(spacing, floor, spacing * rng.uniform(0.3, 0.75),
                                         floor * rng.uniform(0.35, 0.65)),
                                 reflectivity=0.4, specular=0.2))
        walls = []
        for _ in range(1 if style.poles_like_walls or style.fence_like_wall else 2):
            wall_color = random_color(rng, (0.0, 0.15), (0.0, 0.35), (0.3, 0.85))
            if rng.random() < 0.5:
                walls.append(m.add(TEX_GRID, wall_color, wall_color * 0.6, scale=(3, 3), contrast=0.5,
                                   params=(rng.uniform(0.25, 0.5), rng.uniform(0.08, 0.2), 0.015, 0.5),
                                   reflectivity=0.4))
            else:
                walls.append(m.add(TEX_NOISE, wall_color, wall_color * 0.7, scale=(1.5, 1.5), contrast=0.6,
                                   reflectivity=0.4))
        if style.fence_like_wall:
            fence = walls[0]
        else:
            fence_color = random_color(rng, (0.0, 1.0), (0.0, 0.5), (0.15, 0.7))
            fence = m.add(TEX_NOISE, fence_color, fence_color * 0.8, scale=(2, 2), contrast=0.2, reflectivity=0.5)
        if style.poles_like_walls:
            pole = walls[0]
        else:
            pole_color = random_color(rng, (0.0, 1.0), (0.0, 0.25), (0.2, 0.7))
            pole = m.add(TEX_NOISE, pole_color, pole_color * 0.85, scale=(3, 3), contrast=0.15, reflectivity=0.6)
        lamp_head = m.add(TEX_LAMP, np.full(3, 0.6), np.full(3, 0.2), reflectivity=0.5)
        foliage = [m.add(TEX_NOISE, random_color(rng, (0.15, 0.33), (0.4, 0.85), (0.2, 0.55)),
                         random_color(rng, (0.15, 0.33), (0.4, 0.9), (0.08, 0.3)), scale=(4.0, 4.0), contrast=1.0,
                         reflectivity=0.55) for _ in range(3)]
        bark = m.add(TEX_NOISE, random_color(rng, (0.05, 0.1), (0.3, 0.6), (0.15, 0.35)), None, scale=(8.0, 1.0),
                     contrast=0.8, reflectivity=0.35)
        hedge = m.add(TEX_NOISE, random_color(rng, (0.18, 0.33), (0.4, 0.85), (0.15, 0.45)),
                      random_color(rng, (0.18, 0.33), (0.4, 0.9), (0.05, 0.25)), scale=(5.0, 5.0), contrast=1.0,
                      reflectivity=0.55)
        signs = [m.add(TEX_SIGN, linear_from_hsv(h, s, v), linear_from_hsv(hb, sb, vb), params=(0.06, 0, 0, 0),
                       reflectivity=0.9)
                 for (h, s, v), (hb, sb, vb) in (((0.0, 0.0, 0.95), (0.0, 0.9, 0.8)),
                                                 ((0.6, 0.85, 0.6), (0.0, 0.0, 0.95)),
                                                 ((0.14, 0.9, 0.95), (0.0, 0.0, 0.1)),
                                                 ((0.33, 0.8, 0.45), (0.0, 0.0, 0.95)))]
        traffic_light = m.add(TEX_TRAFFIC_LIGHT, np.full(3, rng.uniform(0.02, 0.08)), None, reflectivity=0.4)
        static = [m.add(TEX_NOISE, random_color(rng, (0.0, 1.0), (0.0, 0.6), (0.2, 0.8)), None, scale=(3, 3),
                        contrast=0.4, reflectivity=0.35) for _ in range(4)]
        dynamic = [m.add(TEX_NOISE, random_color(rng, (0.0, 1.0), (0.3, 0.9), (0.2, 0.7)), None, scale=(3, 3),
                         contrast=0.3, reflectivity=0.35) for _ in range(3)]
        other = [m.add(TEX_NOISE, random_color(rng, (0.0, 1.0), (0.0, 0.7), (0.2, 0.8)), None, scale=(3, 3),
                       contrast=0.3, reflectivity=0.4) for _ in range(3)]
        guard = m.add(TEX_NOISE, np.full(3, rng.uniform(0.3, 0.6)), None, scale=(2, 2), contrast=0.2, reflectivity=0.8)
        bridge_color = random_color(rng, (0.0, 0.12), (0.0, 0.2), (0.35, 0.75))
        bridge = m.add(TEX_NOISE, bridge_color, bridge_color * 0.7, scale=(1.5, 1.5), contrast=0.6, reflectivity=0.4)
        palette = Palette(road, sidewalk, terrain, ground, lot, water, rail_bed, rail, facades, walls, fence, pole,
                          lamp_head, foliage, bark, hedge, signs, traffic_light, static, dynamic, other, guard, bridge)
        palette.actors = self._actor_materials(rng)
        return palette

    def _actor_materials(self, rng: np.random.Generator) -> dict:
        m = self.materials
        paints, cabins, cabs = [], {}, {}
        glass = random_color(rng, (0.5, 0.65), (0.1, 0.4), (0.05, 0.2))
        for _ in range(10):
            if rng.random() < 0.45:
                color = linear_from_hsv(rng.uniform(0, 1), rng.uniform(0, 0.1), rng.choice([0.1, 0.5, 0.75, 0.92]))
            else:
                color = random_color(rng, (0.0, 1.0), (0.5, 0.95), (0.3, 0.9))
            paint = m.add(TEX_VEHICLE, color, None, contrast=0.05, params=(0, 0, 0, 0), reflectivity=0.5, specular=0.3)
            paints.append(paint)
            cabins[paint] = m.add(TEX_GLASS, glass, color, reflectivity=0.2, specular=0.5)
            cabs[paint] = m.add(TEX_VEHICLE, color, None, contrast=0.05, params=(0.45, 0.95, 0, 0),
                                reflectivity=0.5, specular=0.3)
        cargo = [m.add(TEX_NOISE, random_color(rng, (0.0, 1.0), (0.0, 0.6), (0.4, 0.95)), None, scale=(1, 1),
                       contrast=0.2, reflectivity=0.5) for _ in range(3)]
        bus = [m.add(TEX_VEHICLE, random_color(rng, (0.0, 1.0), (0.3, 0.9), (0.4, 0.9)), glass, contrast=0.05,
                     params=(0.42, 0.88, 0, 0), reflectivity=0.5, specular=0.3) for _ in range(2)]
        tyre = m.add(TEX_NOISE, np.full(3, 0.02), None, scale=(4, 4), contrast=0.2, reflectivity=0.1)
        cloth = [m.add(TEX_NOISE, random_color(rng, (0.0, 1.0), (0.0, 0.8), (0.08, 0.8)), None, scale=(6, 6),
                       contrast=0.3, reflectivity=0.3) for _ in range(8)]
        skin = [m.add(TEX_NOISE, linear_from_hsv(rng.uniform(0.03, 0.09), rng.uniform(0.25, 0.6), v), None,
                      scale=(6, 6), contrast=0.1, reflectivity=0.3) for v in (0.35, 0.55, 0.75, 0.9)]
        helmet = m.add(TEX_VEHICLE, random_color(rng, (0.0, 1.0), (0.0, 0.8), (0.1, 0.9)), None, contrast=0.05,
                       reflectivity=0.5, specular=0.4)
        return {"paint": paints, "cabin": cabins, "cab": cabs, "cargo": cargo, "bus": bus, "tyre": tyre,
                "cloth": cloth, "skin": skin, "helmet": helmet}

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


class ChunkBuilder:
    """Builds the static content of chunk ``index`` (x in [index * 40, (index + 1) * 40) m)."""

    def __init__(self, scene: Scene, index: int) -> None:
        self.scene = scene
        self.style = scene.style
        self.pal = scene.palette
        self.x0 = index * CHUNK_LENGTH
        self.x1 = self.x0 + CHUNK_LENGTH
        self.rng = np.random.default_rng([scene.seed, 17, seed_index(index)])
        self.b = PrimitiveBuilder()
        self.movers = MotionBuilder()
        self.lamps: list[tuple[float, float, float]] = []
        self.segments: list[list[tuple[float, ...]]] = [[], []]
        self.crosswalks: list[tuple[float, float]] = []
        self.stop_lines: list[tuple[float, float]] = []
        self.edges = scene.side_edges()

    def build(self) -> Chunk:
        self._crosswalk()
        for side in (0, 1):
            self._sidewalk(side)
            self._segments(side)
            self._furniture(side)
        self._parking_lanes()
        if self.rng.random() < self.style.bridge_chance:
            self._bridge()
        self._skyline()
        return Chunk(self.b.build(), self.movers.build_moving(),
                     [np.array(s, dtype=np.float64).reshape(-1, 6) for s in self.segments],
                     np.array(self.crosswalks, dtype=np.float64).reshape(-1, 2),
                     np.array(self.stop_lines, dtype=np.float64).reshape(-1, 2),
                     np.array(self.lamps, dtype=np.float64).reshape(-1, 3))

    # helpers -------------------------------------------------------------

    def _sign(self, side: int) -> float:
        return -1.0 if side == 0 else 1.0

    def _outer(self, side: int) -> float:
        """|y| where the sidewalk (or road, without sidewalk) ends on ``side``."""
        return self.edges[side] + self.style.sidewalk_width[side]

    def _sidewalk(self, side: int) -> None:
        width, height = self.style.sidewalk_width[side], self.style.curb_height
        if width <= 0 or height <= 0:
            return
        y = self._sign(side) * (self.edges[side] + width / 2)
        self.b.box(((self.x0 + self.x1) / 2, y, height / 2), (CHUNK_LENGTH, width, height), self.pal.sidewalk,
                   C["SideWalk"])

    def _crosswalk(self) -> None:
        if self.rng.random() >= self.style.crosswalk_chance:
            return
        rng, road = self.rng, self.style.road
        width = rng.uniform(3.0, 5.0)
        x0 = rng.uniform(self.x0 + 4, self.x1 - width - 4)
        self.crosswalks.append((x0, x0 + width))
        if rng.random() < 0.7:
            self.stop_lines.append((x0 - 2.0, x0 - 2.0 + rng.uniform(0.3, 0.5)))
        if rng.random() < 0.8:
            self._traffic_light(x0 - 1.0, 0, math.pi)
            if road.lanes_backward:
                self._traffic_light(x0 + width + 1.0, 1, 0.0)
        self._crossing_pedestrians(x0, width)

    def _crossing_pedestrians(self, x0: float, width: float) -> None:
        """Pedestrians walking back and forth over the crosswalk [x0, x0 + width], timed to be at the
        end of the crosswalk away from the ego's lane when the ego passes."""
        rng, road, style = self.rng, self.style.road, self.style
        span = road.left_edge - road.right_edge - 0.6
        ego_y = road.forward_lane_center(style.ego_lane)
        far_end = span if ego_y - road.right_edge < (road.left_edge - road.right_edge) / 2 else 0.0
        for _ in range(int(rng.integers(0, 4))):
            speed = float(rng.uniform(0.9, 1.5))
            target = abs(far_end - rng.uniform(0.0, 0.15 * span))
            if style.ego_speed > 0:
                passing_time = (x0 + width / 2) / style.ego_speed
                phase = (target - speed * passing_time) % (2 * span)
            else:
                phase = float(rng.uniform(0, 2 * span))
            self.movers.motion = (0.0, 1.0, speed, span, phase, 0.0, 0.0, 0.0)
            start = span - abs(phase % (2 * span) - span)  # the triangle wave at t = 0
            add_pedestrian(self.movers, rng.uniform(x0 + 0.5, x0 + width - 0.5), road.right_edge + 0.3 + start,
                           math.pi / 2, rng, self.pal.actors, walking=True)

    def _traffic_light(self, x: float, side: int, facing_yaw: float) -> None:
        rng, b, pal = self.rng, self.b, self.pal
        sign = self._sign(side)
        y = sign * (self.edges[side] + 0.6)
        height = rng.uniform(5.2, 6.5)
        b.cylinder(x, y, 0.0, height, rng.uniform(0.09, 0.14), pal.pole, C["Pole"])
        road_width = self.style.road.left_edge - self.style.road.right_edge
        arm = rng.uniform(0.35, 0.7) * road_width
        b.box((x, y - sign * arm / 2, height - 0.15), (0.15, arm, 0.15), pal.pole, C["Pole"])
        for reach in (0.6, 0.95) if arm > 5 else (0.9,):
            b.box_on_ground(x, y - sign * arm * reach, height - 1.25, (0.32, 0.36, 1.05), pal.traffic_light,
                            C["TrafficLight"], facing_yaw)
        b.box_on_ground(x - 0.2 * math.cos(facing_yaw), y, 2.4, (0.3, 0.32, 0.9), pal.traffic_light,
                        C["TrafficLight"], facing_yaw)

    def _segments(self, side: int) -> None:
        rng = self.rng
        position = self.x0
        while position < self.x1 - 1e-6:
            length = min(rng.uniform(10.0, 35.0), self.x1 - position)
            if self.x1 - (position + length) < 6.0:
                length = self.x1 - position
            kind = SEGMENT_TYPES[int(rng.choice(len(SEGMENT_TYPES), p=self.style.segment_weights))]
            getattr(self, f"_segment_{kind}")(side, position, position + length)
            position += length

    def _add_segment(self, side: int, x_start: float, verge_zone: int, verge_width: float, back_zone: int,
                     inner: tuple[int, float] = (ZONE_TERRAIN, 0.0)) -> float:
        """Record a segment's ground zones outwards from the sidewalk: an optional ``inner`` band
        (zone, width), the verge, then the back zone; returns |y| where the verge ends."""
        inner_end = self._outer(side) + inner[1]
        verge_end = inner_end + verge_width
        self.segments[side].append((x_start, inner[0], inner_end, verge_zone, verge_end, back_zone))
        return verge_end

    def _building_row(self, side: int, x0: float, x1: float, y_front: float,
                      depth: tuple[float, float] = (8, 22)) -> None:
        rng, b = self.rng, self.b
        sign = self._sign(side)
        position = x0
        low, high = self.style.building_height
        while position < x1 - 3:
            width = min(rng.uniform(8, 30), x1 - position)
            gap = rng.uniform(0, 4) if rng.random() < 0.4 else 0.0
            depth_m = rng.uniform(*depth)
            height = rng.uniform(low, high)
            front = y_front + (rng.uniform(0, 2.5) if rng.random() < 0.3 else 0.0)
            facade = int(rng.choice(self.pal.facades))
            b.box(((position + position + width - gap) / 2, sign * (front + depth_m / 2), height / 2),
                  (width - gap, depth_m, height), facade, C["Building"])
            if rng.random() < 0.25 and height > 8:
                b.box(((position + position + width - gap) / 2, sign * (front + depth_m / 2 + 1.5), height + 1.5),
                      ((width - gap) * 0.5, depth_m * 0.5, 3.0), facade, C["Building"])
            position += width

    def _trees(self, side: int, x0: float, x1: float, y_lo: float, y_hi: float, count: int) -> None:
        rng = self.rng
        sign = self._sign(side)
        for _ in range(count):
            x, y = rng.uniform(x0, x1), sign * rng.uniform(y_lo, y_hi)
            self._tree(x, y)

    def _tree(self, x: float, y: float, max_radius: float = 3.2, clearance: float = 0.0, jitter: float = 0.6) -> None:
        """Trunk plus one to three crown spheroids; crowns at most ``max_radius`` wide, their bottom at
        least ``clearance`` above the ground (street trees over the road are pruned high)."""
        rng, b, pal = self.rng, self.b, self.pal
        trunk_h = rng.uniform(1.6, 4.0)
        b.cylinder(x, y, 0.0, trunk_h + 0.5, rng.uniform(0.1, 0.3), pal.bark, C["Vegetation"])
        radius = min(rng.uniform(1.2, 3.2), max_radius)
        foliage = int(rng.choice(pal.foliage))
        for _ in range(int(rng.integers(1, 4))):
            r = radius * rng.uniform(0.6, 1.0)
            r_z = r * rng.uniform(0.7, 1.4)
            z = max(trunk_h + r * rng.uniform(0.6, 1.1), clearance + r_z)
            b.spheroid((x + rng.uniform(-jitter, jitter), y + rng.uniform(-jitter, jitter), z), r, r_z, foliage,
                       C["Vegetation"])

    def _scatter_objects(self, side: int, x0: float, x1: float, y_lo: float, y_hi: float, count: int) -> None:
        """Benches and boxes (Static), bins and carts (Dynamic), cabinets (Other) on open ground."""
        rng, b, pal = self.rng, self.b, self.pal
        sign = self._sign(side)
        for _ in range(count):
            x, y = rng.uniform(x0, x1), sign * rng.uniform(y_lo, y_hi)
            kind = rng.choice(["static", "dynamic", "other"], p=[0.5, 0.3, 0.2])
            if kind == "static":
                size = (rng.uniform(0.5, 2.5), rng.uniform(0.5, 1.5), rng.uniform(0.4, 1.5))
                b.box_on_ground(x, y, 0.0, size, int(rng.choice(pal.static)), C["Static"], rng.uniform(0, np.pi))
            elif kind == "dynamic":
                b.box_on_ground(x, y, 0.0, (0.6, 0.6, rng.uniform(0.8, 1.2)), int(rng.choice(pal.dynamic)),
                                C["Dynamic"], rng.uniform(0, np.pi))
            else:
                b.box_on_ground(x, y, 0.0, (rng.uniform(0.5, 1.2), 0.5, rng.uniform(1.0, 1.8)),
                                int(rng.choice(pal.other)), C["Other"], rng.uniform(0, np.pi))

    def _guard_rail(self, side: int, x0: float, x1: float, y_abs: float) -> None:
        rng, b, pal = self.rng, self.b, self.pal
        y = self._sign(side) * y_abs
        b.box(((x0 + x1) / 2, y, 0.6), (x1 - x0, 0.08, 0.32), pal.guard_rail, C["GroundRail"])
        spacing = rng.uniform(2.0, 4.0)
        for x in np.arange(x0 + spacing / 2, x1, spacing):
            b.box_on_ground(float(x), y - self._sign(side) * 0.12, 0.0, (0.1, 0.12, 0.75), pal.guard_rail,
                            C["GroundRail"])

    def _fence(self, side: int, x0: float, x1: float, y_abs: float) -> None:
        """A see-through fence with posts: chain-link, vertical slats or horizontal rails."""
        rng, b, pal = self.rng, self.b, self.pal
        y = self._sign(side) * y_abs
        height = rng.uniform(0.9, 2.0)
        kind = rng.choice(["chain_link", "slats", "rails"])
        if kind == "chain_link":
            pitch = rng.uniform(0.06, 0.2)
            mesh = (pitch, pitch * rng.uniform(0.15, 0.3), pitch, pitch * rng.uniform(0.15, 0.3))
        elif kind == "slats":
            pitch = rng.uniform(0.12, 0.35)
            mesh = (pitch, pitch * rng.uniform(0.4, 0.75), 0.0, 0.0)
        else:
            pitch = height / rng.integers(2, 5)
            mesh = (0.0, 0.0, pitch, rng.uniform(0.08, 0.15))
        b.box_on_ground((x0 + x1) / 2, y, 0.05, (x1 - x0, 0.05, height - 0.05), pal.fence, C["Fence"], mesh=mesh)
        spacing = rng.uniform(2.0, 3.5)
        for x in np.arange(x0 + 0.1, x1, spacing):
            b.box_on_ground(float(x), y, 0.0, (0.08, 0.08, height + 0.1), pal.fence, C["Fence"])

    def _wall(self, side: int, x0: float, x1: float, y_abs: float) -> None:
        rng = self.rng
        thickness = rng.uniform(0.25, 0.5)
        y = self._sign(side) * (y_abs + thickness / 2)
        self.b.box_on_ground((x0 + x1) / 2, y, 0.0, (x1 - x0, thickness, rng.uniform(1.8, 3.5)),
                             int(rng.choice(self.pal.walls)), C["Wall"])

    # segment types -------------------------------------------------------

    def _segment_buildings(self, side: int, x0: float, x1: float) -> None:
        rng = self.rng
        setback = rng.uniform(0.0, 6.0) if rng.random() < 0.6 else 0.0
        plaza = [] if self.style.sidewalk_like_road else [ZONE_SIDEWALK]
        verge = int(rng.choice(plaza + [ZONE_GROUND, ZONE_TERRAIN]))
        verge_end = self._add_segment(side, x0, verge, setback, ZONE_GROUND)
        self._building_row(side, x0, x1, verge_end)
        if setback > 2 and verge == ZONE_TERRAIN and rng.random() < 0.5:
            self.b.box_on_ground((x0 + x1) / 2, self._sign(side) * (self._outer(side) + 0.5), 0.0,
                                 (x1 - x0, 0.7, rng.uniform(0.7, 1.5)), self.pal.hedge, C["Vegetation"])

    def _segment_park(self, side: int, x0: float, x1: float) -> None:
        rng = self.rng
        depth = rng.uniform(10, 35)
        verge_end = self._add_segment(side, x0, ZONE_TERRAIN, depth, ZONE_TERRAIN)
        count = int(rng.poisson(self.style.tree_density * (x1 - x0) / 6)) + 1
        self._trees(side, x0, x1, self._outer(side) + 2, verge_end, count)
        for _ in range(int(rng.integers(0, 4))):
            x, y = rng.uniform(x0, x1), self._sign(side) * rng.uniform(self._outer(side) + 1, verge_end)
            r = rng.uniform(0.5, 1.3)
            self.b.spheroid((x, y, r * 0.6), r, r * 0.8, int(rng.choice(self.pal.foliage)), C["Vegetation"])
        if rng.random() < 0.35:
            self.b.box_on_ground((x0 + x1) / 2, self._sign(side) * (self._outer(side) + 0.6), 0.0,
                                 (x1 - x0, 0.8, rng.uniform(0.8, 1.8)), self.pal.hedge, C["Vegetation"])
        elif rng.random() < 0.3:
            self._fence(side, x0, x1, self._outer(side) + 0.3)
        self._scatter_objects(side, x0, x1, self._outer(side) + 1.5, verge_end, int(rng.integers(0, 3)))
        if rng.random() < 0.5:
            self._building_row(side, x0, x1, verge_end)

    def _segment_wall(self, side: int, x0: float, x1: float) -> None:
        rng = self.rng
        depth = rng.uniform(4, 20)
        verge_end = self._add_segment(side, x0, int(rng.choice([ZONE_TERRAIN, ZONE_GROUND])), depth, ZONE_GROUND)
        self._wall(side, x0, x1, self._outer(side) + rng.uniform(0.0, 0.4))
        if rng.random() < 0.6:
            self._building_row(side, x0, x1, verge_end)
        else:
            self._trees(side, x0, x1, self._outer(side) + 2, verge_end, int(rng.integers(1, 4)))

    def _segment_fence(self, side: int, x0: float, x1: float) -> None:
        rng = self.rng
        depth = rng.uniform(6, 25)
        verge_end = self._add_segment(side, x0, int(rng.choice([ZONE_TERRAIN, ZONE_GROUND])), depth,
                                      ZONE_TERRAIN)
        self._fence(side, x0, x1, self._outer(side) + rng.uniform(0.1, 0.6))
        self._scatter_objects(side, x0, x1, self._outer(side) + 1.5, verge_end, int(rng.integers(0, 4)))
        if rng.random() < 0.5:
            self._building_row(side, x0, x1, verge_end)
        else:
            self._trees(side, x0, x1, self._outer(side) + 2, verge_end, int(rng.integers(0, 4)))

    def _segment_parking(self, side: int, x0: float, x1: float) -> None:
        rng, pal = self.rng, self.pal
        verge_end = self._add_segment(side, x0, ZONE_GROUND, rng.uniform(12, 25), ZONE_GROUND)
        sign = self._sign(side)
        row_y = self._outer(side) + rng.uniform(3.5, 5.5)
        spacing = rng.uniform(2.6, 3.2)
        for x in np.arange(x0 + 1.5, x1 - 1.5, spacing):
            if rng.random() < 0.7:
                add_car(self.b, float(x), sign * row_y, math.pi / 2 + rng.uniform(-0.05, 0.05), rng, pal.actors)
        self._scatter_objects(side, x0, x1, self._outer(side) + 0.5, verge_end, int(rng.integers(1, 5)))
        if rng.random() < 0.7:
            self._building_row(side, x0, x1, verge_end)

    def _segment_water(self, side: int, x0: float, x1: float) -> None:
        rng = self.rng
        width = rng.uniform(8, 40)
        bank = rng.uniform(0.5, 3.0)
        far = self._add_segment(side, x0, ZONE_WATER, width, ZONE_TERRAIN, inner=(ZONE_TERRAIN, bank))
        if rng.random() < 0.6:
            self._guard_rail(side, x0, x1, self._outer(side) + 0.3)
        else:
            self._fence(side, x0, x1, self._outer(side) + 0.3)
        self._trees(side, x0, x1, far + 1, far + 10, int(rng.integers(0, 4)))
        if rng.random() < 0.5:
            self._building_row(side, x0, x1, far + rng.uniform(3, 10))

    def _segment_rail(self, side: int, x0: float, x1: float) -> None:
        rng, b, pal = self.rng, self.b, self.pal
        margin = rng.uniform(1.0, 4.0)
        tracks = int(rng.integers(1, 3))
        bed = tracks * 4.5
        margin_zone = int(rng.choice([ZONE_TERRAIN, ZONE_GROUND]))
        self._add_segment(side, x0, ZONE_RAIL, bed, ZONE_TERRAIN, inner=(margin_zone, margin))
        if rng.random() < 0.6:
            self._fence(side, x0, x1, self._outer(side) + 0.3)
        else:
            self._wall(side, x0, x1, self._outer(side) + 0.2)
        sign = self._sign(side)
        for k in range(tracks):
            center = self._outer(side) + margin + 2.25 + 4.5 * k
            for rail_offset in (-0.72, 0.72):
                b.box(((x0 + x1) / 2, sign * (center + rail_offset), 0.08), (x1 - x0, 0.08, 0.16), pal.rail,
                      C["RailTrack"])
        pole_x = x0 + rng.uniform(0, 10)
        while pole_x < x1:
            b.cylinder(pole_x, sign * (self._outer(side) + margin + bed + 0.5), 0.0, 7.0, 0.12, pal.pole, C["Pole"])
            pole_x += rng.uniform(25, 45)
        if rng.random() < 0.5:
            self._building_row(side, x0, x1, self._outer(side) + margin + bed + rng.uniform(3, 10))

    def _segment_open(self, side: int, x0: float, x1: float) -> None:
        rng = self.rng
        self._add_segment(side, x0, int(rng.choice([ZONE_TERRAIN, ZONE_GROUND])), rng.uniform(2, 15),
                          int(rng.choice([ZONE_TERRAIN, ZONE_GROUND])))
        if rng.random() < 0.6:
            self._guard_rail(side, x0, x1, self._outer(side) + 0.4)
        self._trees(side, x0, x1, self._outer(side) + 3, self._outer(side) + 40, int(rng.integers(0, 5)))
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(x0, x1), self._sign(side) * rng.uniform(self._outer(side) + 2, self._outer(side) + 25)
            r = rng.uniform(0.6, 1.6)
            self.b.spheroid((x, y, r * 0.5), r, r * 0.7, int(rng.choice(self.pal.foliage)), C["Vegetation"])

    # sidewalk furniture --------------------------------------------------

    def _furniture(self, side: int) -> None:
        rng, b, pal, style = self.rng, self.b, self.pal, self.style
        sign = self._sign(side)
        edge = self.edges[side]
        width = style.sidewalk_width[side]
        base_z = style.curb_height if width > 0 else 0.0
        curb_y = edge + 0.45
        first = self.x0 + (style.lamp_phase + side * style.lamp_spacing / 2 - self.x0) % style.lamp_spacing
        for x in np.arange(first, self.x1, style.lamp_spacing):
            height = 7.5
            b.cylinder(float(x), sign * curb_y, 0.0, height, 0.1, pal.pole, C["Pole"])
            b.box((float(x), sign * (curb_y - 0.8), height), (0.12, 1.7, 0.1), pal.pole, C["Pole"])
            head = (float(x), sign * (curb_y - 1.5), height - 0.12)
            b.box(head, (0.5, 0.3, 0.15), pal.lamp_head, C["Pole"])
            self.lamps.append(head)
        for _ in range(int(rng.poisson(1.2))):
            x = rng.uniform(self.x0, self.x1)
            y = sign * (edge + rng.uniform(0.3, 0.8))
            height = rng.uniform(2.2, 3.2)
            b.cylinder(x, y, 0.0, height, 0.04, pal.pole, C["Pole"])
            plate = rng.uniform(0.5, 0.9)
            facing = math.pi if side == 0 else 0.0
            b.box_on_ground(x, y, height - 0.05, (0.04, plate, plate), int(rng.choice(pal.signs)), C["TrafficSign"],
                            facing)
            if rng.random() < 0.3:
                b.box_on_ground(x, y, height - 0.1 - plate * 0.6, (0.04, plate, plate * 0.5),
                                int(rng.choice(pal.signs)), C["TrafficSign"], facing)
        if width <= 0:
            return
        if width > 2.5:
            count = int(rng.poisson(style.tree_density * 2))
            for _ in range(count):
                self._tree(rng.uniform(self.x0, self.x1), sign * (edge + rng.uniform(0.8, 1.3)), max_radius=1.8,
                           clearance=2.8, jitter=0.0)
        for _ in range(int(rng.poisson(2.5))):
            x = rng.uniform(self.x0, self.x1)
            y = sign * (edge + rng.uniform(0.3, max(0.35, width - 0.5)))
            choice = rng.random()
            if choice < 0.22:
                b.box_on_ground(x, y, base_z, (1.6, 0.5, 0.45), int(rng.choice(pal.static)), C["Static"])
                b.box_on_ground(x, y + sign * 0.22, base_z + 0.45, (1.6, 0.08, 0.45), int(rng.choice(pal.static)),
                                C["Static"])
            elif choice < 0.42:
                b.cylinder(x, y, base_z, base_z + rng.uniform(0.6, 1.0), rng.uniform(0.2, 0.3),
                           int(rng.choice(pal.dynamic)), C["Dynamic"])
            elif choice < 0.52:
                b.cylinder(x, y, base_z, base_z + 0.75, 0.13, int(rng.choice(pal.static)), C["Static"])
            elif choice < 0.67:
                b.box_on_ground(x, y, base_z, (0.7, 0.45, rng.uniform(1.1, 1.6)), int(rng.choice(pal.other)),
                                C["Other"])
            elif choice < 0.85:
                for k in range(int(rng.integers(1, 4))):
                    add_two_wheeler(b, x + 0.7 * k, y, rng.uniform(1.3, 1.8) * sign, rng, pal.actors, rider=False,
                                    base_z=base_z)
            else:
                for k in range(int(rng.integers(2, 6))):
                    b.cylinder(x + 1.5 * k, sign * (edge + 0.25), base_z, base_z + 0.9, 0.08, pal.pole, C["Static"])
        for _ in range(int(rng.poisson(style.pedestrian_density))):
            x = rng.uniform(self.x0, self.x1)
            y = sign * (edge + rng.uniform(0.4, max(0.45, width - 0.3)))
            add_pedestrian(self.b, x, y, rng.uniform(0, 2 * np.pi), rng, pal.actors, walking=False, base_z=base_z)

    def _parking_lanes(self) -> None:
        road, rng = self.style.road, self.rng
        for side, present in ((0, road.parking_right), (1, road.parking_left)):
            if not present:
                continue
            edge = self.edges[side]
            y = self._sign(side) * (edge - road.parking_width / 2)
            position = self.x0 + rng.uniform(0, 5)
            while position < self.x1 - 6:
                if rng.random() < 0.65:
                    kind = rng.random()
                    template = add_car if kind < 0.85 else (add_truck if kind < 0.95 else add_bus)
                    length = template(self.b, position + 2.6, y, 0.0 if side == 0 else math.pi, rng, self.pal.actors)
                    position += length + rng.uniform(0.8, 2.5)
                else:
                    position += rng.uniform(4, 12)

    def _bridge(self) -> None:
        rng, b, pal = self.rng, self.b, self.pal
        x = rng.uniform(self.x0 + 8, self.x1 - 8)
        width = rng.uniform(8, 14)
        height = rng.uniform(5.5, 8.0)
        thickness = rng.uniform(0.9, 1.6)
        b.box((x, 0.0, height + thickness / 2), (width, 160.0, thickness), pal.bridge, C["Bridge"])
        for side_y in (-1, 1):
            b.box((x + side_y * (width / 2 - 0.15), 0.0, height + thickness + 0.5), (0.3, 160.0, 1.0), pal.bridge,
                  C["Bridge"])
        for side in (0, 1):
            y = self._sign(side) * (self._outer(side) + rng.uniform(0.8, 2.0))
            b.box_on_ground(x, y, 0.0, (width * 0.6, 1.2, height), pal.bridge, C["Bridge"])

    def _skyline(self) -> None:
        rng, b = self.rng, self.b
        for _ in range(int(rng.integers(0, 3))):
            sign = rng.choice([-1.0, 1.0])
            height = rng.uniform(15, 60)
            b.box((rng.uniform(self.x0, self.x1), sign * rng.uniform(70, 130), height / 2),
                  (rng.uniform(15, 40), rng.uniform(15, 40), height), int(rng.choice(self.pal.facades)), C["Building"])
