"""Pictures of what a calibration step found, for the engineer to look at before trusting it.

Every figure of a step can be right while the belt frame sits somewhere nobody meant (a board
laid the other way round, ``--origin`` forgotten): the numbers do not show it, a picture does.

* :func:`belt_frame_picture` — a photo with the board's corners numbered (corner 0 marked: it
  is the belt frame's origin), the belt frame's origin and +x / +y axes, and a grid of belt
  coordinates every ``grid_mm``.
* :func:`track_picture` — a frame of the encoder step with where the board's corner 0 was
  found in each frame, and the fitted direction of travel.
* :func:`registration_picture` — a colour photo with the fluorescence camera's photo of the same
  moment laid over it through the registration (red against cyan: where they agree the board
  looks grey), the overlap's outline, and every pair's corners with their residuals (magnified).
* :func:`plan_picture` — the belt frame from above: the camera's view, the origin and axes,
  each arm's base, workspace reach, pick window, chute and ready points, and touched marks
  with their residuals (magnified).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from scallop.calibration.camera_model import CameraModel

RED, GREEN, BLUE, YELLOW, WHITE, BLACK = (
    (40, 40, 230),
    (60, 190, 60),
    (230, 120, 30),
    (0, 220, 240),
    (255,) * 3,
    (0,) * 3,
)
ORANGE, GREY = (0, 140, 255), (150, 150, 150)


def _text(img: np.ndarray, text: str, org, colour=WHITE, scale: float = 0.5, thick: int = 1, halo: bool = True) -> None:
    """Text readable on a photo: a dark halo around it (``halo=False`` on a plain light page)."""
    org = (int(round(org[0])), int(round(org[1])))
    if halo:
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, BLACK, thick + 2, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def _pt(p) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def _inside(p, size) -> bool:
    return bool(np.all(np.isfinite(p))) and -5000 < p[0] < size[0] + 5000 and -5000 < p[1] < size[1] + 5000


def _frame_axes(img: np.ndarray, camera: CameraModel, length_mm: float, z_mm: float) -> None:
    o, x, y = camera.project(np.array([[0, 0, z_mm], [length_mm, 0, z_mm], [0, length_mm, z_mm]], dtype=float))
    size = camera.image_size
    if not all(_inside(p, size) for p in (o, x, y)):
        return
    cv2.arrowedLine(img, _pt(o), _pt(x), RED, 3, cv2.LINE_AA, tipLength=0.08)
    cv2.arrowedLine(img, _pt(o), _pt(y), GREEN, 3, cv2.LINE_AA, tipLength=0.08)
    cv2.circle(img, _pt(o), 9, YELLOW, 3, cv2.LINE_AA)
    _text(img, "+x (travel)", x + np.array([6, -6]), RED, 0.6, 2)
    _text(img, "+y", y + np.array([6, 14]), GREEN, 0.6, 2)
    _text(img, "origin (0, 0)", o + np.array([12, 22]), YELLOW, 0.6, 2)


def _grid(img: np.ndarray, camera: CameraModel, step_mm: float, z_mm: float) -> None:
    w, h = camera.image_size
    corners = camera.pixel_to_belt(np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], float), z_mm=z_mm)
    lo, hi = corners.min(0), corners.max(0)
    for axis in (0, 1):
        for v in np.arange(np.floor(lo[axis] / step_mm) * step_mm, hi[axis] + step_mm, step_mm):
            a = np.linspace(lo[1 - axis], hi[1 - axis], 60)
            pts = np.zeros((len(a), 3))
            pts[:, axis], pts[:, 1 - axis], pts[:, 2] = v, a, z_mm
            px = camera.project(pts)
            ok = np.all(np.isfinite(px), axis=1)
            if ok.sum() > 1:
                cv2.polylines(img, [px[ok].astype(np.int32)], False, GREY, 1, cv2.LINE_AA)
            label = camera.project(np.array([[v, lo[1], z_mm] if axis == 0 else [lo[0], v, z_mm]]))[0]
            if _inside(label, (w, h)) and 0 <= label[0] < w and 0 <= label[1] < h:
                _text(img, f"{'x' if axis == 0 else 'y'}={v:g}", label + np.array([3, -3]), GREY, 0.4)


def belt_frame_picture(
    image: np.ndarray,
    camera: CameraModel,
    corners_px: np.ndarray | None = None,
    grid_mm: float = 100.0,
    z_mm: float = 0.0,
    title: str = "",
) -> np.ndarray:
    """``image`` (BGR) with the belt frame of ``camera`` drawn on it; ``corners_px`` (N, 2) the
    board's detected corners in id order (corner 0 is the origin when the board set it)."""
    img = image.copy()
    _grid(img, camera, grid_mm, z_mm)
    if corners_px is not None and len(corners_px):
        c = np.asarray(corners_px, dtype=float).reshape(-1, 2)
        every = max(1, len(c) // 60)
        for i, p in enumerate(c):
            cv2.circle(img, _pt(p), 3, BLUE, -1, cv2.LINE_AA)
            if i % every == 0 or i == len(c) - 1:
                _text(img, str(i), p + np.array([4, -4]), WHITE, 0.4)
        cv2.circle(img, _pt(c[0]), 14, ORANGE, 2, cv2.LINE_AA)
        _text(img, "corner 0", c[0] + np.array([-40, -20]), ORANGE, 0.6, 2)
    _frame_axes(img, camera, 2 * grid_mm, z_mm)
    if title:
        _text(img, title, (10, 24), WHITE, 0.6, 2)
    return img


def track_picture(
    image: np.ndarray, camera: CameraModel, points_mm: np.ndarray, travel_dir, z_mm: float = 0.0, title: str = ""
) -> np.ndarray:
    """A frame of the encoder step with the board's corner 0 in every frame (numbered) and the
    fitted direction of travel through them."""
    img = image.copy()
    pts = np.asarray(points_mm, dtype=float).reshape(-1, 2)
    if len(pts):
        px = camera.project(np.column_stack([pts, np.full(len(pts), z_mm)]))
        for i, p in enumerate(px):
            if _inside(p, camera.image_size):
                cv2.circle(img, _pt(p), 5, YELLOW, 2, cv2.LINE_AA)
                _text(img, str(i), p + np.array([6, -6]), YELLOW, 0.45)
        d = np.asarray(travel_dir, dtype=float)[:2]
        mid = pts.mean(0)
        span = max(100.0, float(np.ptp(pts @ d)))
        ends = np.array([mid - d * span / 2, mid + d * span / 2])
        a, b = camera.project(np.column_stack([ends, np.full(2, z_mm)]))
        if _inside(a, camera.image_size) and _inside(b, camera.image_size):
            cv2.arrowedLine(img, _pt(a), _pt(b), ORANGE, 2, cv2.LINE_AA, tipLength=0.05)
            _text(img, "measured travel", b + np.array([6, 16]), ORANGE, 0.6, 2)
    _frame_axes(img, camera, 200.0, z_mm)
    if title:
        _text(img, title, (10, 24), WHITE, 0.6, 2)
    return img


def registration_picture(
    colour_image: np.ndarray,
    fluo_registered: np.ndarray,
    seen: np.ndarray,
    corners_px: np.ndarray,
    mapped_px: np.ndarray,
    residuals_mm: np.ndarray,
    limits_mm: tuple[float, float],
    hull_px: np.ndarray | None = None,
    magnify: float = 20.0,
    title: str = "",
) -> np.ndarray:
    """The colour photo in cyan with the fluorescence photo, registered onto it, in red: edges
    that coincide look grey, a misregistration shows red and cyan fringes. ``seen``: (h, w) bool,
    the colour pixels the fluorescence camera sees (outlined in yellow). Each corner (colour
    detection) is drawn with the way its fluorescence twin landed, ``magnify`` times longer,
    green / orange / red by ``limits_mm``; ``hull_px`` outlines the area the boards covered."""
    grey = cv2.cvtColor(colour_image, cv2.COLOR_BGR2GRAY) if colour_image.ndim == 3 else colour_image
    fl = fluo_registered if fluo_registered.ndim == 2 else cv2.cvtColor(fluo_registered, cv2.COLOR_BGR2GRAY)
    # Stretch the fluorescence photo to the colour photo's contrast, so the board's two prints
    # cancel to grey where they coincide.
    if np.any(seen):
        lo_c, hi_c = np.percentile(grey[seen], (2, 98))
        lo_f, hi_f = np.percentile(fl[seen], (2, 98))
        fl = np.clip((fl.astype(np.float32) - lo_f) * (hi_c - lo_c) / max(hi_f - lo_f, 1.0) + lo_c, 0, 255)
    red = np.where(seen, fl, grey).astype(np.uint8)
    img = cv2.merge([grey, grey, red])
    contours, _ = cv2.findContours(seen.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(img, contours, -1, YELLOW, 2, cv2.LINE_AA)
    if hull_px is not None and len(hull_px) >= 3:
        cv2.polylines(img, [np.round(hull_px).astype(np.int32).reshape(-1, 1, 2)], True, BLUE, 2, cv2.LINE_AA)
    good, marginal = limits_mm
    for p, q, r in zip(np.asarray(corners_px), np.asarray(mapped_px), np.asarray(residuals_mm)):
        colour = GREEN if r <= good else (ORANGE if r <= marginal else RED)
        if np.all(np.isfinite(q)) and _inside(p + magnify * (q - p), img.shape[1::-1]):
            cv2.line(img, _pt(p), _pt(p + magnify * (q - p)), colour, 1, cv2.LINE_AA)
        cv2.circle(img, _pt(p), 3, colour, -1, cv2.LINE_AA)
    if title:
        _text(img, title, (10, 24), WHITE, 0.6, 2)
    # A long line drifts from its halo (a thicker stroke advances further): a plain band instead.
    legend = (
        "red: fluorescence camera, cyan: colour camera (grey where they agree)",
        f"yellow: the fluorescence camera's view; blue: the boards' area; lines: corner residuals x{magnify:g}",
    )
    h = img.shape[0]
    cv2.rectangle(img, (0, h - 44), (img.shape[1] - 1, h - 1), BLACK, -1)
    for k, line in enumerate(legend):
        _text(img, line, (10, h - 26 + 18 * k), WHITE, 0.45, halo=False)
    return img


@dataclass
class PlanArm:
    """One arm on the plan. robot_from_belt: (4, 4); windows in the belt frame, mm; workspace
    ((3,), (3,)) and chute/ready (3,) in the robot frame (None: not drawn)."""

    name: str
    robot_from_belt: np.ndarray
    window_x_mm: tuple[float, float] | None = None
    window_y_mm: tuple[float, float] | None = None
    workspace: tuple | None = None
    chute_mm: tuple | None = None
    ready_mm: tuple | None = None


@dataclass
class PlanPoint:
    """A mark on the plan: belt xy (mm), and its residual (mm) drawn magnified."""

    label: str
    xy_mm: tuple[float, float]
    residual_mm: tuple[float, float] = (0.0, 0.0)


@dataclass
class _Plan:
    lo: np.ndarray
    scale: float
    size: tuple[int, int]
    margin: int = 40
    img: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.img = np.full((self.size[1], self.size[0], 3), 235, np.uint8)

    def px(self, xy) -> np.ndarray:
        """Belt x to the right, belt y up (as seen from above with the travel going right)."""
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        u = self.margin + (xy[:, 0] - self.lo[0]) * self.scale
        v = self.size[1] - self.margin - (xy[:, 1] - self.lo[1]) * self.scale
        return np.column_stack([u, v])

    def poly(self, xy, colour, thick: int = 2, closed: bool = True) -> None:
        cv2.polylines(self.img, [self.px(xy).astype(np.int32)], closed, colour, thick, cv2.LINE_AA)


def plan_picture(
    camera: CameraModel | None,
    arms: list[PlanArm] = (),
    points: list[PlanPoint] = (),
    residual_gain: float = 20.0,
    title: str = "",
    width_px: int = 1400,
) -> np.ndarray:
    """The belt frame seen from above (x right, y up), drawn to scale."""

    def _label(img, text, org, colour=BLACK, scale: float = 0.5, thick: int = 1) -> None:
        _text(img, text, org, colour, scale, thick, halo=False)

    boxes = []
    view = None
    if camera is not None:
        w, h = camera.image_size
        edge = np.concatenate(
            [
                np.column_stack([np.linspace(0, w - 1, 20), np.zeros(20)]),
                np.column_stack([np.full(20, w - 1), np.linspace(0, h - 1, 20)]),
                np.column_stack([np.linspace(w - 1, 0, 20), np.full(20, h - 1)]),
                np.column_stack([np.zeros(20), np.linspace(h - 1, 0, 20)]),
            ]
        )
        view = camera.pixel_to_belt(edge)
        boxes.append(view)
    inv = {a.name: np.linalg.inv(np.asarray(a.robot_from_belt, dtype=float)) for a in arms}
    reach = {}
    for a in arms:
        base = inv[a.name][:2, 3]
        boxes.append(base[None])
        if a.workspace is not None:
            m = inv[a.name]
            lo_r, hi_r = np.asarray(a.workspace[0], float), np.asarray(a.workspace[1], float)
            corners = np.array([[x, y, 0.0] for x in (lo_r[0], hi_r[0]) for y in (lo_r[1], hi_r[1])])
            b = corners @ m[:3, :3].T + m[:3, 3]
            reach[a.name] = cv2.convexHull(b[:, :2].astype(np.float32)).reshape(-1, 2)
            boxes.append(reach[a.name])
        if a.window_x_mm and a.window_y_mm:
            boxes.append(np.array([[a.window_x_mm[0], a.window_y_mm[0]], [a.window_x_mm[1], a.window_y_mm[1]]]))
    for p in points:
        boxes.append(np.asarray(p.xy_mm, dtype=float)[None])
    boxes.append(np.zeros((1, 2)))
    allp = np.vstack(boxes)
    lo, hi = allp.min(0) - 60, allp.max(0) + 60
    scale = (width_px - 80) / max(1.0, hi[0] - lo[0])
    height = int(min(1400, max(300, (hi[1] - lo[1]) * scale + 80)))
    scale = min(scale, (height - 80) / max(1.0, hi[1] - lo[1]))
    plan = _Plan(lo, scale, (width_px, height))
    img = plan.img
    if view is not None:
        plan.poly(view, BLUE, 2)
        _label(img, "camera view", plan.px(view[0])[0] + np.array([4, 16]), BLUE, 0.5)
    for a in arms:
        m = inv[a.name]
        if a.name in reach:
            plan.poly(reach[a.name], GREY, 1)
            _label(img, f"{a.name}: reach (workspace)", plan.px(reach[a.name]).min(0) + np.array([4, 14]), GREY)
        if a.window_x_mm and a.window_y_mm:
            (x0, x1), (y0, y1) = a.window_x_mm, a.window_y_mm
            plan.poly([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], GREEN, 2)
            _label(img, f"{a.name}: pick window", plan.px([x0, y1])[0] + np.array([4, -6]), GREEN, 0.5)
        base = m[:3, 3]
        cv2.drawMarker(img, _pt(plan.px(base[:2])[0]), BLACK, cv2.MARKER_TILTED_CROSS, 16, 2)
        _label(img, f"{a.name} base", plan.px(base[:2])[0] + np.array([8, 4]), BLACK, 0.5)
        for label, pt, colour in (("chute", a.chute_mm, ORANGE), ("ready", a.ready_mm, BLUE)):
            if pt is not None:
                b = m[:3, :3] @ np.asarray(pt, float) + m[:3, 3]
                cv2.circle(img, _pt(plan.px(b[:2])[0]), 5, colour, -1, cv2.LINE_AA)
                _label(img, label, plan.px(b[:2])[0] + np.array([6, 4]), colour, 0.45)
    for p in points:
        q = plan.px(p.xy_mm)[0]
        cv2.circle(img, _pt(q), 5, RED, -1, cv2.LINE_AA)
        r = np.asarray(p.residual_mm, float) * residual_gain * scale
        cv2.arrowedLine(img, _pt(q), _pt(q + np.array([r[0], -r[1]])), RED, 1, cv2.LINE_AA)
        _label(img, p.label, q + np.array([6, -6]), RED, 0.45)
    o, x, y = plan.px([[0, 0], [100, 0], [0, 100]])
    cv2.arrowedLine(img, _pt(o), _pt(x), RED, 2, cv2.LINE_AA, tipLength=0.15)
    cv2.arrowedLine(img, _pt(o), _pt(y), GREEN, 2, cv2.LINE_AA, tipLength=0.15)
    cv2.circle(img, _pt(o), 6, YELLOW, 2, cv2.LINE_AA)
    _label(img, "belt origin, +x travel, +y", o + np.array([8, 18]), BLACK, 0.5)
    bar = 100 * scale
    cv2.line(img, (20, height - 15), (int(20 + bar), height - 15), BLACK, 2)
    _label(img, "100 mm", (int(26 + bar), height - 10), BLACK, 0.45)
    if title:
        _label(img, title, (10, 24), BLACK, 0.6, 1)
    if points and residual_gain != 1:
        _label(img, f"residuals x{residual_gain:g}", (width_px - 200, 24), RED, 0.5)
    return img
