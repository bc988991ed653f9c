"""The static content of one 40 m chunk of a scene's street, built from (seed, chunk index).

Across the road, each side has (outwards) an optional sidewalk (raised by ``curb_height`` or flush),
then per segment of 10..35 m a "verge" zone and a "back" zone of ground, plus the segment's
objects (buildings, parks, walls, fences, parking lots, canals, rail corridors, open land), street
furniture, parked vehicles, crossing pedestrians, bridges and the skyline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from robustseg_core.sim.actors import (
    MotionBuilder,
    MovingPrimitives,
    add_bus,
    add_car,
    add_pedestrian,
    add_truck,
    add_two_wheeler,
    seed_index,
)
from robustseg_core.sim.primitives import PrimitiveBuilder, PrimitiveSet
from robustseg_core.sim.style import (
    CHUNK_LENGTH,
    SEGMENT_TYPES,
    ZONE_GROUND,
    ZONE_RAIL,
    ZONE_SIDEWALK,
    ZONE_TERRAIN,
    ZONE_WATER,
    C,
)

if TYPE_CHECKING:
    from robustseg_core.sim.scene import Scene



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
