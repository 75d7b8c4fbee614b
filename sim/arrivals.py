"""Scallops dropped on the simulated belt: where each one lands (spacing by the arrival
pattern, lanes, touching and overlapping neighbours), drawn from a seeded generator in order
of arrival, so the sequence never depends on when it is asked for.
"""

from __future__ import annotations

import math

import numpy as np

from scallop.sim.config import SimConfig
from scallop.sim.scene import ScallopSpec


def overlap_share(d: float, r1: float, r2: float) -> float:
    """Area shared by two discs at centre distance d, over the smaller disc's area."""
    if d >= r1 + r2:
        return 0.0
    small = min(r1, r2)
    if d <= abs(r1 - r2):
        return 1.0
    a1 = r1 * r1 * math.acos((d * d + r1 * r1 - r2 * r2) / (2 * d * r1))
    a2 = r2 * r2 * math.acos((d * d + r2 * r2 - r1 * r1) / (2 * d * r2))
    k = 0.5 * math.sqrt(max(0.0, (-d + r1 + r2) * (d + r1 - r2) * (d - r1 + r2) * (d + r1 + r2)))
    return (a1 + a2 - k) / (math.pi * small * small)


class ArrivalStream:
    """Scallops dropped on the belt, generated in order of arrival (decreasing material x)
    from a seeded generator, so the sequence does not depend on when it is asked for."""

    def __init__(self, cfg: SimConfig, seed: int, x_start: float) -> None:
        self.cfg = cfg
        self.seed = seed
        self.rng = np.random.default_rng([seed, 1])
        self.next_x = x_start
        self.next_id = 1
        self.recent: list[ScallopSpec] = []
        self._burst_left = 0
        a = cfg.arrivals
        self.spacing = cfg.belt.speed_mm_s / a.rate_per_s if a.rate_per_s > 0 else math.inf

    def _gap(self) -> float:
        a, S, rng = self.cfg.arrivals, self.spacing, self.rng
        jit = rng.uniform(1 - a.jitter, 1 + a.jitter)
        if a.pattern == "steady":
            return S * jit
        if a.pattern == "gaps":
            p = 0.1
            extra = a.gap_share * S / p if rng.random() < p else 0.0
            return S * (1 - a.gap_share) * jit + extra
        # bursts: k scallops about one diameter apart, then a gap keeping the mean rate
        close = float(np.mean(self.cfg.product.diameter_mm)) * 0.9
        if self._burst_left > 0:
            self._burst_left -= 1
            return close * rng.uniform(0.6, 1.1)
        k = int(rng.integers(a.burst_size[0], a.burst_size[1] + 1))
        self._burst_left = k - 1
        return max(close, k * S - (k - 1) * close) * jit

    def take_until(self, x_min: float) -> list[ScallopSpec]:
        """Every scallop whose material x is above ``x_min`` that has not been made yet."""
        out = []
        if not math.isfinite(self.spacing):
            return out
        while self.next_x > x_min:
            spec = self._place(self.next_x)
            out.append(spec)
            self.recent = [s for s in self.recent if s.x_mm - spec.x_mm < 200.0] + [spec]
            # Spacing counts from the drawn slot (a scallop dropped against its neighbour
            # takes that slot), or from where crowding pushed it: the mean rate holds.
            self.next_x = min(self.next_x, spec.x_mm) - self._gap()
        return out

    def _place(self, x: float) -> ScallopSpec:
        a, rng = self.cfg.arrivals, self.rng
        sid = self.next_id
        self.next_id += 1
        d = float(rng.uniform(*self.cfg.product.diameter_mm))
        lo, hi = a.lane_mm
        prev = self.recent[-1] if self.recent else None
        y = float(rng.uniform(lo, hi))
        if prev is not None and rng.random() < a.touch_share:
            x, y = self._touching(prev, d, lo, hi)
        else:
            x, y = self._free(x, y, d, lo, hi)
        spec_rng = np.random.default_rng([self.seed, 2, sid])
        return ScallopSpec.random(spec_rng, sid, x, y, self.cfg.product, diameter_mm=d)

    def _fits(self, x: float, y: float, d: float, touching: bool = False) -> bool:
        for s in self.recent:
            dist = math.hypot(s.x_mm - x, s.y_mm - y)
            share = overlap_share(dist, d / 2 * 1.04, s.diameter_mm / 2 * 1.04)
            if share > self.cfg.arrivals.max_overlap or (not touching and share > 0):
                return False
        return True

    def _free(self, x: float, y: float, d: float, lo: float, hi: float) -> tuple[float, float]:
        for _ in range(20):
            if self._fits(x, y, d):
                return x, y
            y = float(self.rng.uniform(lo, hi))
        while not self._fits(x, y, d):
            x -= 2.0  # the belt is crowded: wait for room upstream
        return x, y

    def _touching(self, prev: ScallopSpec, d: float, lo: float, hi: float) -> tuple[float, float]:
        r_sum = (prev.diameter_mm + d) / 2
        for _ in range(30):
            ang = self.rng.uniform(np.pi / 2, 3 * np.pi / 2)  # upstream side of the previous one
            dist = r_sum * self.rng.uniform(0.82, 1.0)
            x, y = prev.x_mm + dist * math.cos(ang), prev.y_mm + dist * math.sin(ang)
            if lo <= y <= hi and self._fits(x, y, d, touching=True):
                return x, y
        return self._free(prev.x_mm - r_sum * 1.05, float(self.rng.uniform(lo, hi)), d, lo, hi)
