"""Does the belt encoder agree with what the camera sees?

A counter can fail without an error: a PLC program stops and the register keeps its last
value, a prescaler is changed, a 16-bit counter is read too seldom and rolls over unseen.
The counts then still arrive, and every pick planned on them lands in the wrong place. The
camera is the independent witness: a scallop rides the belt rigidly, so between two frames
its centre moves along the belt by exactly the belt travel the counts say.

:class:`BeltCheck` compares the two on every analysed frame:

* **impossible counts** (the counts alone): the belt would have run faster than
  ``max_speed_mm_s`` or backwards by more than ``backward_mm`` between two frames;
* **frozen / mismatch** (counts against the image): whole scallops (not cut by the image
  border) seen in two successive frames at the same place across the belt are paired; when
  no pair moved by the counted travel and some pair moved otherwise, that frame pair
  *disagrees*. ``fault_after`` disagreeing frame pairs in a row (frames with no pair do not
  count either way) are a fault: "frozen" when the counts did not move, "mismatch" otherwise.

Until a fault is confirmed, a frame pair that disagrees makes the counts *suspect* (and they
stay so until a pair agrees): the line tracks nothing on suspect counts, so a counter that
froze does not leave ghost tracks behind while the evidence builds up, and the reject gate
diverts what was under the camera in such a frame (no one decided on it). Only scallops the
counted travel keeps whole in view in both frames are paired (``view_x``, ``radius_mm``): one
leaving the view would otherwise be paired with a new one entering its lane.

A frozen or mismatching counter is cleared by ``clear_after`` agreeing frame pairs in a row;
impossible counts by ``clear_after`` plausible frames in a row. With nothing on the belt
nothing can be checked, and nothing is picked either. A belt that really stopped agrees with
a counter that stopped: that is no fault.

**Scale** (a drift the per-frame tolerance lets through): once per ``scale_span_mm`` of counted
travel, every whole scallop is paired with its sighting in the newest frame at least that far
back, and the ratio of the two distances (camera millimetres over counted millimetres) goes into a
window of the last ``scale_samples`` (sampling by travel, not by frame: a stopped belt adds no
copies of one pair, nor a fast camera forty of one scallop). Their median is ``scale_ratio``: 1
when the camera's calibration and the encoder's millimetres per count agree. Two limits make the
*scale* fault (once ``scale_min_samples`` are in):

* off 1 by more than ``scale_limit`` (5 %): the line was wrong from its start (another set-up's
  calibration file, a camera moved while the line was off);
* off the run's own first reading (``scale_baseline``, the median of its first
  ``scale_samples`` pairs with no fault) by more than ``scale_drift`` (2.5 %): it changed while
  the line ran (a camera knocked, refocused, a wheel starting to slip).

The median turns only when half the window is new (about 10 s at a pair a second on a line,
picks landing off meanwhile), so the latest pairs are watched too: at least
``scale_fast_pairs`` from at least ``scale_fast_events`` sightings, all past one of the limits
the same way, are the fault at once.

Either way the picks go where the uros are not: a camera off in scale misplaces every target and
moves the vision's millimetre thresholds (4 % already put jaws on adductors in the simulator), a
slipping wheel misplaces every pick downstream in proportion to the distance to the arm. It
clears on fresh pairs only, once their median is within half of both limits. A first reading
more than ``scale_drift`` off 1 is suspect itself (``scale_warning``: a warning that the line
still picks); when a "changed" fault then meets fresh pairs within half the drift of 1, that
reading came from a camera moved before the run and set back since: it is dropped
(``rebased``), the fault clears, and the next fresh pairs make the run's reading.

Why two limits: the line maps scallop centres on the belt plane, and the scallops' outlines lie
above it, so a real line reads a ratio a little above 1 (camera height over camera height less the
outline's height: 1.7 % for 10 mm at 600 mm). Against 1 only a limit wide enough for that can be
set; against the run's own reading, a tight one.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from scallop.robot.belt import Belt

FROZEN = "frozen"
MISMATCH = "mismatch"
IMPOSSIBLE = "impossible"
SCALE = "scale"


def _pct(share: float, limit: float) -> str:
    """``share`` in percent with its sign, one decimal, or two where one would read as the
    limit itself ("+5.0 % ... allowed ±5 %" for 5.04 % over a limit of 5)."""
    one = f"{100 * share:+.1f}"
    return f"{100 * share:+.2f}" if abs(float(one)) == round(100 * limit, 1) else one


@dataclass
class BeltFault:
    kind: str  # FROZEN, MISMATCH, IMPOSSIBLE or SCALE
    text: str  # the operator's words


class BeltCheck:
    def __init__(
        self,
        belt: Belt,
        max_speed_mm_s: float = 2000.0,
        backward_mm: float = 5.0,
        pair_dy_mm: float = 4.0,
        tol_mm: float = 5.0,
        tol_share: float = 0.05,
        fault_after: int = 3,
        clear_after: int = 3,
        scale_span_mm: float = 60.0,
        scale_pair_share: float = 0.2,
        scale_samples: int = 24,
        scale_min_samples: int = 12,
        scale_limit: float = 0.05,
        scale_drift: float = 0.025,
        scale_fast_pairs: int = 5,
        scale_fast_events: int = 3,
        view_x: tuple[float, float] | None = None,
        radius_mm: float = 0.0,
        kept_baseline: float | None = None,
        kept_note: str = "",
    ) -> None:
        self.belt = belt
        # The belt-frame x the image covers, and the largest scallop radius: a scallop that the
        # counted travel takes (partly) out of the view is no evidence by its absence.
        self.view_x = view_x
        self.radius_mm = radius_mm
        self.scale_span_mm = scale_span_mm
        self.scale_pair_share = scale_pair_share
        self.scale_samples = scale_samples
        self.scale_min_samples = scale_min_samples
        self.scale_limit = scale_limit
        self.scale_drift = scale_drift
        self.scale_fault: BeltFault | None = None
        self.scale_ratio: float | None = None  # camera mm / counted mm, median of the window
        # The run's first reading, or the one an earlier run of this calibration kept (``kept_note``
        # says when): a camera moved while the line was off is then held to the tight limit too.
        self.scale_baseline: float | None = kept_baseline
        self._since = f"the reading kept for this calibration ({kept_note})" if kept_baseline else ""
        self.scale_warning = ""  # words when that reading is off 1 by more than the drift
        self.rebased = 0  # first readings dropped: taken from a camera moved, set back since
        self._ratios: deque[float] = deque(maxlen=scale_samples)
        self.scale_fast_pairs = scale_fast_pairs
        self.scale_fast_events = scale_fast_events
        # The pairs of each of the latest sightings (enough for the fast check whatever their sizes).
        self._recent: deque[list[float]] = deque(maxlen=max(scale_fast_pairs, scale_fast_events))
        self._first: list[float] = []  # the samples the baseline is taken from
        self._sampled_at: int | None = None  # the count of the last frame that gave samples
        self._history: deque[tuple[int, np.ndarray]] = deque(maxlen=512)
        self.max_speed_mm_s = max_speed_mm_s
        self.backward_mm = backward_mm
        self.pair_dy_mm = pair_dy_mm
        self.tol_mm = tol_mm
        self.tol_share = tol_share
        self.fault_after = fault_after
        self.clear_after = clear_after
        self.fault: BeltFault | None = None
        self.suspect = False  # the last frame pair with evidence disagreed
        self._prev: tuple[float, int, np.ndarray] | None = None
        self._disagree = 0
        self._agree = 0
        self._plausible = 0
        self._last_disagreement = ""
        self.pairs_checked = 0

    @property
    def faults(self) -> list[BeltFault]:
        """Every fault that holds now: the counts' own, and the scale's."""
        return [f for f in (self.fault, self.scale_fault) if f is not None]

    @property
    def trusted(self) -> bool:
        """Counts may be tracked on: no fault, not suspect."""
        return self.fault is None and not self.suspect

    def update(self, t: float, count: int, centers_mm: np.ndarray) -> BeltFault | None:
        """One analysed frame: its time, belt count (direction applied) and the (N, 2) belt-frame
        centres of the whole scallops in it. Returns the fault that holds now, or None."""
        centers = np.asarray(centers_mm, dtype=np.float64).reshape(-1, 2)
        prev, self._prev = self._prev, (t, int(count), centers)
        if prev is None or t <= prev[0]:
            return self.fault
        dt = t - prev[0]
        travel = self.belt.mm(count - prev[1])
        if travel < -self.backward_mm or travel > self.max_speed_mm_s * dt:
            self._agree = self._plausible = 0
            self.fault = BeltFault(
                IMPOSSIBLE,
                f"belt encoder counts jumped {count - prev[1]:+d} ({travel:+.0f} mm) in {dt:.3f} s: the belt "
                f"cannot move so (counter reset, wrong register, or a 16-bit counter read too seldom); "
                f"picking stopped",
            )
            return self.fault
        self._plausible += 1
        if self.fault is not None and self.fault.kind == IMPOSSIBLE and self._plausible >= self.clear_after:
            self.fault = None
        self._scale(int(count), centers)
        verdict = self._compare(prev[2], centers, travel)
        if verdict is True:
            self.suspect = False
            self._agree += 1
            self._disagree = 0
            if self.fault is not None and self._agree >= self.clear_after:
                self.fault = None
        elif verdict is False:
            self.suspect = True
            self._disagree += 1
            self._agree = 0
            if self._disagree >= self.fault_after:
                kind = FROZEN if abs(travel) < 1.0 else MISMATCH
                what = (
                    "belt encoder count is not changing while the camera sees the belt move"
                    if kind == FROZEN
                    else "belt encoder disagrees with the camera about how far the belt moved"
                )
                self.fault = BeltFault(
                    kind, f"{what} ({self._last_disagreement}): counter frozen or misread; picking stopped"
                )
        return self.fault

    def _scale(self, count: int, centers: np.ndarray) -> None:
        """Pairs over at least ``scale_span_mm`` of travel into the window; the scale fault."""
        self._history.append((count, centers))
        if self._sampled_at is not None and abs(self.belt.mm(count - self._sampled_at)) < self.scale_span_mm:
            return
        ref = None
        for i in range(len(self._history) - 2, -1, -1):
            travel = self.belt.mm(count - self._history[i][0])
            if abs(travel) >= self.scale_span_mm:
                ref = (travel, self._history[i][1])
                for _ in range(i):  # older frames are never the newest far enough back again
                    self._history.popleft()
                break
        if ref is None or not len(centers) or not len(ref[1]):
            return
        travel, before = ref
        dx = centers[:, None, 0] - before[None, :, 0]
        ok = (np.abs(centers[:, None, 1] - before[None, :, 1]) < self.pair_dy_mm) & (
            np.abs(dx - travel) <= self.scale_pair_share * abs(travel)
        )
        # Only a scallop with exactly one candidate, itself no other's candidate: two scallops
        # in one lane a pair could mix up would bias the median.
        ok &= (ok.sum(1) == 1)[:, None] & (ok.sum(0) == 1)[None, :]
        ratios = (dx[ok] / travel).tolist()
        if not ratios:
            return
        self._sampled_at = count
        self._ratios.extend(ratios)
        self._recent.append(ratios)
        if self.scale_fault is None and self.scale_baseline is None:
            self._first.extend(ratios)
        if len(self._ratios) < self.scale_min_samples:
            return
        self.scale_ratio = ratio = float(np.median(self._ratios))
        if self.scale_baseline is None and len(self._first) >= self.scale_samples:
            first = float(np.median(self._first))
            if abs(first - 1.0) <= self.scale_limit:
                self.scale_baseline = first
            self._first.clear()
        off = ratio - 1.0
        moved = 0.0 if self.scale_baseline is None else ratio / self.scale_baseline - 1.0
        fast = self._step() if self.scale_fault is None else []
        if fast:
            # The recent pairs agree on a step the window's median has not turned to yet: said with
            # their median, so the fault names the scale the camera has now.
            n = len(fast)
            ratio = float(np.median(fast))
            off = ratio - 1.0
            moved = 0.0 if self.scale_baseline is None else ratio / self.scale_baseline - 1.0
        if self.scale_fault is None and (fast or abs(off) > self.scale_limit or abs(moved) > self.scale_drift):
            pairs = (
                f"median of {n} recent scallop pairs, each off the same way"
                if fast
                else (f"median of {len(self._ratios)} scallop pairs")
            )
            since = (
                f", {_pct(moved, self.scale_drift)} % since {self._since or 'the start of this run'} "
                f"(allowed ±{100 * self.scale_drift:g} %)"
                if self.scale_baseline is not None and abs(moved) > self.scale_drift
                else f" (allowed ±{100 * self.scale_limit:g} %)"
            )
            self.scale_fault = BeltFault(
                SCALE,
                f"camera sees the belt move {_pct(off, self.scale_limit)} % {'farther' if off > 0 else 'less far'} than the "
                f"encoder counts{since}, {pairs} over {abs(travel):.0f} mm of "
                "travel: the camera moved or its calibration is not this set-up's, or the encoder's millimetres "
                "per count changed (a slipping wheel); picks would land off the uros",
            )
            self._ratios.clear()  # it is taken back on fresh pairs only
            self._first.clear()
            self._recent.clear()
        elif self.scale_fault is not None and abs(off) <= self.scale_limit / 2 and abs(moved) <= self.scale_drift / 2:
            self.scale_fault = None
        elif (
            self.scale_fault is not None
            and self.scale_baseline is not None
            and abs(self.scale_baseline - 1.0) > self.scale_drift
            and abs(off) <= self.scale_drift / 2
        ):
            # The run's first reading was itself off the calibration by more than the drift, and
            # fresh pairs now agree with the calibration: that reading came from a camera already
            # moved (set back since), not from this set-up. It is dropped and taken again.
            self.scale_fault = None
            self.scale_baseline = None
            self._since = ""
            self.rebased += 1
        self.scale_warning = self._start_warning()

    def _step(self) -> list[float]:
        """The pairs of the latest sightings, at least ``scale_fast_pairs`` of them from at least
        ``scale_fast_events`` sightings, when all are off the run's reading by more than the drift,
        or off 1 by more than the limit, the same way ([] otherwise): a knocked camera is stopped in
        a few seconds rather than when half the window has turned (about 10 s at a pair a second;
        picks land off meanwhile). One odd frame is one sighting, never enough; noise of a few
        tenths of a percent a pair never puts five in a row past 2.5 %."""
        recent: list[float] = []
        for k, batch in enumerate(reversed(self._recent), start=1):
            recent += batch
            if k >= self.scale_fast_events and len(recent) >= self.scale_fast_pairs:
                break
        else:
            return []
        r = np.array(recent)
        if np.all(r - 1.0 > self.scale_limit) or np.all(1.0 - r > self.scale_limit):
            return recent
        if self.scale_baseline is None:
            return []
        moved = r / self.scale_baseline - 1.0
        return recent if np.all(moved > self.scale_drift) or np.all(-moved > self.scale_drift) else []

    def _start_warning(self) -> str:
        """Words for a run whose first reading is off the calibration by more than the drift
        (within the 5 % it still picks: parallax alone can read so on some set-ups), "" if not."""
        b = self.scale_baseline
        if b is None or abs(b - 1.0) <= self.scale_drift:
            return ""
        what = self._since or "the belt scale this run read at its start"
        return (
            f"{what} is {100 * (b - 1.0):+.1f} % off the calibration (camera "
            f"millimetres over encoder millimetres {b:.3f}; more than ±{100 * self.scale_drift:g} % is more than "
            "parallax should give): if the camera was moved or refocused, or the encoder wheel changed, the picks "
            "land off the uros; have the camera's calibration and the encoder's millimetres per count checked"
        )

    def _compare(self, before: np.ndarray, now: np.ndarray, travel: float) -> bool | None:
        """True: a scallop moved by the counted travel; False: none did and one moved otherwise;
        None: no scallop seen in both frames."""
        if self.view_x is not None:
            lo, hi = self.view_x
            # Only the scallops the counts say are whole in both frames can be paired: one that
            # left (or entered) the view meanwhile would be paired with another in its lane.
            before = before[
                (before[:, 0] + travel + self.radius_mm <= hi) & (before[:, 0] + travel - self.radius_mm >= lo)
            ]
            now = now[(now[:, 0] - travel - self.radius_mm >= lo) & (now[:, 0] - travel + self.radius_mm <= hi)]
        if not len(before) or not len(now):
            return None
        dx = now[:, None, 0] - before[None, :, 0]
        same_lane = np.abs(now[:, None, 1] - before[None, :, 1]) < self.pair_dy_mm
        if not same_lane.any():
            return None
        self.pairs_checked += 1
        off = np.abs(dx - travel)[same_lane]
        if (off <= self.tol_mm + self.tol_share * abs(travel)).any():
            return True
        moved = dx[same_lane][np.argmin(off)]
        self._last_disagreement = f"counts {travel:+.0f} mm, image {moved:+.0f} mm"
        return False
