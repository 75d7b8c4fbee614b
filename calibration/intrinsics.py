"""Camera intrinsics (camera matrix and lens distortion) from photos of a board.

Photos come from a folder, from files, or live from a camera (:func:`capture_views`). Each
photo is judged before it is used; the ones left out are listed with a reason an engineer
can act on::

    unreadable image   the file is not an image (corrupt, truncated, another format)
    wrong resolution   not the size of the other photos (another camera or mode)
    board not found    no board detected (cut by the border, glare, wrong --board)
    blurred            board edges wider than ``max_edge_px`` (focus, motion)
    outlier error      reprojection error far above the other views' (a bad detection)

The solve is OpenCV's ``calibrateCameraExtended``, which also gives the per-view errors and
the parameters' standard deviations. The distortion model is k1 k2 p1 p2, with k3 added only
when it fits the photos clearly better: a free k3 that the data do not need bends the
mapping in the image corners (seen on the simulator: up to 0.6 mm on the belt there).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from scallop.calibration.boards import BoardSpec, Detection, detect, parse_board
from scallop.calibration.check import Figure, overall
from scallop.calibration.errors import (
    BoardNotFoundError,
    ImageError,
    NotEnoughViewsError,
)
from scallop.errors import one_line
from scallop.imagefiles import EMPTY, decode_color, frame_files, image_size, no_frames_message, too_large

# Limits, stated to the engineer with every verdict.
MAX_EDGE_PX = 4.5  # 10–90 % edge width; a sharp print measures 1–2.5 px
OUTLIER_FACTOR = 3.0  # a view is an outlier above this × the median per-view error …
OUTLIER_FLOOR_PX = 0.5  # … but never for an error below this (all views are then fine)
MIN_VIEWS = 3  # the solve needs this many; far more are recommended
K3_MIN_GAIN = 0.02  # "auto" model: k3 is kept only if it lowers the RMS by 2 % or more
MODELS = ("auto", "k3", "no-k3")
COVERAGE_GRID = (8, 6)  # image cells (columns, rows) for the coverage figure

RMS_LIMITS = (0.5, 1.0)  # px: good ≤ 0.5, marginal ≤ 1.0
VIEWS_LIMITS = (10, 6)  # views: good ≥ 10, marginal ≥ 6
COVERAGE_LIMITS = (0.6, 0.35)  # fraction of image cells with corners
FOCAL_STD_LIMITS = (0.5, 1.5)  # % of the focal length

STD_NAMES = ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2", "k3")

REASON_UNREADABLE = "unreadable image"
REASON_RESOLUTION = "wrong resolution"
REASON_NOT_FOUND = "board not found"
REASON_BLURRED = "blurred"
REASON_OUTLIER = "outlier error"


@dataclass
class Rejection:
    """A photo left out: ``reason`` is one of the fixed phrases above, ``detail`` the figures."""

    image: str
    reason: str
    detail: str = ""

    def to_dict(self) -> dict:
        return {"image": self.image, "reason": self.reason, "detail": self.detail}


@dataclass
class ViewResult:
    """One used view: its RMS reprojection error and how many corners it gave."""

    image: str
    rms_px: float
    n_corners: int
    edge_width_px: float

    def to_dict(self) -> dict:
        return {
            "image": self.image,
            "rms_px": round(self.rms_px, 4),
            "corners": self.n_corners,
            "edge_width_px": round(self.edge_width_px, 2) if np.isfinite(self.edge_width_px) else None,
        }


@dataclass
class IntrinsicsResult:
    """The calibrated camera and the figures that say how far to trust it.

    K:            (3, 3) camera matrix, px.
    dist:         (5,) distortion k1 k2 p1 p2 k3.
    image_size:   (w, h) px.
    rms_px:       RMS reprojection error over all used corners.
    views:        the used views with their own errors.
    rejected:     the photos left out, with reasons.
    std:          one standard deviation of each parameter (names in STD_NAMES).
    coverage:     fraction of the COVERAGE_GRID image cells holding at least one corner.
    model:        the distortion coefficients solved for ("k1 k2 p1 p2" or "… k3").
    detections:   the used views' detections (for the coverage picture).
    """

    K: np.ndarray
    dist: np.ndarray
    image_size: tuple[int, int]
    rms_px: float
    views: list[ViewResult]
    rejected: list[Rejection]
    std: dict[str, float]
    coverage: float
    board: str
    model: str = "k1 k2 p1 p2 k3"
    detections: list[Detection] = field(default_factory=list, repr=False)
    when: str = ""

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    def figures(self) -> list[Figure]:
        focal_std = 100.0 * max(self.std.get("fx", 0.0) / self.fx, self.std.get("fy", 0.0) / self.fy)
        return [
            Figure("RMS reprojection error", self.rms_px, "px", *RMS_LIMITS),
            Figure("views used", len(self.views), "", *VIEWS_LIMITS, higher_is_better=True),
            Figure(
                "image coverage",
                100 * self.coverage,
                "%",
                100 * COVERAGE_LIMITS[0],
                100 * COVERAGE_LIMITS[1],
                higher_is_better=True,
            ),
            Figure("focal length std dev", focal_std, "%", *FOCAL_STD_LIMITS),
        ]

    @property
    def verdict(self) -> str:
        return overall(self.figures())

    def to_json(self) -> dict:
        """The CLI's ``--json`` object (the contract other tools read)."""
        return {
            "rms_px": round(self.rms_px, 5),
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "dist": [float(v) for v in self.dist],
            "image_size": list(self.image_size),
            "views_used": len(self.views),
            "views_rejected": [r.to_dict() for r in self.rejected],
            "per_view_rms_px": [v.to_dict() for v in self.views],
            "std": {k: float(v) for k, v in self.std.items()},
            "coverage": round(self.coverage, 4),
            "board": self.board,
            "model": self.model,
            "verdict": self.verdict,
            "figures": [f.to_dict() for f in self.figures()],
        }

    def section(self, camera_name: str = "") -> dict:
        """The ``intrinsics`` part of the line calibration file."""
        return {
            "when": self.when,
            "camera": camera_name,
            "image_size": list(self.image_size),
            "board": self.board,
            "model": self.model,
            "K": self.K.tolist(),
            "dist": [float(v) for v in self.dist],
            "rms_px": float(self.rms_px),
            "std": {k: float(v) for k, v in self.std.items()},
            "views_used": len(self.views),
            "per_view_rms_px": {v.image: round(v.rms_px, 4) for v in self.views},
            "views_rejected": [r.to_dict() for r in self.rejected],
            "coverage": float(self.coverage),
            "verdict": self.verdict,
        }


# ==================================================================== inputs
def list_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand folders (their image files in name order) and keep files as given. A photo
    given twice (its folder and itself) is taken once: as two views it would weigh double."""
    out: list[Path] = []
    seen: set[str] = set()

    def add(p: Path) -> None:
        real = os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            out.append(p)

    for p in map(Path, paths):
        if p.is_dir():
            files = frame_files(p)
            if not files:
                raise ImageError(no_frames_message(p))
            for f in files:
                add(f)
        elif p.is_file():
            add(p)
        else:
            raise ImageError(f"{p}: no such file or folder")
    if not out:
        raise ImageError("no photos given: pass image files or a folder of photos")
    return out


def read_photo(path: str | os.PathLike) -> tuple[np.ndarray | None, str]:
    """``(photo, "")``, or ``(None, why)`` when it cannot be used: empty, claiming more than
    ``MAX_IMAGE_PIXELS`` in its header, undecodable, or a JPEG or PNG damaged inside its data
    (its corners past the damage would be shifted or missing). OpenCV's own log lines about
    broken files are silenced: the caller reports the file in one line."""
    why = too_large(image_size(path))
    if why:
        return None, why
    data = np.fromfile(str(path), dtype=np.uint8)
    if not data.size:
        return None, EMPTY
    log = cv2.utils.logging
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        img, why = decode_color(data)
    finally:
        log.setLogLevel(level)
    return (img, "") if img is not None else (None, why or "not a readable image (corrupt or unsupported format)")


def read_views(
    paths: Iterable[str | os.PathLike], reasons: dict[str, str] | None = None
) -> list[tuple[str, np.ndarray | None]]:
    """(name, image) for every photo; image is None when the file cannot be used, and then
    ``reasons`` (when given) gets why, under its name.

    A photo is named by its file name, or by its path as given where two photos from different
    folders share a name (a rejection must say which one); a newline or other control character
    in it is shown escaped, so every line that names a photo stays one line."""
    files = list_images(paths)
    short = Counter(p.name for p in files)
    out = []
    for p in files:
        name = one_line(p.name if p.name and short[p.name] == 1 else str(p))
        img, why = read_photo(p)
        if img is None and reasons is not None:
            reasons[name] = why
        out.append((name, img))
    return out


def capture_views(
    camera,
    board: BoardSpec | str,
    n_views: int = 15,
    *,
    max_frames: int = 600,
    min_shift: float = 0.08,
    on_progress: Callable[[str], None] | None = None,
) -> list[tuple[str, np.ndarray]]:
    """Grab frames from a connected ``scallop.vision.camera.Camera`` and keep ``n_views`` in
    which the board is found in a new place, size or tilt (so the views spread over the
    image instead of repeating one pose while the engineer walks to the board).

    min_shift: how far (fraction of the image diagonal) the board's centre must move — or
    its apparent size change by 15 %, or its outline by tilting or turning — for a frame to
    count as a new view.
    """
    board = parse_board(board)
    kept: list[tuple[str, np.ndarray]] = []
    signatures: list[tuple[np.ndarray, float]] = []
    say = on_progress or (lambda msg: None)
    from scallop.vision.camera import EndOfStreamError

    for _ in range(max_frames):
        try:
            frame = camera.read()
        except EndOfStreamError:  # a video file or folder ran out: use what was found
            break
        det = detect(frame.image, board, refine=False)
        if det is None:
            continue
        diag = float(np.hypot(*det.image_size))
        centre = det.image_points.mean(0)
        d = det.image_points - centre
        cov = d.T @ d / len(d)
        spread = float(np.sqrt(np.trace(cov)))
        shape = cov / np.trace(cov)  # the board's outline: changes when it is tilted or turned
        new = all(
            np.linalg.norm(centre - c) > min_shift * diag
            or abs(spread / s - 1.0) > 0.15
            or np.linalg.norm(shape - sh) > 0.08
            for c, s, sh in signatures
        )
        if not new:
            continue
        signatures.append((centre, spread, shape))
        kept.append((f"frame{frame.index:05d}", frame.image.copy()))
        say(f"view {len(kept)}/{n_views} captured ({len(det)} corners); move or tilt the board")
        if len(kept) >= n_views:
            break
    return kept


# ==================================================================== solve
def _coverage(dets: list[Detection], image_size: tuple[int, int]) -> tuple[float, np.ndarray]:
    gw, gh = COVERAGE_GRID
    w, h = image_size
    counts = np.zeros((gh, gw), dtype=np.int64)
    for d in dets:
        cx = np.clip((d.image_points[:, 0] / w * gw).astype(int), 0, gw - 1)
        cy = np.clip((d.image_points[:, 1] / h * gh).astype(int), 0, gh - 1)
        np.add.at(counts, (cy, cx), 1)
    return float(np.mean(counts > 0)), counts


def _solve(dets: list[Detection], image_size: tuple[int, int], flags: int):
    obj = [d.object_points.astype(np.float32) for d in dets]
    img = [d.image_points.astype(np.float32).reshape(-1, 1, 2) for d in dets]
    crit = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-9)
    rms, K, dist, _rv, _tv, std_in, _std_ex, per_view = cv2.calibrateCameraExtended(
        obj, img, image_size, None, None, flags=flags, criteria=crit
    )
    return (
        float(rms),
        K,
        np.asarray(dist, dtype=np.float64).ravel()[:5],
        np.asarray(std_in).ravel(),
        np.asarray(per_view, dtype=np.float64).ravel(),
    )


def calibrate_intrinsics(
    views: Iterable[tuple[str, np.ndarray | None]],
    board: BoardSpec | str,
    *,
    skip_bad: bool = False,
    max_edge_px: float = MAX_EDGE_PX,
    outlier_factor: float = OUTLIER_FACTOR,
    outlier_floor_px: float = OUTLIER_FLOOR_PX,
    model: str = "auto",
    flags: int = 0,
    reasons: Mapping[str, str] | None = None,
) -> IntrinsicsResult:
    """Calibrate from ``(name, image)`` pairs (image None = unreadable file; ``reasons``: why,
    by name, as :func:`read_views` gives it).

    model: "auto" (k1 k2 p1 p2, plus k3 only when it lowers the RMS by K3_MIN_GAIN), "k3"
    (OpenCV's default five coefficients), or "no-k3". ``dist`` always holds five numbers.
    With ``skip_bad`` False (the default) an unreadable photo or a photo of another resolution
    stops the calibration with an ImageError that names it: a folder mixing cameras is a
    mistake worth hearing about. With ``skip_bad`` True such photos are only rejected.
    """
    board = parse_board(board)
    views = list(views)
    if not views:
        raise ImageError("no photos given: pass image files or a folder of photos")
    rejected: list[Rejection] = []

    unreadable = [name for name, img in views if img is None]
    reasons = reasons or {}
    if unreadable and not skip_bad:
        raise ImageError(
            f"{unreadable[0]}: {reasons.get(unreadable[0], 'not a readable image (corrupt or unsupported format)')}"
            + (f", and {len(unreadable) - 1} more" if len(unreadable) > 1 else "")
            + "; remove it or pass --skip-bad to calibrate without it"
        )
    rejected += [Rejection(n, REASON_UNREADABLE, reasons.get(n, "cannot be decoded")) for n in unreadable]
    readable = [(n, img) for n, img in views if img is not None]
    if not readable:
        raise ImageError(f"none of the {len(views)} photos can be read as an image")

    sizes = Counter((img.shape[1], img.shape[0]) for _, img in readable)
    (size, n_main), *others = sizes.most_common()
    if others:
        odd = [(n, img) for n, img in readable if (img.shape[1], img.shape[0]) != size]
        if not skip_bad or (others and others[0][1] == n_main):
            desc = ", ".join(f"{c} are {w}x{h}" for (w, h), c in sizes.most_common())
            raise ImageError(
                f"mixed resolutions: {desc} (e.g. {odd[0][0]}); photos of one camera at one "
                f"resolution are needed: remove the others"
                + ("" if skip_bad else " or pass --skip-bad to leave them out")
            )
        for n, img in odd:
            rejected.append(
                Rejection(n, REASON_RESOLUTION, f"{img.shape[1]}x{img.shape[0]}, the others are {size[0]}x{size[1]}")
            )
        readable = [(n, img) for n, img in readable if (img.shape[1], img.shape[0]) == size]

    used: list[tuple[str, Detection]] = []
    for name, img in readable:
        det = detect(img, board)
        if det is None:
            rejected.append(Rejection(name, REASON_NOT_FOUND, f"no {board} detected"))
            continue
        if np.isfinite(det.edge_width_px) and det.edge_width_px > max_edge_px:
            rejected.append(
                Rejection(name, REASON_BLURRED, f"edge width {det.edge_width_px:.1f} px > {max_edge_px:g} px")
            )
            continue
        used.append((name, det))

    if not used:
        found = sum(1 for r in rejected if r.reason == REASON_BLURRED)
        if found:
            raise NotEnoughViewsError(
                f"the board was found in {found} of {len(views)} photos but all were too blurred "
                f"(edge width > {max_edge_px:g} px): refocus or hold the board still and retake them"
            )
        hint = (
            " (a chessboard is counted in inner corners: 10x7 squares is 9x6)"
            if board.kind == "chessboard"
            else " (check the dictionary and the square/marker sizes)"
        )
        raise BoardNotFoundError(
            f"no {board} found in any of the {len(views)} photos: check --board{hint}, "
            f"that the whole board is in view, and the lighting"
        )
    if len(used) < MIN_VIEWS:
        raise NotEnoughViewsError(
            f"only {len(used)} usable view(s), at least {MIN_VIEWS} are needed "
            f"(recommended {VIEWS_LIMITS[0]}+): take more photos with the board tilted in different ways"
        )

    if model not in MODELS:
        raise ImageError(f"model={model!r} is unknown: use one of {', '.join(MODELS)}")

    def solve(dets):
        if model == "no-k3":
            return _solve(dets, size, flags | cv2.CALIB_FIX_K3) + ("k1 k2 p1 p2",)
        full = _solve(dets, size, flags)
        if model == "k3":
            return full + ("k1 k2 p1 p2 k3",)
        # k3 mostly shapes the image corners, where few corners are seen: keep it only
        # when it really fits the data better, since a free k3 extrapolates wildly there.
        simple = _solve(dets, size, flags | cv2.CALIB_FIX_K3)
        if full[0] < (1.0 - K3_MIN_GAIN) * simple[0]:
            return full + ("k1 k2 p1 p2 k3",)
        return simple + ("k1 k2 p1 p2",)

    # Outlier views: solve, drop views far above the median error, solve again.
    for _ in range(3):
        rms, K, dist, std_in, per_view, used_model = solve([d for _, d in used])
        limit = max(outlier_factor * float(np.median(per_view)), outlier_floor_px)
        bad = [i for i, e in enumerate(per_view) if e > limit]
        if not bad or len(used) - len(bad) < MIN_VIEWS:
            break
        for i in bad:
            rejected.append(
                Rejection(
                    used[i][0],
                    REASON_OUTLIER,
                    f"{per_view[i]:.2f} px > {limit:.2f} px ({outlier_factor:g} x the median view error)",
                )
            )
        used = [u for i, u in enumerate(used) if i not in set(bad)]
    dets = [d for _, d in used]
    coverage, _ = _coverage(dets, size)
    std = {name: float(std_in[i]) for i, name in enumerate(STD_NAMES) if i < len(std_in)}
    return IntrinsicsResult(
        K=np.asarray(K, dtype=np.float64),
        dist=dist,
        image_size=size,
        rms_px=rms,
        views=[ViewResult(n, float(e), len(d), float(d.edge_width_px)) for (n, d), e in zip(used, per_view)],
        rejected=rejected,
        std=std,
        coverage=coverage,
        board=str(board),
        model=used_model,
        detections=dets,
        when=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )


# ==================================================================== coverage picture
def coverage_image(result: IntrinsicsResult) -> np.ndarray:
    """A (h, w, 3) BGR picture of where the used corners lie: the image split into the
    coverage cells (green = has corners, red = empty), every corner as a dot and each
    view's outline, so an engineer sees at a glance which part of the image lacks views."""
    w, h = result.image_size
    img = np.full((h, w, 3), 40, np.uint8)
    _, counts = _coverage(result.detections, result.image_size)
    gw, gh = COVERAGE_GRID
    for j in range(gh):
        for i in range(gw):
            x0, x1 = int(i * w / gw), int((i + 1) * w / gw)
            y0, y1 = int(j * h / gh), int((j + 1) * h / gh)
            colour = (40, 90, 40) if counts[j, i] else (40, 40, 110)
            cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), colour, -1)
            cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (90, 90, 90), 1)
    rng = np.random.default_rng(0)
    for d in result.detections:
        colour = tuple(int(c) for c in rng.integers(120, 256, 3))
        hull = cv2.convexHull(d.image_points.astype(np.float32)).astype(np.int32)
        cv2.polylines(img, [hull], True, colour, 1, cv2.LINE_AA)
        for x, y in d.image_points:
            cv2.circle(img, (round(x), round(y)), 2, colour, -1, cv2.LINE_AA)
    scale = max(0.4, w / 1600)
    lines = [
        f"{len(result.views)} views, RMS {result.rms_px:.3f} px, coverage {100 * result.coverage:.0f} %",
        f"verdict: {result.verdict}",
    ]
    for k, text in enumerate(lines):
        org = (10, int(25 * scale * 1.6 * (k + 1)))
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img
