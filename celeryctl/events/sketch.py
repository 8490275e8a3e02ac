"""A fixed-size quantile sketch (DDSketch's log-bucket scheme) and fixed histogram buckets.

Why not a library: `ddsketch` (the reference implementation) would do, but its last release is
from 2024, it pulls in `six`, its default sketch grows without bound (the bounded one collapses
its lowest bins, as this one does), and celeryctl also needs plain cumulative buckets for the
Prometheus histograms, which a sketch does not give exactly. The scheme is 40 lines: a value
v > 0 goes to bin ceil(log(v) / log(gamma)) with gamma = (1 + a) / (1 - a); any quantile read
back is within relative accuracy `a` (1 %) of a value that was really observed at that rank.
At most `max_bins` bins are kept (the lowest are merged when a sketch would grow beyond it:
quantiles above the merged range stay within 1 %); with a = 1 % the range 1 ms .. 1 day needs
about 920 bins, so nothing is merged in practice. Memory: one dict of at most `max_bins` ints.
"""

from __future__ import annotations

import math
from bisect import bisect_left

MIN_VALUE = 1e-6  # values at or below this (0 s runtimes) are counted in a zero bin


class Sketch:
    def __init__(self, relative_accuracy: float = 0.01, max_bins: int = 2048) -> None:
        self.gamma = (1 + relative_accuracy) / (1 - relative_accuracy)
        self._log_gamma = math.log(self.gamma)
        self.max_bins = max_bins
        self.bins: dict[int, int] = {}
        self.zero = 0
        self.count = 0
        self.max: float | None = None
        self.min: float | None = None

    def add(self, value: float) -> None:
        if value is None or not math.isfinite(value):
            return
        value = max(0.0, float(value))
        self.count += 1
        self.max = value if self.max is None else max(self.max, value)
        self.min = value if self.min is None else min(self.min, value)
        if value <= MIN_VALUE:
            self.zero += 1
            return
        k = math.ceil(math.log(value) / self._log_gamma)
        self.bins[k] = self.bins.get(k, 0) + 1
        if len(self.bins) > self.max_bins:
            self._collapse()

    def _collapse(self) -> None:
        keys = sorted(self.bins)
        low, nxt = keys[0], keys[1]
        self.bins[nxt] += self.bins.pop(low)

    def quantile(self, q: float) -> float | None:
        """The value at quantile q (0..1), within the relative accuracy; None when empty.
        The top quantile is the exact maximum."""
        if self.count == 0:
            return None
        if q >= 1:
            return self.max
        rank = q * (self.count - 1)
        seen = self.zero
        if rank < seen:
            return 0.0
        for k in sorted(self.bins):
            seen += self.bins[k]
            if seen > rank:
                # the bin's midpoint in relative terms: 2 g^k / (g + 1)
                v = 2 * self.gamma ** k / (self.gamma + 1)
                return min(v, self.max) if self.max is not None else v
        return self.max


class Buckets:
    """Cumulative-ready counts for fixed upper bounds (Prometheus `le`), plus sum and count."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0
        self.count = 0

    def add(self, value: float) -> None:
        if value is None or not math.isfinite(value):
            return
        value = max(0.0, float(value))
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[float, int]]:
        """[(le, count of values <= le)], ending with (inf, count)."""
        out, total = [], 0
        for b, c in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += c
            out.append((b, total))
        return out


# seconds: task runtimes (5 ms .. 10 min) and time waiting for a worker (up to 30 min)
RUNTIME_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                  120.0, 300.0, 600.0)
WAIT_BOUNDS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0,
               1200.0, 1800.0)
