"""Event packets between their arrival and the frames they feed: checked, bounded, cut into windows (pure
Python, no rclpy).

A packet's events must lie in time near the packet's header stamp and in space on the sensor;
``check_events`` splits off the others so that they are counted, never buffered: one packet with ``t``
an hour ahead (or nanoseconds stored as FLOAT64 seconds) would otherwise become the buffer's newest
time, and pruning by it would discard every good packet or keep every later one. ``EventWindowBuffer``
holds the recent packets under a hard bound in events (and so in bytes) and cuts the events of a frame's
window out of them. Times are float seconds on the message clock.
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
    """The events of a packet that may be buffered (``events``) and the counts of those split off:
    ``outside_time`` (t not in [stamp - keep_s, stamp + future_s]) and ``outside_sensor`` (x >= width or
    y >= height)."""

    events: np.ndarray
    outside_time: int
    outside_sensor: int


def check_events(events: np.ndarray, stamp: float, keep_s: float, future_s: float,
                 sensor_size: tuple[int, int] | None) -> EventCheck:
    """Split a packet's ``EVENT_DTYPE`` events [N] into those that can feed a frame and the malformed ones.

    ``stamp``: the packet's header stamp (s); ``keep_s``: how long before it an event can still join a
    frame; ``future_s``: how far after it an event may lie; ``sensor_size``: (width, height) px of the
    event sensor, None while unknown (no spatial check then). Time is checked first: an event outside
    both counts as ``outside_time``.
    """
    t = events["t"]
    in_time = (t >= stamp - keep_s) & (t <= stamp + future_s)
    keep = in_time
    outside_sensor = 0
    if sensor_size is not None:
        on_sensor = (events["x"] < sensor_size[0]) & (events["y"] < sensor_size[1])
        outside_sensor = int(np.count_nonzero(in_time & ~on_sensor))
        keep = in_time & on_sensor
    outside_time = len(events) - int(np.count_nonzero(in_time))
    if outside_time == 0 and outside_sensor == 0:
        return EventCheck(events, 0, 0)
    return EventCheck(events[keep], outside_time, outside_sensor)


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
        self._packets: deque[tuple[float, float, np.ndarray]] = deque()
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
        self._packets.append((float(t.min()), float(t.max()), events))
        self._events += len(events)
        newest = max(t_max for _, t_max, _ in self._packets)
        if any(t_max < newest - self.keep_s for _, t_max, _ in self._packets):
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

    def window(self, t_start: float, t_end: float) -> np.ndarray:
        """Events of the packets overlapping [t_start, t_end] (``events_to_frame`` trims to the window)."""
        chosen = [events for t_min, t_max, events in self._packets if t_max >= t_start and t_min <= t_end]
        if not chosen:
            return np.zeros(0, dtype=EVENT_DTYPE)
        return chosen[0] if len(chosen) == 1 else np.concatenate(chosen)

    def clear(self) -> None:
        self._packets.clear()
        self._events = 0
