"""Per-sensor health from message timing and content (pure Python, no rclpy, no wall clock).

Every time is passed in as float seconds on the node clock (``node.get_clock()``), so the same
code runs live and under ``use_sim_time`` replay. ``stamp`` is a message's header stamp,
``received_at``/``now`` the node clock.

States and their ``diagnostic_msgs/DiagnosticStatus`` level:

* OK (level 0, OK): messages arrive on time, at rate, changing, with sane stamps.
* WARN (level 1, WARN): late (age > ``warn_after_periods`` periods), low rate, frozen for a few
  messages, recent stamp anomalies, malformed messages or input limits hit (a cloud subsampled to
  the point budget, the event buffer full); the data is still usable. Also "not fused": the data
  arrives but no frame took it for longer than ``max_age_s``, for a reason other than its health
  (nothing within tolerance of the frames, no camera geometry), which the caller reports.
* DEGRADED (level 1, WARN): messages keep coming but their content is poor for the sensor: its
  quality statistics break a rule of ``robustseg_ros.degradation`` (a blinded or dark camera, a
  noisy depth image, a jittered LiDAR, a flooded or starved event stream). Whether a DEGRADED
  sensor is still fused is the caller's choice (``health.fuse_degraded``).
* STALE (level 3, STALE): the newest usable header stamp is older than ``max_age_s`` (the sensor
  stopped; or its messages still arrive, already that old, through a clock offset or a long delay,
  which the message then says), frozen for many messages, or nothing received yet (within
  ``dead_after_s`` of the start), or messages arrive but none could be used for longer than
  ``max_age_s`` (every one malformed, or without a transform: "unusable: ..."; a sensor that
  publishes is not reported dead). A late message (stamped before the newest one) is a WARN anomaly
  and never makes the sensor STALE: staleness follows the newest stamp.
* DEAD (level 2, ERROR): no message, usable or not, for ``dead_after_s`` ("dead: no message for ..."),
  or none at all within ``dead_after_s`` of the start ("dead: never received ..."). A sensor whose
  unusable messages stop is STALE "unusable: the last message came X s ago, ..." until then.

Age has one definition for health and synchronisation: ``now - header stamp`` decides whether a
sensor's data can still be fused (``sync.FrameSynchronizer``) and whether it is STALE here, so a
sensor is never OK while the fusion leaves it out for age. Arrival time only drives "late" and DEAD
(is the driver still publishing at all).

DEAD maps to ERROR rather than STALE: STALE (3) says "not updated", which the aggregator also
uses for silent reporters; a sensor silent for seconds is a failure that needs attention.
Severity order is OK < WARN < DEGRADED < STALE < DEAD; a status takes the worst active condition and its
message lists every active condition, worst first.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from robustseg_ros.degradation import Degradation, DegradationJudge

DIAGNOSTIC_OK, DIAGNOSTIC_WARN, DIAGNOSTIC_ERROR, DIAGNOSTIC_STALE = 0, 1, 2, 3
DIGEST_SAMPLES = 4096

ZERO_STAMP = "zero_stamp"
FUTURE_STAMP = "future_stamp"
BACKWARDS_STAMP = "backwards_stamp"
REPEATED_STAMP = "repeated_stamp"
STAMP_ANOMALIES = (ZERO_STAMP, FUTURE_STAMP, BACKWARDS_STAMP, REPEATED_STAMP)
#: Conditions judged from usable messages' stamps and arrivals alone, which the synchroniser's cache shows too;
#: the others (``"unusable"``, ``"frozen"``) only the health monitor sees.
AGE_CONDITIONS = frozenset({"never_received", "stale", "dead"})


def stale_reason(age_s: float, max_age_s: float) -> str:
    """The one wording of "too old to fuse", for health and the synchroniser (``age_s = now - stamp``)."""
    return f"stale: last message {age_s:.2f} s old > max age {max_age_s:.2f} s"


class SensorState(Enum):
    """Health of one sensor; ``level`` is the diagnostic_msgs level, ``severity`` orders states."""

    OK = "OK"
    WARN = "WARN"
    DEGRADED = "DEGRADED"
    STALE = "STALE"
    DEAD = "DEAD"

    @property
    def level(self) -> int:
        """diagnostic_msgs/DiagnosticStatus level: OK=0, WARN and DEGRADED -> WARN=1, DEAD -> ERROR=2, STALE=3."""
        return _LEVELS[self]

    @property
    def severity(self) -> int:
        """0 (OK) < 1 (WARN) < 2 (DEGRADED) < 3 (STALE) < 4 (DEAD)."""
        return _SEVERITY[self]

    @classmethod
    def from_level(cls, level: int) -> SensorState:
        """The least severe state a diagnostic level reports (WARN for 1: read the ``state`` value to tell
        DEGRADED apart); ``ValueError`` for other levels."""
        for state, state_level in _LEVELS.items():
            if state_level == level:
                return state
        raise ValueError(f"diagnostic level {level} is not one of {sorted(_LEVELS.values())}")


_LEVELS = {
    SensorState.OK: DIAGNOSTIC_OK,
    SensorState.WARN: DIAGNOSTIC_WARN,
    SensorState.DEGRADED: DIAGNOSTIC_WARN,
    SensorState.STALE: DIAGNOSTIC_STALE,
    SensorState.DEAD: DIAGNOSTIC_ERROR,
}
_SEVERITY = {state: index for index, state in enumerate(SensorState)}


@dataclass(frozen=True)
class HealthConfig:
    """Thresholds for one sensor (seconds, Hz, message counts).

    * ``expected_rate_hz``: nominal publish rate; period = 1 / rate;
    * ``warn_after_periods``: WARN "late" when the last message is older than this many periods;
    * ``max_age_s``: STALE when the last message is older than this;
    * ``dead_after_s``: DEAD when the last message, usable or not (or the start, if none came), is older
      than this;
    * ``rate_window_s``: arrivals of the last ``rate_window_s`` give the measured rate;
    * ``min_rate_fraction``: WARN "low rate" below ``min_rate_fraction * expected_rate_hz``;
    * ``frozen_warn_repeats`` / ``frozen_stale_repeats``: WARN / STALE "frozen" when that many
      messages in a row carry the same payload digest;
    * ``future_tolerance_s``: a stamp later than arrival + this is a "future stamp";
    * ``anomaly_hold_s``: stamp anomalies, malformed messages and input limits keep the state at WARN
      this long.
    """

    expected_rate_hz: float = 10.0
    warn_after_periods: float = 3.0
    max_age_s: float = 0.5
    dead_after_s: float = 5.0
    rate_window_s: float = 2.0
    min_rate_fraction: float = 0.5
    frozen_warn_repeats: int = 3
    frozen_stale_repeats: int = 10
    future_tolerance_s: float = 0.2
    anomaly_hold_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.expected_rate_hz > 0:
            raise ValueError(f"expected_rate_hz must be > 0, got {self.expected_rate_hz}")
        if not 0 < self.max_age_s <= self.dead_after_s:
            raise ValueError(f"need 0 < max_age_s <= dead_after_s, got {self.max_age_s}, {self.dead_after_s}")
        if not (self.warn_after_periods > 0 and self.rate_window_s > 0 and self.anomaly_hold_s >= 0):
            raise ValueError("warn_after_periods and rate_window_s must be > 0, anomaly_hold_s >= 0")
        if not 0 <= self.min_rate_fraction <= 1:
            raise ValueError(f"min_rate_fraction must be in [0, 1], got {self.min_rate_fraction}")
        if not 2 <= self.frozen_warn_repeats <= self.frozen_stale_repeats:
            raise ValueError("need 2 <= frozen_warn_repeats <= frozen_stale_repeats, got "
                             f"{self.frozen_warn_repeats}, {self.frozen_stale_repeats}")
        if not self.future_tolerance_s >= 0:
            raise ValueError(f"future_tolerance_s must be >= 0, got {self.future_tolerance_s}")

    @property
    def period_s(self) -> float:
        """Expected time between messages."""
        return 1.0 / self.expected_rate_hz


@dataclass(frozen=True)
class HealthStatus:
    """One sensor's health at a time.

    ``level``: diagnostic_msgs level (int 0..3); ``message``: the active conditions, worst first
    (``"OK"`` when none); ``values``: key -> value strings for ``diagnostic_msgs/KeyValue``;
    ``conditions``: short names of the active conditions, worst first (``"stale"``, ``"frozen"``...).
    """

    state: SensorState
    level: int
    message: str
    values: dict[str, str]
    conditions: tuple[str, ...] = ()

    @property
    def level_byte(self) -> bytes:
        """``level`` as the one-byte ``bytes`` rclpy uses for DiagnosticStatus.level."""
        return bytes([self.level])

    @property
    def usable(self) -> bool:
        """True for OK, WARN and DEGRADED: the data may be fused (DEGRADED: if the caller chooses to)."""
        return self.state in (SensorState.OK, SensorState.WARN, SensorState.DEGRADED)


def payload_digest(data, *, samples: int = DIGEST_SAMPLES) -> bytes:
    """16-byte BLAKE2b digest of the size and ``samples`` evenly spread bytes (or elements) of ``data``.

    O(samples) whatever the payload size: bytes, bytearray, array.array, memoryview or numpy
    arrays (non-contiguous arrays are sampled element-wise). Meant for frozen-stream detection:
    live sensors differ in the sampled bytes through noise alone; two payloads that differ only
    in unsampled bytes are reported identical.
    """
    digest = hashlib.blake2b(digest_size=16)
    if isinstance(data, np.ndarray):
        digest.update(f"{data.shape}{data.dtype.str}".encode())
        indices = _spread_indices(data.size, samples)
        sample = data.reshape(-1) if indices is None else data.flat[indices]
    else:
        raw = np.frombuffer(data, dtype=np.uint8)
        digest.update(str(raw.size).encode())
        indices = _spread_indices(raw.size, samples)
        sample = raw if indices is None else raw[indices]
    digest.update(np.ascontiguousarray(sample).tobytes())
    return digest.digest()


def _spread_indices(size: int, samples: int) -> np.ndarray | None:
    """``samples`` indices spread evenly over ``range(size)`` (first and last included); None = take all."""
    if size <= samples:
        return None
    return np.linspace(0, size - 1, samples).astype(np.int64)


@dataclass
class _Occurrences:
    count: int = 0
    last_time: float = float("-inf")
    last_text: str = ""


@dataclass
class _Condition:
    state: SensorState
    name: str
    text: str


@dataclass
class _History:
    last_received_at: float | None = None
    last_stamp: float | None = None
    last_nonzero_stamp: float | None = None
    last_latency_s: float | None = None
    last_digest: bytes | None = None
    identical_run: int = 0
    messages: int = 0
    arrivals: deque = field(default_factory=deque)
    last_unusable_at: float | None = None  # a message arrived but could not be used (malformed, no transform)
    unusable_run: int = 0  # such messages since the last usable one


class SensorHealth:
    """Health of one sensor from its messages, errors and (with a ``judge``) the quality of their content;
    ``started_at`` is the node-clock start (s)."""

    def __init__(self, config: HealthConfig | None = None, started_at: float = 0.0,
                 judge: DegradationJudge | None = None) -> None:
        self.config = config or HealthConfig()
        self.started_at = float(started_at)
        self.judge = judge
        self._history = _History()
        self._anomalies: dict[str, _Occurrences] = {kind: _Occurrences() for kind in STAMP_ANOMALIES}
        self._errors: dict[str, _Occurrences] = {}
        self._limits: dict[str, _Occurrences] = {}
        self._not_fused_since: float | None = None  # first frame (node clock, s) of a run of frames without it
        self._not_fused_reason = ""
        self._logged_kinds: set[str] = set()

    @property
    def messages_received(self) -> int:
        """Valid messages recorded since the start (or the last reset)."""
        return self._history.messages

    @property
    def anomaly_counts(self) -> dict[str, int]:
        """Stamp anomalies seen, per kind."""
        return {kind: occurrences.count for kind, occurrences in self._anomalies.items()}

    @property
    def error_counts(self) -> dict[str, int]:
        """Malformed messages (or, for kinds about single events, malformed events) recorded, per kind."""
        return {kind: occurrences.count for kind, occurrences in self._errors.items()}

    @property
    def limit_counts(self) -> dict[str, int]:
        """Input limits hit (a cloud subsampled, events dropped from a full buffer), per kind."""
        return {kind: occurrences.count for kind, occurrences in self._limits.items()}

    def reset(self, now: float) -> None:
        """Start over at ``now`` (after the node clock jumped backwards); kinds already logged stay logged."""
        self.started_at = float(now)
        self._history = _History()
        self._anomalies = {kind: _Occurrences() for kind in STAMP_ANOMALIES}
        self._errors = {}
        self._limits = {}
        self._not_fused_since = None
        if self.judge is not None:
            self.judge.reset()

    def record_message(self, stamp: float, received_at: float, digest: bytes | None = None) -> tuple[str, ...]:
        """Record a valid message; returns the stamp anomalies it shows (kinds from ``STAMP_ANOMALIES``).

        ``digest`` (e.g. ``payload_digest(msg.data)``) enables frozen detection; None leaves the
        frozen count unchanged (use None for event packets: a static scene legitimately gives
        identical empty packets).
        """
        history, config = self._history, self.config
        anomalies = []
        if stamp == 0:
            anomalies.append(ZERO_STAMP)
        else:
            if stamp > received_at + config.future_tolerance_s:
                anomalies.append(FUTURE_STAMP)
            if history.last_nonzero_stamp is not None:
                if stamp < history.last_nonzero_stamp:
                    anomalies.append(BACKWARDS_STAMP)
                elif stamp == history.last_nonzero_stamp:
                    anomalies.append(REPEATED_STAMP)
            if FUTURE_STAMP not in anomalies and BACKWARDS_STAMP not in anomalies:
                # Staleness follows the newest stamp: a late message neither refreshes nor ages the sensor,
                # and one glitched future stamp must not make later good ones "backwards".
                history.last_nonzero_stamp = stamp
        for kind in anomalies:
            occurrences = self._anomalies[kind]
            occurrences.count += 1
            occurrences.last_time = received_at
            occurrences.last_text = f"stamp {stamp:.3f} s received at {received_at:.3f} s"

        if digest is not None:
            history.identical_run = history.identical_run + 1 if digest == history.last_digest else 1
            history.last_digest = digest
        history.last_received_at = received_at
        history.last_stamp = stamp
        if history.last_nonzero_stamp == stamp:
            history.last_latency_s = received_at - stamp
        history.messages += 1
        history.unusable_run = 0
        history.arrivals.append(received_at)
        while history.arrivals and history.arrivals[0] <= received_at - config.rate_window_s:
            history.arrivals.popleft()
        return tuple(anomalies)

    def record_error(self, kind: str, text: str, now: float, count: int = 1) -> bool:
        """Count ``count`` malformed messages (or events) of ``kind`` (e.g. "encoding"); True the first time:
        log it then."""
        return self._count(self._errors, kind, text, now, count)

    def record_unusable(self, now: float) -> None:
        """A message arrived at ``now`` (s) but could not be used at all (its error is counted with
        ``record_error``): the sensor is alive but feeds nothing, which ``status`` tells apart from silence."""
        self._history.last_unusable_at = float(now)
        self._history.unusable_run += 1

    def record_limit(self, kind: str, text: str, now: float, count: int = 1) -> bool:
        """Count ``count`` hits of an input limit ``kind`` (e.g. "point budget"); True the first time: log it."""
        return self._count(self._limits, kind, text, now, count)

    def _count(self, table: dict[str, _Occurrences], kind: str, text: str, now: float, count: int) -> bool:
        occurrences = table.setdefault(kind, _Occurrences())
        occurrences.count += count
        occurrences.last_time = now
        occurrences.last_text = text
        return self.should_log(kind)

    def record_fusion(self, reason: str | None, now: float) -> bool:
        """Whether this sensor's data joined the frame built at ``now`` (s): None when it did or was left out for
        its health (its state says why), else why not (nothing within tolerance of the frame, no camera geometry).
        When no frame took it for longer than ``max_age_s`` (a slower sensor misses frames for less than its
        period) the sensor is WARN "not fused" until a frame takes it again; True the first time: log it then."""
        if reason is None:
            self._not_fused_since = None
            return False
        if self._not_fused_since is None:
            self._not_fused_since = now
        self._not_fused_reason = reason
        return self._not_fused(now) and self.should_log("not_fused")

    def _not_fused(self, now: float) -> bool:
        return self._not_fused_since is not None and now - self._not_fused_since > self.config.max_age_s

    def record_quality(self, values: Mapping[str, float], now: float) -> Degradation | None:
        """Judge one message's quality statistics (``robustseg_core.sensors.quality``) received at ``now`` (s);
        None without a judge."""
        return None if self.judge is None else self.judge.record(values, now)

    def should_log(self, kind: str) -> bool:
        """True the first time it is asked about ``kind``, then False: log each anomaly or error kind once."""
        if kind in self._logged_kinds:
            return False
        self._logged_kinds.add(kind)
        return True

    def measured_rate(self, now: float) -> float | None:
        """Arrival rate (Hz) over the last ``rate_window_s``: (n - 1) / (newest - oldest); None if n < 2."""
        recent = [t for t in self._history.arrivals if now - self.config.rate_window_s < t <= now]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return None
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def status(self, now: float) -> HealthStatus:
        """State, diagnostic level, message and key/values at ``now`` (node clock, s)."""
        conditions = self._age_conditions(now) + self._content_conditions(now)
        conditions.sort(key=lambda condition: -condition.state.severity)
        state = conditions[0].state if conditions else SensorState.OK
        message = "; ".join(condition.text for condition in conditions) or "OK"
        return HealthStatus(state, state.level, message, self._values(now, state),
                            tuple(condition.name for condition in conditions))

    def _age_conditions(self, now: float) -> list[_Condition]:
        config, history = self.config, self._history
        arrivals = [time for time in (history.last_received_at, history.last_unusable_at) if time is not None]
        if not arrivals:
            return self._never_received(now)
        age = now - max(arrivals)  # DEAD asks whether the driver still publishes, usable or not
        if age > config.dead_after_s:
            return [_Condition(SensorState.DEAD, "dead",
                               f"dead: no message for {age:.2f} s (> {config.dead_after_s:.2f} s)")]
        usable_since = history.last_received_at if history.last_received_at is not None else self.started_at
        if history.unusable_run and now - usable_since > config.max_age_s:
            since = ("since start" if history.last_received_at is None
                     else f"for {now - history.last_received_at:.2f} s")
            arriving = ("messages arrive" if age <= config.warn_after_periods * config.period_s
                        else f"the last message came {age:.2f} s ago")
            return [_Condition(SensorState.STALE, "unusable",
                               f"unusable: {arriving}, but none usable {since} ({history.unusable_run} in a "
                               "row malformed)")]
        if history.last_received_at is None:  # only unusable messages, for less than max_age_s
            return self._never_received(now)
        age = now - history.last_received_at
        if history.last_nonzero_stamp is None or now - history.last_nonzero_stamp > config.max_age_s:
            text = ("stale: no message with a usable stamp" if history.last_nonzero_stamp is None
                    else stale_reason(now - history.last_nonzero_stamp, config.max_age_s))
            arriving = age <= config.warn_after_periods * config.period_s
            if arriving and history.last_latency_s is not None and history.last_latency_s > config.max_age_s:
                text += " (messages still arrive: clock offset or delay)"
            return [_Condition(SensorState.STALE, "stale", text)]
        conditions = []
        if age > config.warn_after_periods * config.period_s:
            conditions.append(_Condition(SensorState.WARN, "late",
                                         f"late: last message {age:.2f} s old (expected every "
                                         f"{config.period_s:.2f} s)"))
        rate = self.measured_rate(now)
        minimum_rate = config.min_rate_fraction * config.expected_rate_hz
        if rate is not None and rate < minimum_rate:
            conditions.append(_Condition(SensorState.WARN, "low_rate",
                                         f"low rate: {rate:.2f} Hz < {minimum_rate:.2f} Hz "
                                         f"({config.min_rate_fraction:.0%} of {config.expected_rate_hz:.2f} Hz)"))
        return conditions

    def _never_received(self, now: float) -> list[_Condition]:
        waited = now - self.started_at
        if waited > self.config.dead_after_s:
            return [_Condition(SensorState.DEAD, "dead", f"dead: never received ({waited:.2f} s since start)")]
        return [_Condition(SensorState.STALE, "never_received", f"never received ({waited:.2f} s since start)")]

    def _content_conditions(self, now: float) -> list[_Condition]:
        config, history = self.config, self._history
        conditions = []
        if self.judge is not None and self.judge.degraded:
            conditions.append(_Condition(SensorState.DEGRADED, "degraded",
                                         "degraded: " + "; ".join(self.judge.state().reasons)))
        if history.identical_run >= config.frozen_warn_repeats:
            frozen_state = (SensorState.STALE if history.identical_run >= config.frozen_stale_repeats
                            else SensorState.WARN)
            conditions.append(_Condition(frozen_state, "frozen",
                                         f"frozen: last {history.identical_run} messages identical"))
        anomaly_texts = {
            ZERO_STAMP: "zero stamp",
            FUTURE_STAMP: f"stamp in the future (> {config.future_tolerance_s:.2f} s ahead)",
            BACKWARDS_STAMP: "stamp went backwards",
            REPEATED_STAMP: "stamp repeated",
        }
        for kind, occurrences in self._anomalies.items():
            if now - occurrences.last_time <= config.anomaly_hold_s:
                conditions.append(_Condition(SensorState.WARN, kind,
                                             f"{anomaly_texts[kind]} ({occurrences.count} so far; last: "
                                             f"{occurrences.last_text})"))
        if self._not_fused(now):
            conditions.append(_Condition(SensorState.WARN, "not_fused", f"not fused for {now - self._not_fused_since:.2f}"
                                                                        f" s: {self._not_fused_reason}"))
        for name, table in (("malformed", self._errors), ("limited", self._limits)):
            for kind, occurrences in table.items():
                if now - occurrences.last_time <= config.anomaly_hold_s:
                    conditions.append(_Condition(SensorState.WARN, name, f"{name} {kind} ({occurrences.count} so "
                                                                         f"far): {occurrences.last_text}"))
        return conditions

    def _values(self, now: float, state: SensorState) -> dict[str, str]:
        config, history = self.config, self._history
        rate = self.measured_rate(now)

        def seconds(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.3f}"

        values = {
            "state": state.value,
            "age_s": seconds(None if history.last_received_at is None else now - history.last_received_at),
            "last_stamp_s": seconds(history.last_stamp),
            "latency_s": seconds(history.last_latency_s),
            "rate_hz": "n/a" if rate is None else f"{rate:.2f}",
            "expected_rate_hz": f"{config.expected_rate_hz:.2f}",
            "messages": str(history.messages),
            "identical_in_a_row": str(history.identical_run),
        }
        values.update({f"{kind}s": str(occurrences.count) for kind, occurrences in self._anomalies.items()})
        values["malformed"] = str(sum(occurrences.count for occurrences in self._errors.values()))
        values.update({f"malformed.{kind}": str(occurrences.count) for kind, occurrences in self._errors.items()})
        values.update({f"limited.{kind}": str(occurrences.count) for kind, occurrences in self._limits.items()})
        if self.judge is not None:
            judgement = self.judge.state()
            values.update({f"quality.{metric}": f"{value:.4g}" for metric, value in judgement.values.items()})
            values.update({f"quality_baseline.{metric}": f"{value:.4g}"
                           for metric, value in judgement.baseline.items()})
            if judgement.since is not None:
                values["degraded_since_s"] = f"{judgement.since:.3f}"
        return values


class HealthMonitor:
    """One ``SensorHealth`` per modality (order kept); ``configs`` maps modality -> ``HealthConfig``, ``judges``
    modality -> its ``DegradationJudge`` (modalities without one are not judged on content quality)."""

    def __init__(self, configs: Mapping[str, HealthConfig], started_at: float = 0.0,
                 judges: Mapping[str, DegradationJudge] | None = None) -> None:
        if not configs:
            raise ValueError("HealthMonitor needs at least one modality")
        judges = judges or {}
        self.sensors = {name: SensorHealth(config, started_at, judges.get(name)) for name, config in configs.items()}

    @property
    def modalities(self) -> tuple[str, ...]:
        """Monitored modalities in order."""
        return tuple(self.sensors)

    def __getitem__(self, modality: str) -> SensorHealth:
        return self.sensors[modality]

    def record_message(self, modality: str, stamp: float, received_at: float,
                       digest: bytes | None = None) -> tuple[str, ...]:
        """``SensorHealth.record_message`` for ``modality``."""
        return self.sensors[modality].record_message(stamp, received_at, digest)

    def record_error(self, modality: str, kind: str, text: str, now: float, count: int = 1) -> bool:
        """``SensorHealth.record_error`` for ``modality``; True when this kind should be logged."""
        return self.sensors[modality].record_error(kind, text, now, count)

    def statuses(self, now: float) -> dict[str, HealthStatus]:
        """Status of every modality at ``now``."""
        return {name: sensor.status(now) for name, sensor in self.sensors.items()}

    def reset(self, now: float) -> None:
        """``SensorHealth.reset`` for every modality."""
        for sensor in self.sensors.values():
            sensor.reset(now)


def excluded_modalities(statuses: Mapping[str, HealthStatus]) -> dict[str, str]:
    """Modalities that must not be fused (STALE or DEAD) -> the worst condition's name, e.g. "frozen"."""
    return {name: status.conditions[0] for name, status in statuses.items() if not status.usable}
