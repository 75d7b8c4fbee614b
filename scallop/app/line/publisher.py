"""What the line shows and keeps: the latest frame for the screen, and the record.

The publisher is called outside every control lock: JPEG encoding and record writes (a queue
put each) never hold up a decision or an arm. It keeps the newest analysed frame and its
detections, encodes the screen's JPEG on demand (cached per frame), and turns finished
:class:`~scallop.app.line.ledger.ScallopOutcome` objects into record rows.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from scallop.app.line.ledger import GRADE_ADDUCTOR_HIT, GRADE_URO_REMOVED, ScallopOutcome, pull_angle_deg
from scallop.app.line.states import Result
from scallop.robot.belt import Belt
from scallop.vision.annotate import draw
from scallop.vision.detections import REASON_AMBIGUOUS, Detections


class Publisher:
    def __init__(self, belt: Belt, record=None, snapshot_doubtful: bool = True, wall_clock=time.time) -> None:
        self.belt = belt
        self.wall_clock = wall_clock  # the line clock's wall time: a simulated run's rows span its virtual time
        self.record = record
        self.snapshot_doubtful = snapshot_doubtful
        self._lock = threading.Lock()
        self._latest: tuple[np.ndarray, Detections] | None = None
        self._latest_jpeg: tuple[int, bytes] | None = None
        self._frame_no = 0
        # Called with every list of finished scallops (the frame capture's outcomes), before the record.
        self.listeners: list = []

    # ------------------------------------------------------------------ frames
    def frame(self, image: np.ndarray, dets: Detections) -> None:
        with self._lock:
            self._latest = (image, dets)
            self._frame_no += 1

    def latest_frame(self) -> tuple[np.ndarray, Detections] | None:
        """The last analysed frame (BGR) and its detections."""
        with self._lock:
            return self._latest

    def jpeg(self, annotated: bool = True) -> bytes | None:
        latest = self.latest_frame()
        if latest is None:
            return None
        img, dets = latest
        if annotated:
            # Numbers only (the uro's confidence): the picture carries no words, so it reads the
            # same in every language; the screen's legend says what the outline colours mean.
            img = draw(img, dets, labels=[f"{c:.2f}" for c in dets.uro_confidence])
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        return buf.tobytes() if ok else None

    def latest_jpeg(self) -> bytes | None:
        # Encoded on demand (the screen asks a few times a second), not in the frame loop.
        with self._lock:
            no = self._frame_no
            cached = self._latest_jpeg
        if cached is not None and cached[0] == no:
            return cached[1]
        jpg = self.jpeg(annotated=True)
        if jpg is not None:
            with self._lock:
                self._latest_jpeg = (no, jpg)
        return jpg

    # ------------------------------------------------------------------ the record
    def outcomes(self, done: list[ScallopOutcome]) -> None:
        for fn in self.listeners:
            fn(done)
        if self.record is None:
            return
        for oc in done:
            self._write(oc)

    def _write(self, oc: ScallopOutcome) -> None:
        from scallop.app.record import ScallopRecord

        v = oc.decision.view
        t = oc.decision.track
        grasp = v.grasp_uv
        radius = t.radius_mm
        rec = ScallopRecord(
            track_id=int(oc.track_id),
            time=self.wall_clock(),
            encoder_mm=float(self.belt.mm(v.encoder)),
            result=oc.result,
            skip_reason=oc.reason if oc.result == Result.SKIPPED else "",
            arm=oc.arm if oc.result != Result.SKIPPED else "",
            x_mm=float(t.u),
            y_mm=float(t.v),
            views=len(t.views),
            uro_found=bool(v.uro_found),
            uro_score=float(v.confidence),
            score=_finite(v.score),
            diameter_mm=None if radius is None else 2.0 * radius,
            uro_x_mm=None if v.uro_uv is None else float(v.uro_uv[0]),
            uro_y_mm=None if v.uro_uv is None else float(v.uro_uv[1]),
            grasp_x_mm=None if grasp is None else float(grasp[0]),
            grasp_y_mm=None if grasp is None else float(grasp[1]),
            pull_angle_deg=pull_angle_deg(v.pull_dir),
            uro_removed=None if oc.grade is None else oc.grade == GRADE_URO_REMOVED,
            adductor_hit=None if oc.grade is None else oc.grade == GRADE_ADDUCTOR_HIT,
            doubtful=oc.result == Result.FAILED
            or (oc.grade not in (None, GRADE_URO_REMOVED))
            or oc.reason == REASON_AMBIGUOUS,
            detail={k: v for k, v in oc.extra.items() if isinstance(v, (int, float, str, bool))}
            | ({"grade": oc.grade} if oc.grade else {})
            | ({"reason": oc.reason} if oc.reason else {}),
            disposition=str(oc.extra.get("disposition", "")),
        )
        snap = self.jpeg(annotated=False) if rec.doubtful and self.snapshot_doubtful else None
        self.record.scallop(rec, snapshot_jpeg=snap)

    def say_how_the_last_run_ended(self, alarms) -> None:
        """After a crash, a kill or a power cut the screen says so when the line comes back."""
        prev = getattr(self.record, "previous_run", None)
        if not prev or not prev["crashed"]:
            return
        import datetime

        when = datetime.datetime.fromtimestamp(prev["ended"]).strftime("%Y-%m-%d %H:%M:%S") if prev["ended"] else "?"
        unknown = prev["unknown_picks"]
        alarms.raise_(
            "line.restarted",
            "warning",
            "line",
            f"the line program stopped without closing at {when} (power cut, crash or kill) and started again"
            + (f"; {unknown} picks in flight then have an unknown outcome" if unknown else "")
            + ": check the scallops of that time; the line waits for Start",
        )

    def event(self, kind: str, user: str, detail: dict | None = None) -> None:
        if self.record is not None:
            self.record.event(kind, user, detail)

    def alarm(self, alarm) -> None:
        if self.record is not None:
            self.record.alarm(alarm)


def _finite(v: float) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None
