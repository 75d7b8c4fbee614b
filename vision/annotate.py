"""Draw detections on a frame (for `scallop detect --annotate`, the live view, reports)."""

from __future__ import annotations

import cv2
import numpy as np

from scallop.vision.detections import Detections

GREEN, RED, AMBER, CYAN, WHITE = (80, 220, 60), (60, 60, 235), (0, 190, 255), (255, 220, 0), (255, 255, 255)


def draw(image: np.ndarray, dets: Detections, labels: list[str] | None = None) -> np.ndarray:
    """A copy of ``image`` with outlines (green pickable, amber not), grasp crosses, pull
    arrows and the reason for each scallop that will not be picked."""
    out = image.copy()
    scale = max(1.0, image.shape[1] / 1280)
    th = max(1, int(round(2 * scale)))
    for i in range(len(dets)):
        colour = GREEN if dets.pickable[i] else AMBER
        cv2.polylines(out, [np.round(dets.contours[i]).astype(np.int32)], True, colour, th, cv2.LINE_AA)
        if dets.uro_found[i]:
            g = dets.grasp_px[i]
            p = tuple(int(round(v)) for v in g)
            cv2.drawMarker(out, p, RED if dets.pickable[i] else AMBER, cv2.MARKER_CROSS, int(14 * scale), th)
            d = dets.pull_dir[i]
            if np.isfinite(d).all():
                q = tuple(int(round(v)) for v in g + d * 30 * scale)
                cv2.arrowedLine(out, p, q, CYAN, th, cv2.LINE_AA, tipLength=0.3)
        text = labels[i] if labels else (dets.reason[i] or f"{dets.uro_confidence[i]:.2f}")
        _label(out, text, int(dets.xyxy[i][0]), int(dets.xyxy[i][1]), colour, image.shape[1])
    return out


def _label(out: np.ndarray, text: str, x: int, y: int, colour, width: int) -> None:
    """White text on a near-black box edged in the outline's colour, above (x, y): readable on a
    white belt as on a dark one, and when the picture is shown smaller than it is."""
    font, fs = cv2.FONT_HERSHEY_SIMPLEX, 0.55 * max(1.0, width / 900)
    stroke = max(1, int(round(fs * 2)))
    (tw, tht), base = cv2.getTextSize(text, font, fs, stroke)
    pad = max(2, int(round(3 * fs)))
    x0 = min(max(0, x), max(0, out.shape[1] - tw - 2 * pad))
    y1 = max(tht + base + 2 * pad, y - 2)  # box bottom, kept inside the picture
    y0 = y1 - tht - base - 2 * pad
    cv2.rectangle(out, (x0, y0), (x0 + tw + 2 * pad, y1), (24, 24, 24), cv2.FILLED)
    cv2.rectangle(out, (x0, y0), (x0 + tw + 2 * pad, y1), colour, 1)
    cv2.putText(out, text, (x0 + pad, y1 - pad - base), font, fs, WHITE, stroke, cv2.LINE_AA)
