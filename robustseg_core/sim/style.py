"""What a procedural scene draws once from its seed: the street's layout and style, and its materials.

World frame: x along the road (the ego drives towards +x), y left, z up, ground z = 0. The road
occupies ``right_edge <= y <= left_edge``; lanes for +x traffic lie at y < 0 (right-hand traffic).
``SceneStyle.sample`` draws the layout (lanes, markings, sidewalks, district, densities, camera and
sun); ``make_palette`` draws every material and groups their ids by use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    MaterialTable,
    linear_from_hsv,
    random_color,
)


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



def make_palette(materials: MaterialTable, style: SceneStyle, rng: np.random.Generator) -> Palette:
    """Add the scene's materials to ``materials`` (draws from ``rng`` in a fixed order) and group their ids."""
    m = materials
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
    palette.actors = actor_materials(m, rng)
    return palette

def actor_materials(materials: MaterialTable, rng: np.random.Generator) -> dict:
    """Paints, glass, cargo, cloth and skin materials of the scene's vehicles and people."""
    m = materials
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
