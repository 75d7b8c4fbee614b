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
froze does not leave ghost tracks behind while the evidence builds up.

A frozen or mismatching counter is cleared by ``clear_after`` agreeing frame pairs in a row;
impossible counts by ``clear_after`` plausible frames in a row. With nothing on the belt
nothing can be checked, and nothing is picked either. A belt that really stopped agrees with
a counter that stopped: that is no fault.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scallop.robot.belt import Belt

FROZEN = "frozen"
MISMATCH = "mismatch"
IMPOSSIBLE = "impossible"


@dataclass
class BeltFault:
    kind: str  # FROZEN, MISMATCH or IMPOSSIBLE
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
    ) -> None:
        self.belt = belt
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

    def _compare(self, before: np.ndarray, now: np.ndarray, travel: float) -> bool | None:
        """True: a scallop moved by the counted travel; False: none did and one moved otherwise;
        None: no scallop seen in both frames."""
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
