"""Calibration boards: the spec string, the printed geometry, detection in a photo.

Spec strings (what engineers type after ``--board``)::

    chessboard:COLSxROWS:SQUARE_MM                e.g. chessboard:9x6:25
    charuco:COLSxROWS:SQUARE_MM:MARKER_MM:DICT    e.g. charuco:7x5:30:22:DICT_5X5_100

The counts follow OpenCV's own conventions so a board printed for OpenCV works unchanged:
a chessboard is counted in **inner corners** (what ``findChessboardCorners`` is given), a
ChArUco board in **squares** (what ``cv2.aruco.CharucoBoard`` is given).

Board frame (mm): origin at inner corner 0, x along a row of corners, y along a column, z
into the board (OpenCV's convention for calibration targets). Corner ids run row-major over
the inner-corner grid: ``id = j * nx + i`` sits at ``(i * square, j * square, 0)``. ChArUco
corner ids from OpenCV use the same numbering, so both kinds share one geometry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from scallop.calibration.errors import BoardSpecError

# Boards bigger than this are not printed on anything an engineer can carry.
MAX_SQUARES = 40
MIN_CORNERS_PER_VIEW = 6


def _dictionary_names() -> list[str]:
    return sorted(n for n in dir(cv2.aruco) if n.startswith("DICT_") and n == n.upper())


@dataclass(frozen=True)
class BoardSpec:
    """A printed calibration board.

    kind:       "chessboard" or "charuco".
    cols, rows: chessboard → inner corners per row / per column; charuco → squares.
    square_mm:  side of one square as printed (measure the print: printers scale).
    marker_mm:  ChArUco only: side of the ArUco marker inside a white square.
    dictionary: ChArUco only: OpenCV predefined dictionary name, e.g. "DICT_5X5_100".
    """

    kind: Literal["chessboard", "charuco"]
    cols: int
    rows: int
    square_mm: float
    marker_mm: float | None = None
    dictionary: str | None = None
    _cv: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in ("chessboard", "charuco"):
            raise BoardSpecError(f"board kind {self.kind!r} is unknown: use chessboard or charuco")
        low = 2 if self.kind == "chessboard" else 3
        for name in ("cols", "rows"):
            v = getattr(self, name)
            if not isinstance(v, int) or not (low <= v <= MAX_SQUARES):
                unit = "inner corners" if self.kind == "chessboard" else "squares"
                raise BoardSpecError(f"{name}={v} is out of range: allowed {low}..{MAX_SQUARES} {unit}")
        if not (self.square_mm > 0 and np.isfinite(self.square_mm)):
            raise BoardSpecError(f"square_mm={self.square_mm} is out of range: must be > 0")
        if self.kind == "charuco":
            if self.marker_mm is None or not (0 < self.marker_mm < self.square_mm):
                raise BoardSpecError(
                    f"marker_mm={self.marker_mm} is out of range: allowed 0..{self.square_mm:g} "
                    f"(the marker sits inside a square)"
                )
            names = _dictionary_names()
            if self.dictionary not in names:
                raise BoardSpecError(
                    f"dictionary {self.dictionary!r} is unknown: use one of "
                    f"{', '.join(n for n in names if not n.startswith('DICT_APRILTAG'))}"
                )
            # A board needs one marker per white square; a small dictionary cannot label them all.
            n_markers = (self.cols * self.rows) // 2
            m = re.search(r"_(\d+)$", self.dictionary)
            size = int(m.group(1)) if m else 0
            if size and n_markers > size:
                raise BoardSpecError(
                    f"{self.cols}x{self.rows} squares need {n_markers} markers but {self.dictionary} has "
                    f"only {size}: use a larger dictionary"
                )

    # ---------------------------------------------------------------- geometry
    @property
    def corner_grid(self) -> tuple[int, int]:
        """(nx, ny): inner corners per row and per column."""
        if self.kind == "chessboard":
            return self.cols, self.rows
        return self.cols - 1, self.rows - 1

    @property
    def n_corners(self) -> int:
        nx, ny = self.corner_grid
        return nx * ny

    @property
    def squares(self) -> tuple[int, int]:
        """Printed squares per row and per column."""
        nx, ny = self.corner_grid
        return nx + 1, ny + 1

    @property
    def size_mm(self) -> tuple[float, float]:
        """Extent of the printed squares (without the white margin)."""
        sx, sy = self.squares
        return sx * self.square_mm, sy * self.square_mm

    def object_points(self, ids=None) -> np.ndarray:
        """Board-frame corner positions (N,3) in mm for ``ids`` (N,), default all corners."""
        nx, ny = self.corner_grid
        ids = np.arange(nx * ny) if ids is None else np.asarray(ids, dtype=np.int64).ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= nx * ny):
            raise BoardSpecError(f"corner id out of range for {self}: allowed 0..{nx * ny - 1}")
        pts = np.zeros((ids.size, 3))
        pts[:, 0] = (ids % nx) * self.square_mm
        pts[:, 1] = (ids // nx) * self.square_mm
        return pts

    def relabelings(self) -> list[np.ndarray]:
        """Id permutations that describe the same printed board seen another way round.

        A plain chessboard has no marked origin: OpenCV may number its corners from either
        end (a 180° turn), and a square grid may also come out turned by 90°. ChArUco ids are
        unique, so only the identity remains. ``perm[k]`` is the id that corner ``k`` gets.
        """
        nx, ny = self.corner_grid
        ident = np.arange(nx * ny)
        if self.kind == "charuco":
            return [ident]
        out = [ident, ident[::-1].copy()]
        if nx == ny:
            i, j = ident % nx, ident // nx
            out.append((nx - 1 - i) * nx + j)  # 90°: (i, j) → (j, n-1-i)
            out.append(i * nx + (nx - 1 - j))
        return out

    # ---------------------------------------------------------------- OpenCV objects
    def cv_board(self):
        """The ``cv2.aruco.CharucoBoard`` (ChArUco only), built once."""
        if self.kind != "charuco":
            raise BoardSpecError(f"{self} is not a ChArUco board")
        if "board" not in self._cv:
            d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
            self._cv["board"] = cv2.aruco.CharucoBoard(
                (self.cols, self.rows), float(self.square_mm), float(self.marker_mm), d
            )
        return self._cv["board"]

    def render(self, px_per_mm: float = 4.0, margin_mm: float | None = None) -> tuple[np.ndarray, float, float]:
        """The printable board as a grey image.

        Returns ``(image, px_per_mm, origin_px)``: the (H, W) uint8 image, the scale actually
        used (rounded so a square is a whole number of pixels, which keeps edges crisp) and
        the pixel coordinate (same in x and y, pixel centres at integers) of inner corner 0.
        """
        if not (px_per_mm > 0):
            raise BoardSpecError(f"px_per_mm={px_per_mm} is out of range: must be > 0")
        sq = max(2, round(self.square_mm * px_per_mm))
        ppm = sq / self.square_mm
        margin = round((self.square_mm if margin_mm is None else margin_mm) * ppm)
        sx, sy = self.squares
        w, h = sx * sq + 2 * margin, sy * sq + 2 * margin
        if self.kind == "chessboard":
            jj, ii = np.mgrid[0:sy, 0:sx]
            cells = np.where((ii + jj) % 2 == 0, 0, 255).astype(np.uint8)  # top-left square black
            img = np.full((h, w), 255, np.uint8)
            img[margin : margin + sy * sq, margin : margin + sx * sq] = np.kron(cells, np.ones((sq, sq), np.uint8))
        else:
            img = self.cv_board().generateImage((w, h), marginSize=margin, borderBits=1)
        # Inner corner 0 is one square in from the squares' outer corner; pixel centres are
        # at integers, so a boundary between pixels sits at k - 0.5.
        return img, ppm, margin + sq - 0.5

    def __str__(self) -> str:
        base = f"{self.kind}:{self.cols}x{self.rows}:{self.square_mm:g}"
        if self.kind == "charuco":
            return f"{base}:{self.marker_mm:g}:{self.dictionary}"
        return base


_SPEC_HELP = (
    "expected chessboard:COLSxROWS:SQUARE_MM (inner corners, e.g. chessboard:9x6:25) or "
    "charuco:COLSxROWS:SQUARE_MM:MARKER_MM:DICT (squares, e.g. charuco:7x5:30:22:DICT_5X5_100)"
)


def parse_board(spec: str) -> BoardSpec:
    """Parse a board spec string; raises BoardSpecError naming what is wrong."""
    if isinstance(spec, BoardSpec):
        return spec
    text = str(spec).strip()
    parts = text.split(":")
    kind = parts[0].lower()
    if kind not in ("chessboard", "charuco"):
        raise BoardSpecError(f"board {text!r}: unknown kind {parts[0]!r}; {_SPEC_HELP}")
    want = 3 if kind == "chessboard" else 5
    if len(parts) != want:
        raise BoardSpecError(f"board {text!r}: {len(parts)} fields, {kind} needs {want}; {_SPEC_HELP}")
    m = re.fullmatch(r"(\d+)[xX](\d+)", parts[1])
    if not m:
        raise BoardSpecError(f"board {text!r}: size {parts[1]!r} is not COLSxROWS; {_SPEC_HELP}")
    nums = []
    for label, s in zip(("SQUARE_MM", "MARKER_MM"), parts[2:4] if kind == "charuco" else parts[2:3]):
        try:
            nums.append(float(s))
        except ValueError:
            raise BoardSpecError(f"board {text!r}: {label} {s!r} is not a number; {_SPEC_HELP}") from None
    if kind == "chessboard":
        return BoardSpec("chessboard", int(m.group(1)), int(m.group(2)), nums[0])
    return BoardSpec("charuco", int(m.group(1)), int(m.group(2)), nums[0], nums[1], parts[4].upper())


# ==================================================================== detection
@dataclass
class Detection:
    """Board corners found in one image.

    image_points:  (N, 2) float64, pixel coordinates (subpixel-refined, distorted image).
    ids:           (N,) int64, corner ids on the board (see the module doc).
    object_points: (N, 3) float64, the same corners in the board frame, mm.
    image_size:    (w, h) of the image they were found in.
    edge_width_px: median 10–90 % width of the board's black/white edges (blur measure).
    """

    image_points: np.ndarray
    ids: np.ndarray
    object_points: np.ndarray
    image_size: tuple[int, int]
    edge_width_px: float = float("nan")

    def __len__(self) -> int:
        return len(self.ids)


def to_gray(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    if img.ndim != 2:
        raise BoardSpecError(f"expected a grey or BGR image, got shape {img.shape}")
    return img


def _neighbour_pairs(ids: np.ndarray, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (a, b) into ``ids`` of corners that are grid neighbours (right or below)."""
    pos = {int(k): n for n, k in enumerate(ids)}
    a, b = [], []
    for n, k in enumerate(ids):
        k = int(k)
        for nb in ((k + 1) if (k % nx) < nx - 1 else None, k + nx):
            if nb is not None and nb in pos:
                a.append(n)
                b.append(pos[nb])
    return np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)


def _clear_fraction(board: BoardSpec) -> float:
    """How far from a corner (as a fraction of the corner spacing) the image holds nothing
    but the corner's own two edges: up to the next corner on a chessboard, only up to the
    marker inside the white square on a ChArUco board."""
    if board.kind == "charuco":
        return 0.5 * (board.square_mm - board.marker_mm) / board.square_mm
    return 0.5


def _subpix_half_window(points: np.ndarray, ids: np.ndarray, nx: int, clear: float) -> int:
    """Half-size of the cornerSubPix window: large enough to average noise, small enough
    that it never reaches another edge (which would pull the estimate)."""
    a, b = _neighbour_pairs(ids, nx)
    if len(a) == 0:
        return 3
    spacing = float(np.min(np.linalg.norm(points[a] - points[b], axis=1)))
    return int(np.clip(np.floor(0.8 * clear * spacing), 2, 11))


def _crossing(r: np.ndarray, x: np.ndarray, level: float) -> float | None:
    """Where the rising profile ``r`` (over positions ``x``) first reaches ``level``,
    linearly interpolated; None when it starts above it or never gets there."""
    idx = np.nonzero(r >= level)[0]
    if len(idx) == 0 or idx[0] == 0:
        return None
    i = idx[0]
    f = (level - r[i - 1]) / max(r[i] - r[i - 1], 1e-9)
    return float(x[i - 1] + f * (x[i] - x[i - 1]))


def edge_width_px(gray: np.ndarray, points: np.ndarray, ids: np.ndarray, nx: int, clear: float = 0.5) -> float:
    """Median 10–90 % rise width (px) of the edges between neighbouring corners.

    Halfway between two neighbouring corners the board has one straight black/white edge
    along the line joining them; its profile across that line gives the blur in pixels,
    whatever the board's scale. A sharp, well-focused edge measures about 1–2.5 px.
    ``clear``: how far off the edge (fraction of the corner spacing) nothing else is printed.
    """
    a, b = _neighbour_pairs(ids, nx)
    if len(a) == 0:
        return float("nan")
    p, q = points[a], points[b]
    d = q - p
    length = np.linalg.norm(d, axis=1)
    ok = length > 4
    p, d, length = p[ok], d[ok], length[ok]
    if len(p) == 0:
        return float("nan")
    mid = p + d / 2
    n = np.column_stack([-d[:, 1], d[:, 0]]) / length[:, None]
    # Stay clear of the squares' other edges; sample finely enough to resolve a 1 px edge.
    half = np.minimum(0.8 * clear * length, 12.0)
    steps = np.linspace(-1.0, 1.0, int(np.ceil(2 * half.max() / 0.2)) + 1)
    offs = half[:, None] * steps[None, :]
    xs = (mid[:, 0:1] + n[:, 0:1] * offs).astype(np.float32)
    ys = (mid[:, 1:2] + n[:, 1:2] * offs).astype(np.float32)
    prof = cv2.remap(gray.astype(np.float32), xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    widths = []
    for k in range(len(prof)):
        pr = prof[k]
        lo, hi = np.mean(pr[:5]), np.mean(pr[-5:])
        if abs(hi - lo) < 20:  # no real edge (glare, a marker in the way)
            continue
        if hi < lo:
            pr, lo, hi = pr[::-1], hi, lo
        r = (pr - lo) / (hi - lo)
        x10, x90 = _crossing(r, offs[k], 0.1), _crossing(r, offs[k], 0.9)
        if x10 is not None and x90 is not None and x90 >= x10:
            widths.append(x90 - x10)
    return float(np.median(widths)) if widths else float("nan")


def detect(image: np.ndarray, board: BoardSpec | str, *, refine: bool = True) -> Detection | None:
    """Find ``board`` in ``image`` (grey or BGR); None when it is not there.

    Corners are refined with ``cornerSubPix`` (window sized from the corner spacing). A
    chessboard must be seen whole; a ChArUco board may be partly hidden (at least
    :data:`MIN_CORNERS_PER_VIEW` corners, not all on one line).
    """
    board = parse_board(board)
    gray = to_gray(image)
    h, w = gray.shape
    nx, ny = board.corner_grid
    if board.kind == "chessboard":
        flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
        found, corners = cv2.findChessboardCorners(gray, (nx, ny), flags=flags)
        if not found or corners is None:
            # The sector-based detector copes with harder lighting; it is slower, so second.
            found, corners = cv2.findChessboardCornersSB(gray, (nx, ny), flags=cv2.CALIB_CB_NORMALIZE_IMAGE)
            if not found or corners is None:
                return None
        pts = np.asarray(corners, dtype=np.float32).reshape(-1, 2)
        ids = np.arange(nx * ny, dtype=np.int64)
    else:
        det = board._cv.get("detector")
        if det is None:
            det = board._cv["detector"] = cv2.aruco.CharucoDetector(board.cv_board())
        ch_corners, ch_ids, _, _ = det.detectBoard(gray)
        if ch_corners is None or ch_ids is None or len(ch_ids) < MIN_CORNERS_PER_VIEW:
            return None
        pts = np.asarray(ch_corners, dtype=np.float32).reshape(-1, 2)
        ids = np.asarray(ch_ids, dtype=np.int64).ravel()
        order = np.argsort(ids)
        pts, ids = pts[order], ids[order]
        # All corners on one line fix no pose and poison a calibration.
        obj = board.object_points(ids)[:, :2]
        sv = np.linalg.svd(obj - obj.mean(0), compute_uv=False)
        if sv[1] < 1e-6 * max(sv[0], 1e-12):
            return None
    if refine:
        half = _subpix_half_window(pts.astype(np.float64), ids, nx, _clear_fraction(board))
        crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 40, 0.001)
        pts = cv2.cornerSubPix(gray, pts.reshape(-1, 1, 2).copy(), (half, half), (-1, -1), crit).reshape(-1, 2)
    pts64 = pts.astype(np.float64)
    return Detection(
        image_points=pts64,
        ids=ids,
        object_points=board.object_points(ids),
        image_size=(w, h),
        edge_width_px=edge_width_px(gray, pts64, ids, nx, _clear_fraction(board)),
    )
