"""Is a sensor that keeps publishing lying? Its quality statistics judged against its own recent history and
absolute bounds, with hysteresis (pure Python, no rclpy, no wall clock).

``robustseg_core.sensors.quality`` measures every message (saturated and black fractions, contrast and
noise of a camera image; valid fraction and roughness of a depth image; point count, coverage and range
noise of a LiDAR scan; the rate of an event packet). ``DegradationJudge`` holds one sensor's rules
(``QUALITY_RULES``) and decides, message by message, whether the sensor is DEGRADED:

* **Relative rules** compare a value with the sensor's baseline: a quantile (the median, unless the
  rule says otherwise) of the metric over the messages of the last ``history_s`` seconds that were
  judged sound. A camera that goes black in daylight is far below its baseline; a camera that has been
  dark since the drive started at night is not, so night is not a fault. No relative rule applies
  before ``MIN_HISTORY`` sound messages. Event rates swing with the scene (in fog they fall to the
  noise floor when nothing passes), so their rules compare with the history's extremes (5th and 95th
  percentiles) instead of its middle, once the history spans ``EVENT_HISTORY_S``. The baseline is
  recomputed at most every ``BASELINE_REFRESH_S``.
* **Absolute rules** hold whatever the history: a camera with most pixels saturated, a depth image
  with almost no valid pixel.
* **Hysteresis.** DEGRADED starts after ``enter_after`` consecutive messages break a rule, and ends
  once no message has broken a relaxed form of the rules it holds (ratios square-rooted, margins
  halved, absolute bounds moved a fifth towards the sound side) for ``clear_s`` seconds, or once no
  message has broken the strict form for ``RELAXED_HOLD_FACTOR * clear_s`` seconds. The relaxed form holds a fault, not
  the sensor: it applies only to the rules broken since the state began, every other rule is judged as
  strictly as ever, and only for a while: a value that stays between the strict and the relaxed bound
  is not hovering at the bound, it is a level the strict test calls sound. Both matter on generated
  drives (``bench/health_survey.py``): an event flood that ended while the scene calmed down was held as
  "starved" against the busy baseline of before the flood (the relaxed low-rate bound sits at 0.45 of
  the 5th percentile, inside a scene's own swing), and a camera whose baseline had taken in an early
  fault it could not see was held "washed out" for the rest of a night drive. Messages judged while
  DEGRADED, or breaking a rule, never enter the baseline.
* **Adaptation.** A lasting change that only relative rules object to ends by itself: after
  ``history_s`` seconds without a sound message the baseline is empty, the relative rules fall
  silent, the state clears, and the new level becomes the baseline. Absolute rules never adapt.

Times are float seconds on the node clock (message arrival).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

#: Sound messages needed before the relative rules apply.
MIN_HISTORY = 5
#: The baseline is recomputed at most this often (s); between, messages are judged against the last one.
BASELINE_REFRESH_S = 0.25
#: The relaxed form holds DEGRADED for at most this many ``clear_s`` after the last strict break. With the
#: defaults (0.5 s) a fault is cleared at most 0.75 s plus one message period after its last bad message, inside
#: the 1 s that ``evaluate_bag`` allows; at 2 (1 s plus a period) a scene slightly rougher than its history
#: held a depth-noise burst past that on 6 of 60 held-out drives (docs/results.md).
RELAXED_HOLD_FACTOR = 1.5


@dataclass(frozen=True)
class QualityRule:
    """One test on one metric of a sensor's quality statistics.

    ``worse``: "high" when large values are bad, "low" when small ones are. ``absolute``: the value beyond
    which the sensor is degraded whatever its history (None: no absolute bound). ``ratio`` and
    ``margin``: relative to the baseline b, the ``quantile`` of the metric's sound history, "high" breaks
    when value > b x ratio and value > b + margin, "low" when value < b / ratio and value < b - margin
    (None: no relative test); the relative test waits until the sound history spans ``min_history_s``
    seconds (and holds ``MIN_HISTORY`` messages). ``label`` names the metric in messages, ``fault`` what
    breaking the rule means.
    """

    metric: str
    label: str
    fault: str
    worse: str
    absolute: float | None = None
    ratio: float | None = None
    margin: float = 0.0
    quantile: float = 0.5
    min_history_s: float = 0.0

    @property
    def baseline_name(self) -> str:
        """``metric``, or ``metric_pNN`` for a baseline other than the median."""
        return self.metric if self.quantile == 0.5 else f"{self.metric}_p{round(self.quantile * 100):02d}"

    def __post_init__(self) -> None:
        if self.worse not in ("high", "low"):
            raise ValueError(f"rule {self.metric}: worse must be 'high' or 'low', got {self.worse!r}")
        if self.ratio is not None and not self.ratio > 1:
            raise ValueError(f"rule {self.metric}: ratio must be > 1, got {self.ratio}")

    def check(self, value: float, baseline: float | None, relaxed: bool) -> str | None:
        """Why ``value`` breaks the rule (None when it does not); ``relaxed``: the looser test that keeps a
        DEGRADED sensor degraded (hysteresis)."""
        high = self.worse == "high"
        if self.absolute is not None:
            bound = self.absolute * ((0.8 if high else 1.25) if relaxed else 1.0)
            if (value > bound) if high else (value < bound):
                return f"{self.fault}: {self.label} {value:.3g} {'>' if high else '<'} {bound:.3g}"
        if self.ratio is None or baseline is None:
            return None
        ratio = math.sqrt(self.ratio) if relaxed else self.ratio
        margin = self.margin / 2.0 if relaxed else self.margin
        if high:
            bound = max(baseline * ratio, baseline + margin)
            broken = value > bound
        else:
            bound = min(baseline / ratio, baseline - margin)
            broken = value < bound
        if not broken:
            return None
        return (f"{self.fault}: {self.label} {value:.3g} {'>' if high else '<'} {bound:.3g} "
                f"(its recent level {baseline:.3g})")


#: Event rules wait for this much sound history (s): a quiet spell early in a drive (fog, a stop) must be in the
#: history before a low rate can be called starved.
EVENT_HISTORY_S = 3.0

#: The rules per sensor (docs/perception_node.md, "Degraded sensors", gives the reasoning and measurements).
QUALITY_RULES: dict[str, tuple[QualityRule, ...]] = {
    "camera": (
        QualityRule("saturated", "saturated fraction", "over-exposed", "high", absolute=0.5, ratio=3.0, margin=0.1),
        QualityRule("black", "black fraction", "under-exposed", "high", absolute=0.95, ratio=3.0, margin=0.3),
        QualityRule("contrast", "contrast", "washed out or dark", "low", ratio=2.5, margin=0.03),
        QualityRule("noise", "noise (grey levels)", "noisy", "high", absolute=40.0, ratio=2.5, margin=3.0),
    ),
    "depth": (
        QualityRule("valid", "valid fraction", "holes", "low", absolute=0.05, ratio=1.5, margin=0.15),
        QualityRule("roughness", "rough pixel pairs", "noisy", "high", absolute=0.6, ratio=3.0, margin=0.15),
    ),
    "lidar": (
        QualityRule("points", "points", "returns missing", "low", ratio=2.0, margin=0.0),
        QualityRule("coverage", "coverage", "view blocked", "low", ratio=1.6, margin=0.05),
        QualityRule("range_noise", "range noise (m)", "jittered", "high", absolute=0.5, ratio=2.5, margin=0.03),
    ),
    "events": (
        QualityRule("rate", "event rate (1/s)", "flooded", "high", ratio=3.0, quantile=0.95,
                    min_history_s=EVENT_HISTORY_S),
        QualityRule("rate", "event rate (1/s)", "starved", "low", ratio=5.0, quantile=0.05,
                    min_history_s=EVENT_HISTORY_S),
    ),
}


@dataclass(frozen=True)
class DegradationConfig:
    """Hysteresis and history of the judgement: ``enter_after`` consecutive bad messages start DEGRADED,
    ``clear_s`` seconds without one (relaxed test), or ``RELAXED_HOLD_FACTOR * clear_s`` without a strict break,
    end it; the baseline covers the last ``history_s`` s."""

    enter_after: int = 2
    clear_s: float = 0.5
    history_s: float = 10.0

    def __post_init__(self) -> None:
        if self.enter_after < 1:
            raise ValueError(f"enter_after must be >= 1, got {self.enter_after}")
        # inf would never clear a state, and keep an unbounded history
        if not (0 <= self.clear_s < math.inf and 0 < self.history_s < math.inf):
            raise ValueError(f"need finite clear_s >= 0 and history_s > 0, got {self.clear_s}, {self.history_s}")


@dataclass(frozen=True)
class Degradation:
    """The judgement after a message: ``degraded``, the broken rules' ``reasons`` (empty when sound),
    ``since`` (node clock, s; None when not degraded), the last ``values`` and the ``baseline`` per metric."""

    degraded: bool
    reasons: tuple[str, ...]
    since: float | None
    values: dict[str, float]
    baseline: dict[str, float]


class DegradationJudge:
    """Judges one sensor's quality statistics message by message (module docstring)."""

    def __init__(self, rules: tuple[QualityRule, ...], config: DegradationConfig | None = None) -> None:
        self.rules = rules
        self.config = config or DegradationConfig()
        self.reset()

    def reset(self) -> None:
        """Forget the history and the state (a restarted replay)."""
        self._history: deque[tuple[float, Mapping[str, float]]] = deque()
        self._consecutive = 0
        self._since: float | None = None
        self._last_broken_at = float("-inf")
        self._last_strict_break_at = float("-inf")
        self._reasons: tuple[str, ...] = ()
        self._held: set[int] = set()  # indices of the rules broken since DEGRADED began: judged relaxed
        self._values: dict[str, float] = {}
        self._baseline: dict[str, float] = {}
        self._baseline_at = float("-inf")

    @property
    def degraded(self) -> bool:
        return self._since is not None

    def baseline(self, now: float) -> dict[str, float]:
        """Each rule's quantile of its metric over the sound messages of the last ``history_s`` s, by
        ``QualityRule.baseline_name``; {} before ``MIN_HISTORY`` of them."""
        while self._history and self._history[0][0] < now - self.config.history_s:
            self._history.popleft()
        if len(self._history) < MIN_HISTORY:
            return {}
        span = now - self._history[0][0]
        rules = [rule for rule in self.rules if span >= rule.min_history_s]
        metrics = sorted({rule.metric for rule in rules})
        quantiles = sorted({rule.quantile for rule in rules})
        history = np.array([[values[metric] for metric in metrics] for _, values in self._history])
        table = np.quantile(history, quantiles, axis=0)  # [quantile, metric]
        return {rule.baseline_name: float(table[quantiles.index(rule.quantile), metrics.index(rule.metric)])
                for rule in rules}

    def record(self, values: Mapping[str, float], now: float) -> Degradation:
        """Judge one message's statistics ``values`` (metric -> value) received at ``now`` (s)."""
        if now - self._baseline_at >= BASELINE_REFRESH_S or now < self._baseline_at or (
                not self._baseline and len(self._history) >= MIN_HISTORY):
            self._baseline, self._baseline_at = self.baseline(now), now
        strict = self._broken(values, range(len(self.rules)), relaxed=False)
        held = self._broken(values, sorted(self._held - strict.keys()), relaxed=True)
        self._values = dict(values)
        if strict:  # only strict breaks count towards entering DEGRADED
            self._last_strict_break_at = now
            self._consecutive += 1
        else:
            self._consecutive = 0
        if strict or held:
            self._last_broken_at = now
            self._reasons = tuple(reason for _, reason in sorted({**strict, **held}.items()))
            if self._since is None and self._consecutive >= self.config.enter_after:
                self._since = now
            if self._since is not None:
                self._held.update(strict)
        if self._since is not None and (
                (not (strict or held) and now - self._last_broken_at >= self.config.clear_s)
                or (not strict and now - self._last_strict_break_at >= RELAXED_HOLD_FACTOR * self.config.clear_s)):
            self._since = None
        if self._since is None:
            self._held.clear()
            if not (strict or held):
                self._reasons = ()
                self._history.append((now, self._values))
        return self.state()

    def _broken(self, values: Mapping[str, float], indices: Iterable[int], relaxed: bool) -> dict[int, str]:
        """Rule index -> why ``values`` break it, for the rules ``indices`` judged against the current baseline."""
        return {index: reason for index in indices
                if (reason := self.rules[index].check(values[self.rules[index].metric],
                                                      self._baseline.get(self.rules[index].baseline_name),
                                                      relaxed=relaxed)) is not None}

    def state(self) -> Degradation:
        """The judgement after the last message, with the baseline it was judged against."""
        return Degradation(self.degraded, self._reasons if self.degraded else (), self._since, dict(self._values),
                           dict(self._baseline))
