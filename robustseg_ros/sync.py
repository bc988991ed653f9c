"""Which sensor messages make up a frame, without ever waiting for a sensor (pure Python, no rclpy).

``message_filters``' approximate synchroniser emits nothing once one input stops. This module
instead keeps a small stamp-ordered cache per modality and builds a frame from whatever is fresh:

* **Pivot frames.** Each message of the pivot modality (the camera, ``"rgb"``) triggers a frame at
  its stamp, at once, if the pivot is enabled, not marked unhealthy, fresh on arrival
  (``now - stamp <= max_age_s``) and newer than the last frame emitted. Otherwise it is only
  cached (and counted: late or stale pivots are dropped work, not queued work).
* **Timer frames.** ``on_timer(now)`` emits a frame only while the pivot is silent: no pivot frame
  whose stamp is within the pivot's ``max_age_s`` of ``now``, and no usable pivot message (enabled,
  healthy, within ``max_age_s``) cached. The frame stamp is then the newest stamp among the other
  modalities' fresh messages, and no frame is emitted unless that stamp is newer than the last
  frame's, so the same data never makes two frames. A pivot that resumes (or starts late) with
  stamps behind the other sensors' thus stops the timer frames at its first fresh message, and its
  next message newer than the last timer frame makes a pivot frame; it is never shut out.
* **Selection.** In every frame, each modality contributes the cached message nearest the frame
  stamp within its ``tolerance_s`` (ties go to the earlier message), provided it is at most
  ``max_age_s`` old. Age is ``now - header stamp`` on the node clock, so replay under
  ``use_sim_time`` behaves like a live run; everything is a function of the inputs (no wall clock),
  so the same message sequence always gives the same frames.
* **Waiting for a pivot's partners.** ``awaited(stamp, now, periods_s)`` names the modalities whose
  next message, due by their expected period, would join a pivot frame at ``stamp`` better than
  anything cached; the caller may hold the pivot message back (``add`` it later) until they arrive
  or its own deadline passes.

Times are float seconds: ``stamp`` is the message's header stamp, ``received_at``/``now`` the node
clock. Call ``reset()`` when the node clock jumps backwards (a looping bag).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .health import AGE_CONDITIONS, stale_reason

#: How the reason of a modality absent because nothing was cached within its tolerance of the frame begins.
NO_MESSAGE_WITHIN = "no message within"
PIVOT_TRIGGER = "pivot"
TIMER_TRIGGER = "timer"


@dataclass(frozen=True)
class CacheEntry:
    """One cached message: header stamp (s), node-clock arrival time (s) and the payload."""

    stamp: float
    received_at: float
    payload: Any


#: Hard bound on the messages one modality's cache holds, whatever their rate (a 1 kHz event stream keeps
#: about 550 for the default max age and tolerance).
MAX_CACHE_ENTRIES = 2048


class ModalityCache:
    """At least the ``capacity`` newest-stamped messages of one modality, ordered by stamp, and every message
    within ``span_s`` of the newest stamp (up to ``MAX_CACHE_ENTRIES``).

    Out-of-order arrivals are inserted in stamp order; a message with a stamp already cached
    replaces the cached one; past capacity the oldest stamp is evicted once it is more than ``span_s``
    older than the newest. The span keeps a high-rate stream's messages of a frame that arrives late
    (a 1 kHz event stream against a camera 70 ms behind): a count alone would hold only the last 8 ms.
    """

    def __init__(self, capacity: int = 8, span_s: float = 0.0) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if not span_s >= 0:
            raise ValueError(f"span_s must be >= 0, got {span_s}")
        self.capacity = capacity
        self.span_s = float(span_s)
        self._stamps: list[float] = []
        self._entries: list[CacheEntry] = []

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, stamp: float, payload: Any, received_at: float) -> CacheEntry:
        """Cache a message; returns its entry."""
        entry = CacheEntry(float(stamp), float(received_at), payload)
        index = bisect.bisect_left(self._stamps, entry.stamp)
        if index < len(self._stamps) and self._stamps[index] == entry.stamp:
            self._entries[index] = entry
        else:
            self._stamps.insert(index, entry.stamp)
            self._entries.insert(index, entry)
        while len(self._entries) > self.capacity and (
                self._stamps[0] < self._stamps[-1] - self.span_s or len(self._entries) > MAX_CACHE_ENTRIES):
            del self._stamps[0]
            del self._entries[0]
        return entry

    def nearest(self, target_stamp: float, tolerance: float) -> CacheEntry | None:
        """The entry whose stamp is nearest ``target_stamp`` and within ``tolerance`` s (earlier wins ties)."""
        index = bisect.bisect_left(self._stamps, target_stamp)
        candidates = [i for i in (index - 1, index) if 0 <= i < len(self._stamps)]
        if not candidates:
            return None
        best = min(candidates, key=lambda i: (abs(self._stamps[i] - target_stamp), self._stamps[i]))
        if abs(self._stamps[best] - target_stamp) > tolerance:
            return None
        return self._entries[best]

    def latest(self) -> CacheEntry | None:
        """The entry with the newest stamp, or None when empty."""
        return self._entries[-1] if self._entries else None

    def clear(self) -> None:
        """Forget every entry."""
        self._stamps.clear()
        self._entries.clear()


@dataclass(frozen=True)
class ModalitySyncConfig:
    """Per-modality synchronisation settings (seconds).

    ``tolerance_s``: the largest |message stamp - frame stamp| that may join a frame;
    ``max_age_s``: a message older than this (``now - stamp``) is stale and never joins;
    ``cache_size``: messages kept per modality at least (more while within ``max_age_s + tolerance_s`` of the
    newest, see ``ModalityCache``); ``enabled``: False excludes the modality ("disabled").
    """

    tolerance_s: float = 0.05
    max_age_s: float = 0.5
    cache_size: int = 8
    enabled: bool = True

    def __post_init__(self) -> None:
        if not self.tolerance_s >= 0:
            raise ValueError(f"tolerance_s must be >= 0, got {self.tolerance_s}")
        if not self.max_age_s > 0:
            raise ValueError(f"max_age_s must be > 0, got {self.max_age_s}")
        if self.cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {self.cache_size}")


@dataclass(frozen=True)
class SyncedFrame:
    """One frame to process.

    ``stamp``: frame stamp (s; the pivot's stamp, or for timer frames the newest fresh stamp);
    ``now``: node clock when it was built (s); ``trigger``: ``"pivot"`` or ``"timer"``;
    ``modalities``: the modality order; ``entries``: modality -> chosen ``CacheEntry`` or None;
    ``reasons``: modality -> why it is absent (only absent modalities appear).
    """

    stamp: float
    now: float
    trigger: str
    modalities: tuple[str, ...]
    entries: dict[str, CacheEntry | None]
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def presence(self) -> tuple[bool, ...]:
        """Presence mask in modality order."""
        return tuple(self.entries[name] is not None for name in self.modalities)

    @property
    def present(self) -> tuple[str, ...]:
        """Names of the modalities in this frame, in modality order."""
        return tuple(name for name in self.modalities if self.entries[name] is not None)

    def payload(self, modality: str) -> Any:
        """The payload chosen for ``modality``, or None when it is absent."""
        entry = self.entries[modality]
        return None if entry is None else entry.payload


@dataclass
class SyncCounters:
    """What the synchroniser did, for diagnostics."""

    pivot_frames: int = 0
    timer_frames: int = 0
    late_pivots_dropped: int = 0
    stale_pivots_dropped: int = 0


class FrameSynchronizer:
    """Builds ``SyncedFrame``s from per-modality caches on the pivot's beat or a timer (module docstring).

    ``configs`` maps modality -> ``ModalitySyncConfig`` (missing modalities get the defaults);
    ``timer_period_s`` is the period at which the node should call ``on_timer``.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        configs: Mapping[str, ModalitySyncConfig] | None = None,
        *,
        pivot: str = "rgb",
        timer_period_s: float = 0.1,
    ) -> None:
        self.modalities = tuple(modalities)
        if len(set(self.modalities)) != len(self.modalities) or not self.modalities:
            raise ValueError(f"modalities must be distinct and non-empty, got {modalities}")
        if pivot not in self.modalities:
            raise ValueError(f"pivot '{pivot}' is not one of the modalities {self.modalities}")
        configs = dict(configs or {})
        unknown = set(configs) - set(self.modalities)
        if unknown:
            raise ValueError(f"configs for unknown modalities {sorted(unknown)}; modalities are {self.modalities}")
        if not timer_period_s > 0:
            raise ValueError(f"timer_period_s must be > 0, got {timer_period_s}")
        self.pivot = pivot
        self.timer_period_s = float(timer_period_s)
        self.configs = {name: configs.get(name, ModalitySyncConfig()) for name in self.modalities}
        # A message older than max age + tolerance can join no frame: the caches keep what still can.
        self.caches = {name: ModalityCache(config.cache_size, config.max_age_s + config.tolerance_s)
                       for name, config in self.configs.items()}
        self._enabled = {name: self.configs[name].enabled for name in self.modalities}
        self._unhealthy: dict[str, str] = {}
        self._last_frame_stamp: float | None = None
        self._last_pivot_frame_stamp: float | None = None
        self.counters = SyncCounters()

    def set_enabled(self, modality: str, enabled: bool) -> None:
        """Include or exclude a modality from frames (excluded ones are absent with reason "disabled")."""
        self._check_modality(modality)
        self._enabled[modality] = bool(enabled)

    def set_unhealthy(self, modality: str, reason: str | None) -> None:
        """Mark a modality unusable (absent with reason ``"unhealthy: <reason>"``), or clear it with None."""
        self._check_modality(modality)
        if reason is None:
            self._unhealthy.pop(modality, None)
        else:
            self._unhealthy[modality] = reason

    def reset(self) -> None:
        """Forget all messages and frames (after the node clock jumped backwards)."""
        for cache in self.caches.values():
            cache.clear()
        self._last_frame_stamp = None
        self._last_pivot_frame_stamp = None

    def add(self, modality: str, stamp: float, payload: Any, received_at: float) -> SyncedFrame | None:
        """Cache a message; a usable pivot message returns the frame it triggers, otherwise None."""
        self._check_modality(modality)
        entry = self.caches[modality].add(stamp, payload, received_at)
        if modality != self.pivot or not self._pivot_usable():
            return None
        if self._last_frame_stamp is not None and entry.stamp <= self._last_frame_stamp:
            self.counters.late_pivots_dropped += 1
            return None
        if received_at - entry.stamp > self.configs[modality].max_age_s:
            self.counters.stale_pivots_dropped += 1
            return None
        frame = self._build_frame(entry.stamp, float(received_at), PIVOT_TRIGGER)
        self._last_pivot_frame_stamp = entry.stamp
        self.counters.pivot_frames += 1
        return frame

    def on_timer(self, now: float) -> SyncedFrame | None:
        """A frame from the other modalities when the pivot is silent and there is new data; else None."""
        pivot_max_age = self.configs[self.pivot].max_age_s
        if self._last_pivot_frame_stamp is not None and now - self._last_pivot_frame_stamp <= pivot_max_age:
            return None
        if self.usable(self.pivot, now):  # a fresh pivot message came without a frame: its next one makes it
            return None
        newest: float | None = None
        for name in self.modalities:
            if name == self.pivot or self._absence_reason(name, now) is not None:
                continue
            latest = self.caches[name].latest()
            if newest is None or latest.stamp > newest:
                newest = latest.stamp
        if newest is None or (self._last_frame_stamp is not None and newest <= self._last_frame_stamp):
            return None
        frame = self._build_frame(newest, float(now), TIMER_TRIGGER)
        self.counters.timer_frames += 1
        return frame

    def awaited(self, stamp: float, now: float, periods_s: Mapping[str, float]) -> tuple[str, ...]:
        """The modalities of ``periods_s`` (modality -> expected time between messages, s), in its order, worth
        waiting for before a pivot frame at ``stamp`` (s): usable at ``now``, nothing cached within their
        tolerance of ``stamp``, and their next message (newest cached stamp + period) due within it."""
        awaited = []
        for modality, period_s in periods_s.items():
            if modality == self.pivot or not self.usable(modality, now):
                continue
            latest = self.caches[modality].latest()
            tolerance_s = self.configs[modality].tolerance_s
            if latest.stamp >= stamp - tolerance_s:
                continue
            if latest.stamp + period_s <= stamp + tolerance_s:
                awaited.append(modality)
        return tuple(awaited)

    def _pivot_usable(self) -> bool:
        return self._enabled[self.pivot] and self.pivot not in self._unhealthy

    def usable(self, modality: str, now: float) -> bool:
        """Whether ``modality``'s newest message can join a frame at ``now`` (enabled, healthy, young enough)."""
        return self._absence_reason(modality, now) is None

    def _absence_reason(self, modality: str, now: float) -> str | None:
        """Why ``modality`` cannot join any frame at ``now`` (None if its newest message can)."""
        config = self.configs[modality]
        if not self._enabled[modality]:
            return "disabled"
        unhealthy = self._unhealthy.get(modality)
        if unhealthy is not None and unhealthy not in AGE_CONDITIONS:  # what the cache of usable messages cannot show
            return f"unhealthy: {unhealthy}"
        latest = self.caches[modality].latest()
        if latest is None:
            return "never received"
        age = now - latest.stamp
        if age > config.max_age_s:
            return stale_reason(age, config.max_age_s)
        if unhealthy is not None:
            return f"unhealthy: {unhealthy}"
        return None

    def _build_frame(self, stamp: float, now: float, trigger: str) -> SyncedFrame:
        entries: dict[str, CacheEntry | None] = {}
        reasons: dict[str, str] = {}
        for name in self.modalities:
            config = self.configs[name]
            reason = self._absence_reason(name, now)
            entry = None
            if reason is None:
                entry = self.caches[name].nearest(stamp, config.tolerance_s)
                if entry is None:
                    nearest = self.caches[name].nearest(stamp, float("inf"))
                    reason = (f"{NO_MESSAGE_WITHIN} {config.tolerance_s:.2f} s of the frame stamp "
                              f"(nearest {abs(nearest.stamp - stamp):.2f} s away)")
                elif now - entry.stamp > config.max_age_s:
                    reason = (f"stale: nearest message {now - entry.stamp:.2f} s old > max age "
                              f"{config.max_age_s:.2f} s")
                    entry = None
            entries[name] = entry
            if reason is not None:
                reasons[name] = reason
        self._last_frame_stamp = stamp
        return SyncedFrame(stamp, now, trigger, self.modalities, entries, reasons)

    def _check_modality(self, modality: str) -> None:
        if modality not in self.caches:
            raise KeyError(f"unknown modality '{modality}'; modalities are {self.modalities}")
