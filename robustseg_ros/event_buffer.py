"""Event packets between their arrival and the frames they feed: checked, bounded, cut into windows (pure
Python, no rclpy).

A packet's events must lie in time near the packet's header stamp; ``check_events`` splits off the
others on arrival so that they are counted, never buffered: one packet with ``t`` an hour ahead (or
nanoseconds stored as FLOAT64 seconds) would otherwise become the buffer's newest time, and pruning by
it would discard every good packet or keep every later one. ``EventWindowBuffer`` holds the recent
packets under a hard bound in events (and so in bytes) and cuts the events of a frame's window out of
them, checked in space against the sensor size of that frame: where the sensor size follows the
camera's, a packet that arrives just before the first image of a new camera resolution belongs to
frames of the new size. Times are float seconds on the message clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from robustseg_core.sensors import EVENT_DTYPE

#: Malformed-event kinds, as counted on /diagnostics.
EVENT_TIME_KIND = "event time"
EVENT_PIXEL_KIND = "event x/y"


@dataclass(frozen=True)
class EventCheck:
    """The events of a packet that may be buffered (``events``) and how many were split off because their
    ``t`` is not in [stamp - keep_s, stamp + future_s] (``outside_time``)."""

    events: np.ndarray
    outside_time: int


def check_events(events: np.ndarray, stamp: float, keep_s: float, future_s: float) -> EventCheck:
    """Split a packet's ``EVENT_DTYPE`` events [N] into those that can feed a frame and those outside its time.

    ``stamp``: the packet's header stamp (s); ``keep_s``: how long before it an event can still join a
    frame; ``future_s``: how far after it an event may lie.
    """
    t = events["t"]
    in_time = (t >= stamp - keep_s) & (t <= stamp + future_s)
    outside_time = len(events) - int(np.count_nonzero(in_time))
    return EventCheck(events if outside_time == 0 else events[in_time], outside_time)


@dataclass(frozen=True)
class EventWindow:
    """The events of a frame's window (``EVENT_DTYPE`` [N], on the sensor) and how many events of its packets
    this cut found outside the sensor and dropped (``outside_sensor``: x >= width or y >= height)."""

    events: np.ndarray
    outside_sensor: int


class EventWindowBuffer:
    """Recent event packets under a hard bound, from which the events of a time window are cut.

    ``keep_s``: packets whose newest event is older than this before the newest event buffered are pruned;
    ``max_events``: at most this many events (``max_events * EVENT_DTYPE.itemsize`` bytes) are held: the
    oldest packets go first, and a single larger packet is subsampled uniformly.
    """

    def __init__(self, keep_s: float, max_events: int) -> None:
        if not keep_s > 0 or max_events < 1:
            raise ValueError(f"need keep_s > 0 and max_events >= 1, got {keep_s}, {max_events}")
        self.keep_s = float(keep_s)
        self.max_events = int(max_events)
        #: [t_min, t_max, events, the sensor size (width, height) they were last checked against, or None]
        self._packets: deque[list] = deque()
        self._events = 0

    @property
    def events(self) -> int:
        """Events held."""
        return self._events

    @property
    def bytes(self) -> int:
        """Bytes of the events held."""
        return self._events * EVENT_DTYPE.itemsize

    def add(self, events: np.ndarray) -> int:
        """Keep a checked packet (``EVENT_DTYPE`` [N], ``check_events``); returns how many events the bound cost
        (of this packet or of older ones)."""
        if len(events) == 0:
            return 0
        dropped = 0
        if len(events) > self.max_events:
            step = -(-len(events) // self.max_events)
            dropped = len(events) - len(events[::step])
            events = events[::step]
        t = events["t"]
        self._packets.append([float(t.min()), float(t.max()), events, None])
        self._events += len(events)
        newest = max(packet[1] for packet in self._packets)
        if any(packet[1] < newest - self.keep_s for packet in self._packets):
            kept = [packet for packet in self._packets if packet[1] >= newest - self.keep_s]
            self._packets = deque(kept)
            self._events = sum(len(packet[2]) for packet in kept)
        while self._events > self.max_events:
            oldest = min(range(len(self._packets)), key=lambda index: self._packets[index][1])
            removed = self._packets[oldest][2]
            del self._packets[oldest]
            self._events -= len(removed)
            dropped += len(removed)
        return dropped

    def window(self, t_start: float, t_end: float, sensor_size: tuple[int, int]) -> EventWindow:
        """Events of the packets overlapping [t_start, t_end] (``events_to_frame`` trims to the window) that lie on
        a ``sensor_size`` (width, height) px sensor. A packet is checked against a size once: its events off
        the sensor are dropped from the buffer and counted in this cut only."""
        chosen, outside_sensor = [], 0
        for packet in self._packets:
            t_min, t_max, events, checked_size = packet
            if t_max < t_start or t_min > t_end:
                continue
            if checked_size != sensor_size:
                on_sensor = (events["x"] < sensor_size[0]) & (events["y"] < sensor_size[1])
                outside = len(events) - int(np.count_nonzero(on_sensor))
                if outside:
                    events = events[on_sensor]
                    outside_sensor += outside
                    self._events -= outside
                packet[2], packet[3] = events, sensor_size
            if len(events):
                chosen.append(events)
        if not chosen:
            return EventWindow(np.zeros(0, dtype=EVENT_DTYPE), outside_sensor)
        return EventWindow(chosen[0] if len(chosen) == 1 else np.concatenate(chosen), outside_sensor)

    def clear(self) -> None:
        self._packets.clear()
        self._events = 0
