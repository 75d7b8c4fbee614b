"""Frames kept from the running line for labelling: the model's unsure frames first.

The line hands every analysed frame to :meth:`FrameCapture.on_analysed` (its detections, the
belt count, the scale) and every finished scallop to :meth:`FrameCapture.on_outcomes`. The
capture decides at once, in the frame loop and without I/O, whether to keep the frame: always
when the model was unsure of something in it (an ``ambiguous``, ``no_uro`` or ``hidden_uro``
verdict, a uro confidence within ``low_margin`` of the pick threshold, a disagreement with the
shadow model), otherwise a ``routine_share`` of frames. A kept frame goes into a bounded queue
that one writer thread empties onto disk; a full queue drops the frame (counted), so the live
loop never waits for the disk. A late pick costs a scallop, a lost capture costs nothing.

The folder's total stays under ``budget_mb``: past it an unsure frame replaces the oldest
routine frame of the session, and other frames are dropped (counted). A disk that refuses a
file raises the ``capture.disk`` alarm; the line carries on.

On disk (docs/dataset-format.md, "Captured frames")::

    FOLDER/capture-YYYYmmdd-HHMMSS/
        capture.json          session: started, model, scale, settings
        frames/NAME.jpg       the frame as the camera gave it (JPEG quality 95)
        frames/NAME.uv.png    on a line with the fluorescence channel: the fluorescence frame as
                              the model read it, registered to NAME.jpg (the spec's companion)
        frames/NAME.json      frame index, time, encoder count, scale, model, why it was kept,
                              the model's detections
        outcomes.jsonl        one line per scallop decided while capturing: result, reason,
                              grade and the frames that showed it
"""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from scallop.errors import ConfigError
from scallop.imagefiles import COMPANION_SUFFIX

JPEG_QUALITY = 95  # labellers zoom in on uro edges; q95 keeps them at ~1/8 of a PNG's size
QUEUE_FRAMES = 8  # frames waiting for the writer; more would only hold memory while the disk is slow
FORMAT = "scallop-capture"
VERSION = 1


@dataclass
class CaptureSettings:
    folder: Path
    budget_bytes: int
    routine_share: float
    low_margin: float
    min_uro_confidence: float


def unsure_reasons(dets, min_uro_confidence: float, low_margin: float) -> list[str]:
    """Why the model's output on a frame is worth a labeller's look (empty: routine)."""
    why = set()
    for i in range(len(dets)):
        r = str(dets.reason[i])
        if r in ("ambiguous", "no_uro", "hidden_uro", "outside_channel"):
            why.add(r)
        if dets.uro_found[i] and abs(float(dets.uro_confidence[i]) - min_uro_confidence) < low_margin:
            why.add("low_margin")
    return sorted(why)


def detections_json(dets, belt_mm: float) -> list[dict]:
    """The model's output as kept beside the frame. ``u_mm``/``v_mm``: where the scallop lies on
    the belt material (belt-frame x less the belt's travel), the tracker's coordinates, so a
    scallop's outcome finds its detections in every frame that showed it."""
    out = []
    for i in range(len(dets)):
        d = {
            "bbox_px": [round(float(v), 1) for v in dets.xyxy[i]],
            "center_px": [round(float(v), 2) for v in dets.center_px[i]],
            "pickable": bool(dets.pickable[i]),
            "reason": str(dets.reason[i]),
            "confidence": round(float(dets.confidence[i]), 4),
            "uro_found": bool(dets.uro_found[i]),
            "uro_confidence": round(float(dets.uro_confidence[i]), 4),
            "grasp_px": [round(float(v), 2) for v in dets.grasp_px[i]] if dets.uro_found[i] else None,
        }
        if dets.center_mm is not None:
            d["u_mm"] = round(float(dets.center_mm[i][0]) - belt_mm, 2)
            d["v_mm"] = round(float(dets.center_mm[i][1]), 2)
        out.append(d)
    return out


class FrameCapture:
    """See the module doc. ``alarms``: the line's (``raise_``/``clear``); ``model``: a callable
    giving the live model's ``{"name", "sha256"}`` now (it may be swapped while capturing)."""

    def __init__(self, settings: CaptureSettings, alarms, model, belt_mm) -> None:
        self.settings = settings
        self.alarms = alarms
        self.model = model
        self.belt_mm = belt_mm  # encoder count → belt travel (mm)
        self.session: Path | None = None
        self._q: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self._lock = threading.Lock()
        self._routine_files: deque[tuple[str, int]] = deque()  # this session's routine frames, oldest first
        self.kept = 0
        self.kept_unsure = 0
        self.offered = 0
        self.dropped: Counter = Counter()  # queue, budget, disk
        self._disk_failed_at = -1e18  # monotonic: the last write the disk refused
        self.bytes = self._folder_bytes()
        self._seen = 0  # frames offered since the session started (routine sampling)
        self._thread: threading.Thread | None = None
        self._outcomes = None
        self._recent: deque[int] = deque(maxlen=64)  # frames queued lately: the shadow may offer one again

    # ------------------------------------------------------------------ control
    @property
    def active(self) -> bool:
        return self.session is not None

    def start(self, note: dict | None = None) -> Path:
        """A new session folder; frames are kept from the next frame on."""
        with self._lock:
            if self.session is not None:
                return self.session
            try:
                self.settings.folder.mkdir(parents=True, exist_ok=True)
                name = datetime.now().strftime("capture-%Y%m%d-%H%M%S")
                session = self.settings.folder / name
                n = 1
                while session.exists():
                    n += 1
                    session = self.settings.folder / f"{name}-{n}"
                (session / "frames").mkdir(parents=True)
                (session / "capture.json").write_text(
                    json.dumps(
                        {
                            "format": FORMAT,
                            "version": VERSION,
                            "started": time.time(),
                            "model": self.model(),
                            "routine_share": self.settings.routine_share,
                            "low_margin": self.settings.low_margin,
                            "budget_bytes": self.settings.budget_bytes,
                        }
                        | (note or {}),
                        indent=1,
                    )
                )
                self._outcomes = open(session / "outcomes.jsonl", "a", encoding="utf-8")  # noqa: SIM115
            except OSError as e:
                raise ConfigError(f"capture folder {self.settings.folder}: cannot start a capture ({e})") from None
            self.session = session
            self._seen = 0
            self._routine_files.clear()
            self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
            self._thread.start()
            return session

    def stop(self) -> None:
        """Write what is queued, then stop keeping frames."""
        with self._lock:
            if self.session is None:
                return
            self.session = None
            thread, self._thread = self._thread, None
        self._q.put(None)
        if thread is not None:
            thread.join(timeout=30.0)
        if self._outcomes is not None:
            self._outcomes.close()
            self._outcomes = None

    def status(self) -> dict:
        return {
            "active": self.active,
            "session": self.session.name if self.session else "",
            "kept": self.kept,
            "kept_unsure": self.kept_unsure,
            "bytes": self.bytes,
            "budget_bytes": self.settings.budget_bytes,
            "dropped": dict(self.dropped),
        }

    # ------------------------------------------------------------------ the frame loop's side
    def on_analysed(
        self,
        frame,
        dets,
        mm_per_px: float,
        extra_reasons: tuple[str, ...] = (),
        channel=None,
    ) -> bool:
        """Keep this frame or not (no I/O here); True when it was queued. ``channel``: the
        registered fluorescence image the model read with it
        (:class:`~scallop.app.line.channel.Registered`), kept beside the frame with the share
        of it the fluorescence camera saw."""
        if self.session is None or frame.index in self._recent:
            return False
        self.offered += 1
        self._seen += 1
        why = unsure_reasons(dets, self.settings.min_uro_confidence, self.settings.low_margin) + list(extra_reasons)
        if not why:
            share = self.settings.routine_share
            # Evenly spread: frame k of the session is kept when k·share crosses a whole number.
            if share <= 0 or int(self._seen * share) == int((self._seen - 1) * share):
                return False
        item = (self.session, frame, dets, mm_per_px, why, self.model(), channel)
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self.dropped["queue"] += 1
            return False
        self._recent.append(frame.index)
        return True

    def on_outcomes(self, done) -> None:
        """Finished scallops (the publisher's list), one line each in outcomes.jsonl. Queued
        like frames, so the frame loop does no I/O."""
        if self.session is None or not done:
            return
        rows = []
        for oc in done:
            t = oc.decision.track
            rows.append(
                {
                    "track_id": int(oc.track_id),
                    "result": oc.result,
                    "reason": oc.reason,
                    "grade": oc.grade,
                    "arm": oc.arm,
                    "u_mm": round(float(t.u), 2),
                    "v_mm": round(float(t.v), 2),
                    "frames": sorted({int(v.frame_index) for v in t.views}),
                }
            )
        try:
            self._q.put_nowait(("outcomes", rows))
        except queue.Full:
            self.dropped["queue"] += 1

    # ------------------------------------------------------------------ the writer thread
    def _folder_bytes(self) -> int:
        total = 0
        folder = self.settings.folder
        if folder.is_dir():
            for p in folder.glob("*/frames/*"):
                try:
                    total += p.stat().st_size
                except OSError:
                    pass
        return total

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is None:
                return
            try:
                if item[0] == "outcomes":
                    if self._outcomes is not None:
                        self._outcomes.write("".join(json.dumps(r) + "\n" for r in item[1]))
                        self._outcomes.flush()
                else:
                    self._write_frame(*item)
                if time.monotonic() - self._disk_failed_at >= DISK_QUIET_S:
                    # Only after a while without failures: a nearly full disk takes some frames,
                    # and each one cleared the alarm (an outside try: 10 alarm rows in 22 s).
                    self.alarms.clear("capture.disk")
            except OSError as e:
                self._disk_failed_at = time.monotonic()
                self.dropped["disk"] += 1
                self.alarms.raise_(
                    "capture.disk",
                    "warning",
                    "vision",
                    f"captured frames cannot be written ({e.strerror or e}) in {self.settings.folder}; the line carries on",
                    params={"detail": str(e.strerror or e)},
                )

    def _write_frame(
        self,
        session: Path,
        frame,
        dets,
        mm_per_px: float,
        why: list,
        model: dict,
        channel,
    ) -> None:
        uv = None if channel is None else channel.image
        ok, jpg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise OSError("JPEG encoding failed")
        png = b""
        if uv is not None:
            # Lossless: the glow's levels are what a labeller and the four-channel model judge by.
            ok, buf = cv2.imencode(".png", uv)
            if not ok:
                raise OSError("PNG encoding failed")
            png = buf.tobytes()
        name = f"{frame.index:08d}"
        meta = {
            "frame_index": int(frame.index),
            "timestamp": float(frame.timestamp),
            "time": time.time(),
            "encoder": None if frame.encoder is None else int(frame.encoder),
            "mm_per_px": round(float(mm_per_px), 6),
            "width": int(frame.image.shape[1]),
            "height": int(frame.image.shape[0]),
            "model": model,
            "why": why or ["routine"],
            "fluorescence": uv is not None,
            # Where the fluorescence camera did not see, NAME.uv.png is 0 as the model read it: a
            # tool reading the pair offline takes that for no glow (docs/dataset-format.md).
            "fluorescence_seen_share": None if channel is None else round(channel.seen_share, 4),
            "detections": detections_json(dets, self.belt_mm(frame.encoder) if frame.encoder is not None else 0.0),
        }
        data = json.dumps(meta, indent=1).encode()
        size = len(jpg) + len(data) + len(png)
        budget = self.settings.budget_bytes
        while self.bytes + size > budget and why and self._routine_files:
            # An unsure frame is worth more to the labeller than an ordinary one kept earlier.
            old, old_size = self._routine_files.popleft()
            for suffix in (".jpg", ".json", COMPANION_SUFFIX):
                (session / "frames" / (old + suffix)).unlink(missing_ok=True)
            self.bytes -= old_size
            self.dropped["replaced"] += 1
        if self.bytes + size > budget:
            self.dropped["budget"] += 1
            return
        if png:
            # Before its frame: a reader that finds the frame finds its companion.
            _write_atomic(session / "frames" / f"{name}{COMPANION_SUFFIX}", png)
        _write_atomic(session / "frames" / f"{name}.jpg", jpg.tobytes())
        _write_atomic(session / "frames" / f"{name}.json", data)
        self.bytes += size
        self.kept += 1
        if why:
            self.kept_unsure += 1
        else:
            self._routine_files.append((name, size))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".part")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk left .part files behind (outside try)
        raise


# A capture.disk alarm clears only after this long without a failed write.
DISK_QUIET_S = 10.0


# ---------------------------------------------------------------------------- reading a capture


def read_capture(folder: str | os.PathLike) -> tuple[dict, list[tuple[Path, dict]], list[dict]]:
    """(session, [(image path, frame record)], outcomes) of a capture session folder."""
    from scallop.errors import DataError

    root = Path(folder)
    mf = root / "capture.json"
    if not mf.is_file():
        raise DataError(f"{mf}: missing (not a capture session folder; sessions are the capture-* folders)")
    try:
        session = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{mf}: not valid JSON ({e})") from None
    if session.get("format") != FORMAT or session.get("version") != VERSION:
        raise DataError(f"{mf}: not a {FORMAT} version {VERSION} session")
    frames = []
    for meta_path in sorted((root / "frames").glob("*.json")):
        img = meta_path.with_suffix(".jpg")
        if not img.is_file():
            continue  # replaced while the budget was full, or cut short by a crash
        try:
            frames.append((img, json.loads(meta_path.read_text())))
        except json.JSONDecodeError as e:
            raise DataError(f"{meta_path}: not valid JSON ({e})") from None
    outcomes = []
    oc = root / "outcomes.jsonl"
    if oc.is_file():
        for line in oc.read_text().splitlines():
            try:
                outcomes.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the last line of a session cut short by a crash
    return session, frames, outcomes


def outcomes_by_detection(meta: dict, outcomes: list[dict], match_mm: float = 10.0) -> list[dict | None]:
    """For each detection of a captured frame, the outcome of the scallop it showed (the
    tracker's belt-material position, in a frame that was among its views), or None."""
    index = meta["frame_index"]
    cands = [o for o in outcomes if index in o.get("frames", ())]
    out: list[dict | None] = []
    for d in meta.get("detections", []):
        best, best_d = None, match_mm
        if "u_mm" in d:
            for o in cands:
                dist = float(np.hypot(o["u_mm"] - d["u_mm"], o["v_mm"] - d["v_mm"]))
                if dist < best_d:
                    best, best_d = o, dist
        out.append(
            None
            if best is None
            else {"outcome": best["result"], "outcome_reason": best["reason"] or "", "grade": best["grade"] or ""}
        )
    return out
