"""Shadow mode: a candidate model runs beside the live one on a sample of the same frames,
never sending a pick, and the two are compared.

The frame loop offers each analysed frame (:meth:`Shadow.offer`: no work, no wait): the
shadow takes it only when it is this frame's turn (``share`` of the frames) and its own thread
is idle, else the frame is skipped and counted. The thread runs the candidate with one
onnxruntime thread at a lower scheduling priority (nice 10), and after each frame it rests in
proportion to the time it took, so it uses at most ``cpu_share`` of one core on average: the
line PC has two cores and the live model keeps them. ``scallop bench shadow`` measures what it
costs the live loop.

Agreement, per scallop (detections matched by centre within ``MATCH_MM``): the verdict (pick,
or the reason not to) is the same; for scallops both would pick, the grasps lie within
``GRASP_MM`` of each other. A frame with any disagreement is handed to the capture.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("scallop.shadow")

MATCH_MM = 10.0  # detections closer than this (centres) are the same scallop
GRASP_MM = 1.0  # grasps this close agree (the uro tolerance of the scorer)
NICE = 10


@dataclass
class FrameAgreement:
    scallops: int = 0  # scallops seen by either model
    verdicts_agree: int = 0
    live_only: int = 0
    shadow_only: int = 0
    verdict_differs: int = 0
    grasps_compared: int = 0
    grasps_agree: int = 0

    @property
    def disagrees(self) -> bool:
        return self.verdicts_agree < self.scallops or self.grasps_agree < self.grasps_compared


def _verdict(dets, i: int) -> str:
    return "pick" if dets.pickable[i] else str(dets.reason[i])


def compare(live, cand, mm_per_px: float) -> FrameAgreement:
    """Match the two models' detections of one frame and count what they agree on."""
    a = FrameAgreement()
    nl, nc = len(live), len(cand)
    used: set[int] = set()
    if nl and nc:
        d = np.linalg.norm(live.center_px[:, None, :] - cand.center_px[None, :, :], axis=2) * mm_per_px
        pairs = sorted((d[i, j], i, j) for i in range(nl) for j in range(nc) if d[i, j] <= MATCH_MM)
        taken_l: set[int] = set()
        for _, i, j in pairs:
            if i in taken_l or j in used:
                continue
            taken_l.add(i)
            used.add(j)
            a.scallops += 1
            vl, vc = _verdict(live, i), _verdict(cand, j)
            if vl == vc:
                a.verdicts_agree += 1
            else:
                a.verdict_differs += 1
            if vl == vc == "pick":
                a.grasps_compared += 1
                if np.linalg.norm(live.grasp_px[i] - cand.grasp_px[j]) * mm_per_px <= GRASP_MM:
                    a.grasps_agree += 1
        a.live_only = nl - len(taken_l)
    else:
        a.live_only = nl
    a.shadow_only = nc - len(used)
    a.scallops += a.live_only + a.shadow_only
    return a


class Shadow:
    """See the module doc. ``pipeline``: the candidate's Pipeline (one onnxruntime thread);
    ``model``: its ``{"name", "sha256"}``; ``on_disagreement(frame, live_dets, mm_per_px, channel)`` is
    called from the shadow's thread (the capture queues the frame)."""

    def __init__(
        self,
        pipeline,
        model: dict,
        share: float,
        cpu_share: float,
        on_disagreement: Callable | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.model = model
        self.share = share
        self.cpu_share = cpu_share
        self.on_disagreement = on_disagreement
        self._clock = clock
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._cond = threading.Condition()
        self._job = None
        self._busy = False
        self._offered = 0
        self._lock = threading.Lock()
        self.totals = Counter()
        self._interval = Counter()  # since the last record row
        self.ms = deque(maxlen=500)
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ the frame loop's side
    def offer(self, frame, live_dets, mm_per_px: float, channel=None) -> bool:
        """Hand the frame over if it is its turn and the shadow is idle (never waits).
        ``channel``: the registered fluorescence image the live model read
        (:class:`~scallop.app.line.channel.Registered`), for a candidate that reads it too (a
        colour-only one ignores it; one that needs it skips a frame without it)."""
        if channel is None and getattr(self.pipeline, "takes_uv", False):
            self._count(skipped_no_channel=1)
            return False
        self._offered += 1
        share = self.share
        if share < 1 and int(self._offered * share) == int((self._offered - 1) * share):
            self._count(skipped_sample=1)
            return False
        with self._cond:
            if self._busy or self._job is not None:
                self._count(skipped_busy=1)
                return False
            self._job = (frame, live_dets, mm_per_px, channel)
            self._cond.notify()
        return True

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Until the frame handed over last is compared (tests and the benchmark)."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._busy or self._job is not None:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(timeout=10.0)

    # ------------------------------------------------------------------ figures
    def _count(self, **kw) -> None:
        with self._lock:
            self.totals.update(kw)
            self._interval.update(kw)

    def figures(self) -> dict:
        with self._lock:
            t = dict(self.totals)
            ms = sorted(self.ms)
        n, g = t.get("scallops", 0), t.get("grasps_compared", 0)
        return {
            "model": self.model.get("name", ""),
            "sha256": self.model.get("sha256", ""),
            "frames": t.get("frames", 0),
            "skipped_busy": t.get("skipped_busy", 0),
            "skipped_sample": t.get("skipped_sample", 0),
            "skipped_no_channel": t.get("skipped_no_channel", 0),
            "scallops": n,
            "verdicts_agree": t.get("verdicts_agree", 0),
            "verdict_agreement": round(t.get("verdicts_agree", 0) / n, 5) if n else None,
            "grasps_compared": g,
            "grasps_agree": t.get("grasps_agree", 0),
            "grasp_agreement": round(t.get("grasps_agree", 0) / g, 5) if g else None,
            "live_only": t.get("live_only", 0),
            "shadow_only": t.get("shadow_only", 0),
            "verdict_differs": t.get("verdict_differs", 0),
            "disagreement_frames": t.get("disagreement_frames", 0),
            "ms_p50": round(ms[len(ms) // 2], 2) if ms else None,
            "failures": self.failures,
        }

    def take_interval(self) -> dict:
        """The counts since the last call (one row of the record's ``shadow`` table)."""
        with self._lock:
            c, self._interval = self._interval, Counter()
            ms = sorted(self.ms)
        return dict(c) | {"ms_p50": ms[len(ms) // 2] if ms else None}

    # ------------------------------------------------------------------ the shadow's thread
    def _run(self) -> None:
        try:
            # Linux schedules threads one by one: this lowers only the shadow's priority.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        except (OSError, AttributeError):
            pass
        while not self._stop.is_set():
            with self._cond:
                while self._job is None and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
                job, self._job = self._job, None
                self._busy = True
            t0 = self._clock()
            try:
                self._compare(*job)
            except Exception as e:  # a candidate that fails must never touch the line
                self.failures += 1
                log.warning("shadow model failed on frame %s: %s", getattr(job[0], "index", "?"), e)
            took = self._clock() - t0
            with self._cond:
                self._busy = False
                self._cond.notify_all()
            # Duty cycle: working `took` then resting took·(1/share − 1) averages `share` of a core.
            if self.cpu_share < 1:
                self._sleep(took * (1.0 / self.cpu_share - 1.0))

    def _compare(self, frame, live_dets, mm_per_px: float, channel=None) -> None:
        t0 = time.perf_counter()
        uv, seen = (None, None) if channel is None else (channel.image, channel.seen)
        cand = self.pipeline.detect(frame.image, mm_per_px=mm_per_px, uv=uv, uv_seen=seen)
        self.ms.append((time.perf_counter() - t0) * 1e3)
        a = compare(live_dets, cand, mm_per_px)
        self._count(
            frames=1,
            scallops=a.scallops,
            verdicts_agree=a.verdicts_agree,
            live_only=a.live_only,
            shadow_only=a.shadow_only,
            verdict_differs=a.verdict_differs,
            grasps_compared=a.grasps_compared,
            grasps_agree=a.grasps_agree,
            disagreement_frames=int(a.disagrees),
        )
        if a.disagrees and self.on_disagreement is not None:
            self.on_disagreement(frame, live_dets, mm_per_px, channel)
