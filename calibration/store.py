"""The line's calibration file: one human-readable JSON file for the whole chain
pixel → belt mm → robot mm, plus the encoder.

Layout (format version 1)::

    {
      "format": "scallop-line-calibration",
      "version": 1,
      "written": "2025-01-31T08:12:00+00:00",
      "camera": {"name": "line1-top", "image_size": [1280, 720]},
      "intrinsics": {"id": …, "when": …, "K": [[…]], "dist": […], "rms_px": …, …},
      "belt":       {"id": …, "intrinsics_id": …, "R": [[…]], "t": […], "residual_max_mm": …, …},
      "encoder":    {"belt_id": …, "counts_per_mm": …, "count_sign": 1, "travel_dir": [1, 0], …},
      "arms": {"arm1": {"belt_id": …, "robot_from_belt": [[…4x4…]], "residuals_mm": […], …}},
      "fluorescence": {"id": …, "intrinsics_id": …, "homography": [[…3x3…]], "image_size": [1024, 768], …}
    }

``fluorescence`` is there only on a line with a second, fluorescence camera
(``scallop calibrate fluorescence``): the belt-plane homography from its pixels to the colour
camera's (both undistorted, see ``scallop.calibration.fluorescence``). A file without it reads
as before, and a program that does not know the part ignores it.

Every part keeps its provenance (when, board, RMS / residuals, verdict). Parts measured on
top of another carry that part's ``id`` (a digest of its numbers), so redoing the
intrinsics makes the belt pose visibly stale instead of silently wrong.

The runtime loads it with :meth:`LineCalibration.load`, which refuses a file for another
resolution or camera, a missing part, a stale part, a part whose verdict was REDO (unless the
caller names it in ``accept_redo``: the engineer's explicit override, which the line records),
numbers that cannot be a camera (a rotation that is not one, a focal length of zero) or a format
version it does not know, with a message that says which ``scallop calibrate`` step to run.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from scallop.calibration.camera_model import CameraModel
from scallop.calibration.errors import (
    CalibrationFileError,
    CameraMismatchError,
    FormatVersionError,
    MissingPartError,
    RedoVerdictError,
    StalePartError,
)
from scallop.calibration.fluorescence import check_section as check_fluorescence_section
from scallop.calibration.robot import RigidTransform
from scallop.errors import check_number

FORMAT = "scallop-line-calibration"
VERSION = 1
PARTS = ("intrinsics", "belt", "encoder", "arms", "fluorescence")
# What every line needs; the fluorescence part only a line with a second camera.
RUNTIME_PARTS = ("intrinsics", "belt", "encoder", "arms")

# What to run for each missing or stale part.
_HOW = {
    "intrinsics": "scallop calibrate intrinsics --board SPEC --out {path} PHOTOS",
    "belt": "scallop calibrate belt --calib {path} --board SPEC PHOTO",
    "encoder": "scallop calibrate encoder --calib {path} …",
    "arms": "scallop calibrate robot --calib {path} --arm NAME --points POINTS.csv",
    "fluorescence": "scallop calibrate fluorescence --calib {path} --board SPEC --thickness-mm MM "
    "--colour PHOTO... --fluorescence PHOTO...",
}


def _digest(*arrays) -> str:
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.round(np.asarray(a, dtype=np.float64), 9).tobytes())
    return h.hexdigest()[:12]


def _belt_id(belt: dict) -> str:
    # The pixel → belt mapping depends on the intrinsics too: a belt pose re-measured through
    # new intrinsics is a new belt part even if its numbers happen to repeat.
    return _digest(belt["R"], belt["t"]) + "-" + str(belt.get("intrinsics_id", ""))[:6]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------ JSON writing
def _num(v) -> str:
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    f = float(v)
    if not math.isfinite(f):
        return "null"
    return repr(f)


def _is_scalar(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str, np.integer, np.floating))


def _dumps(obj, indent: int = 0) -> str:
    """JSON with nesting indented but numeric rows (vectors, matrix rows) on one line, so a
    3×3 matrix reads as three lines."""
    pad = "  " * indent
    inner = "  " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {_dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple, np.ndarray)):
        seq = list(obj)
        if not seq:
            return "[]"
        if all(_is_scalar(v) and not isinstance(v, str) for v in seq):
            return "[" + ", ".join(_num(v) for v in seq) + "]"
        items = [f"{inner}{_dumps(v, indent + 1)}" for v in seq]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    if isinstance(obj, str):
        return json.dumps(obj, ensure_ascii=False)
    return _num(obj)


# ------------------------------------------------------------------ the calibration
def stored_array(sec, where: str, section: str, key: str, shape, how: str) -> np.ndarray:
    """``sec[key]`` of a stored part as a finite float array of ``shape`` (None: any), or
    CalibrationFileError naming ``section.key`` and saying ``how`` to mend it."""
    try:
        a = np.asarray(sec[key], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise CalibrationFileError(f"{where}: {section}.{key} is missing or not numbers; {how}") from None
    if shape is not None and a.shape != shape:
        raise CalibrationFileError(f"{where}: {section}.{key} has shape {a.shape}, expected {shape}")
    if not np.all(np.isfinite(a)):
        raise CalibrationFileError(f"{where}: {section}.{key} holds a non-finite value")
    return a


class LineCalibration:
    """The calibration of one line: camera intrinsics, belt pose, encoder, robot arms.

    Mapping methods (all mm, belt frame B of ``camera_model.py``)::

        pixel_to_belt(px (N,2), z_mm=0)      -> (N,2)  undistort + ray–plane
        belt_to_pixel(xy (N,2), z_mm=0)      -> (N,2)
        belt_to_robot(arm, xy (N,2|3))       -> (N,3)  robot frame of that arm
        robot_to_belt(arm, xyz (N,3))        -> (N,3)
        belt_shift_mm(delta_counts)          -> (N,2)  belt travel for encoder counts
    """

    def __init__(self, data: dict | None = None, path: str | os.PathLike | None = None) -> None:
        self.data: dict = (
            data
            if data is not None
            else {"format": FORMAT, "version": VERSION, "written": "", "camera": {"name": "", "image_size": None}}
        )
        self.path = Path(path) if path else None
        self._camera: CameraModel | None = None
        self.accepted_redo: list[str] = []  # parts with a REDO verdict used by the caller's override

    # ------------------------------------------------------------- construction
    @classmethod
    def new(cls, image_size: tuple[int, int], camera_name: str = "") -> LineCalibration:
        cal = cls()
        cal.data["camera"] = {"name": camera_name, "image_size": [int(image_size[0]), int(image_size[1])]}
        return cal

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        image_size: tuple[int, int] | None = None,
        camera_name: str | None = None,
        require: Iterable[str] = RUNTIME_PARTS,
        arms: Iterable[str] = (),
        accept_redo: Iterable[str] = (),
    ) -> LineCalibration:
        """Read and check a calibration file.

        image_size:  the camera's (w, h) now: a file for another resolution is refused.
        camera_name: refused when the file names another camera (an empty name matches).
        require:     parts that must be present and current ("intrinsics", "belt",
                     "encoder", "arms" = at least one arm, "fluorescence"); the runtime
                     needs the first four, a line with a fluorescence camera all five.
        arms:        arm names that must be present.
        accept_redo: parts used although their verdict is REDO ("intrinsics", "belt",
                     "encoder", "arms.NAME", "fluorescence"); listed afterwards in
                     ``accepted_redo``.
        """
        p = Path(path)
        if p.is_dir():
            raise CalibrationFileError(f"{p}: is a folder, not a calibration file (name the .json file in it)")
        if not p.is_file():
            raise CalibrationFileError(
                f"{p}: no such calibration file; create it with "
                f"'scallop calibrate intrinsics --board SPEC --out {p} PHOTOS'"
            )
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise CalibrationFileError(f"{p}: not a text file, so not a calibration file") from None
        except json.JSONDecodeError as e:
            raise CalibrationFileError(
                f"{p}: not valid JSON (line {e.lineno}: {e.msg}); restore it from a backup or recalibrate"
            ) from None
        cal = cls.from_dict(data, path=p)
        cal.check(image_size=image_size, camera_name=camera_name, require=require, arms=arms, accept_redo=accept_redo)
        return cal

    @classmethod
    def from_dict(cls, data: dict, path: str | os.PathLike | None = None) -> LineCalibration:
        where = str(path) if path else "calibration"
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CalibrationFileError(f'{where}: not a scallop line calibration file (no "format": "{FORMAT}")')
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise FormatVersionError(f"{where}: format version {version!r} is not a number; the file is damaged")
        if version != VERSION:
            newer = version > VERSION
            raise FormatVersionError(
                f"{where}: format version {version} is "
                + ("newer than this program reads" if newer else "not one this program reads")
                + f" (it reads version {VERSION}): "
                + ("update scallop on this machine, or " if newer else "")
                + "recalibrate with 'scallop calibrate' to write a current file"
            )
        cal = cls(data, path)
        cal._validate_numbers(where)
        return cal

    def _validate_numbers(self, where: str) -> None:
        def arr(section: str, key: str, shape):
            return stored_array(self.data.get(section), where, section, key, shape, "recalibrate that part")

        size = self.data.get("camera", {}).get("image_size")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise CalibrationFileError(f"{where}: camera.image_size must be [width, height], got {size!r}")
        if "intrinsics" in self.data:
            K = arr("intrinsics", "K", (3, 3))
            if not (K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], (0, 0, 1)) and K[1, 0] == 0):
                raise CalibrationFileError(
                    f"{where}: intrinsics.K is not a camera matrix (focal lengths > 0, last row 0 0 1); "
                    f"rerun '{self._how('intrinsics')}'"
                )
            d = arr("intrinsics", "dist", None)
            if d.ndim != 1 or d.size not in (4, 5, 8, 12, 14):
                raise CalibrationFileError(f"{where}: intrinsics.dist must hold 4, 5, 8, 12 or 14 numbers")
        if "belt" in self.data:
            R = arr("belt", "R", (3, 3))
            if not (np.allclose(R @ R.T, np.eye(3), atol=1e-6) and np.linalg.det(R) > 0):
                raise CalibrationFileError(
                    f"{where}: belt.R is not a rotation matrix (R times its transpose must be the identity, "
                    f"determinant +1); rerun '{self._how('belt')}'"
                )
            arr("belt", "t", (3,))
        if "encoder" in self.data:
            check_number(
                f"{where}: encoder.counts_per_mm",
                self.data["encoder"].get("counts_per_mm"),
                1e-6,
                1e6,
                error=CalibrationFileError,
            )
            if self.data["encoder"].get("count_sign") not in (1, -1):
                raise CalibrationFileError(f"{where}: encoder.count_sign must be 1 or -1")
            d = arr("encoder", "travel_dir", (2,))
            if abs(float(np.hypot(*d)) - 1.0) > 1e-3:
                raise CalibrationFileError(
                    f"{where}: encoder.travel_dir={d.tolist()} is not a unit vector; rerun '{self._how('encoder')}'"
                )
        if "fluorescence" in self.data:
            check_fluorescence_section(where, self.data["fluorescence"])
        for name, arm in self.data.get("arms", {}).items():
            try:
                RigidTransform.from_matrix(arm["robot_from_belt"])
            except (KeyError, TypeError, ValueError) as e:
                raise CalibrationFileError(
                    f"{where}: arms.{name}.robot_from_belt is not a 4x4 rigid transform "
                    f"({e}); rerun 'scallop calibrate robot --arm {name}'"
                ) from None

    # ------------------------------------------------------------- checks
    @property
    def image_size(self) -> tuple[int, int]:
        w, h = self.data["camera"]["image_size"]
        return int(w), int(h)

    @property
    def camera_name(self) -> str:
        return str(self.data.get("camera", {}).get("name") or "")

    def _how(self, part: str) -> str:
        return _HOW[part].format(path=self.path or "FILE")

    def stale_parts(self) -> dict[str, str]:
        """Parts measured on top of an older version of another part: {part: why}."""
        out = {}
        intr, belt = self.data.get("intrinsics"), self.data.get("belt")
        if belt and intr and belt.get("intrinsics_id") != intr.get("id"):
            out["belt"] = "the belt pose was measured with earlier intrinsics"
        fluo = self.data.get("fluorescence")
        if fluo and intr and fluo.get("intrinsics_id") != intr.get("id"):
            # Its homography is in the colour camera's undistorted pixels: new intrinsics, new pixels.
            out["fluorescence"] = "the fluorescence camera was registered through earlier colour intrinsics"
        if belt:
            enc = self.data.get("encoder")
            if enc and enc.get("belt_id") != belt.get("id"):
                out["encoder"] = "the encoder was measured against an earlier belt pose"
            for name, arm in self.data.get("arms", {}).items():
                if arm.get("belt_id") != belt.get("id"):
                    out[f"arm {name}"] = f"arm {name} was calibrated against an earlier belt pose"
        return out

    def check(
        self,
        *,
        image_size=None,
        camera_name=None,
        require: Iterable[str] = RUNTIME_PARTS,
        arms: Iterable[str] = (),
        accept_redo: Iterable[str] = (),
    ) -> None:
        """Raise the matching CalibrationFileError when this calibration does not fit."""
        where = str(self.path) if self.path else "calibration"
        if image_size is not None:
            w, h = (int(v) for v in image_size)
            if (w, h) != self.image_size:
                fw, fh = self.image_size
                raise CameraMismatchError(
                    f"{where}: made for {fw}x{fh} images but the camera delivers {w}x{h}: set the camera back "
                    f"to {fw}x{fh}, or calibrate this camera ('scallop calibrate intrinsics … --out NEWFILE')"
                )
        if camera_name and self.camera_name and camera_name != self.camera_name:
            raise CameraMismatchError(
                f"{where}: made for camera {self.camera_name!r}, not {camera_name!r}: load that camera's "
                f"calibration file, or calibrate this camera"
            )
        require = tuple(require)
        for part in require:
            if part not in PARTS:
                raise ValueError(f"unknown calibration part {part!r}: use one of {', '.join(PARTS)}")
            present = bool(self.data.get(part))
            if not present:
                what = "no robot arm calibration" if part == "arms" else f"no {part} calibration"
                raise MissingPartError(f"{where}: has {what}; run '{self._how(part)}'")
        for name in arms:
            if name not in self.data.get("arms", {}):
                have = ", ".join(self.data.get("arms", {})) or "none"
                raise MissingPartError(
                    f"{where}: has no calibration for arm {name!r} (calibrated arms: {have}); run "
                    f"'scallop calibrate robot --calib {self.path or 'FILE'} --arm {name} --points POINTS.csv'"
                )
        stale = self.stale_parts()
        needed = set(require) | {f"arm {a}" for a in arms}
        if "arms" in require:
            needed |= {f"arm {a}" for a in self.data.get("arms", {})}
        for part, why in stale.items():
            if part in needed:
                redo = part if part in _HOW else "arms"
                raise StalePartError(f"{where}: {why}; rerun '{self._how(redo)}'")
        self._check_verdicts(where, needed, set(accept_redo))

    def _check_verdicts(self, where: str, needed: set[str], accept: set[str]) -> None:
        """A part its own step judged REDO is not used unless the caller accepts it by name."""
        self.accepted_redo = []
        sections = [(p, p, self.data.get(p)) for p in ("intrinsics", "belt", "encoder", "fluorescence")]
        sections += [(f"arm {n}", f"arms.{n}", a) for n, a in self.data.get("arms", {}).items()]
        for part, key, sec in sections:
            if part not in needed or not isinstance(sec, dict) or sec.get("verdict") != "redo":
                continue
            if key in accept:
                self.accepted_redo.append(key)
                continue
            redo = "arms" if part.startswith("arm ") else part
            raise RedoVerdictError(
                f"{where}: the {part} calibration has verdict REDO (measured {sec.get('when') or 'at an unknown time'}): "
                f"redo it ('{self._how(redo)}'), or use it knowingly by naming {key!r} in "
                "runtime.accept_redo_calibration"
            )

    # ------------------------------------------------------------- parts
    def has(self, part: str) -> bool:
        return bool(self.data.get(part))

    def _stamp(self) -> None:
        self.data["written"] = _now()
        self._camera = None

    def set_intrinsics(self, section: dict) -> None:
        """Store an intrinsics section (``IntrinsicsResult.section()``); the image size and
        camera name of the file follow it."""
        size = [int(v) for v in section["image_size"]]
        old = self.data.get("camera", {}).get("image_size")
        if old and list(old) != size and any(self.has(p) for p in ("belt", "arms", "fluorescence")):
            # A new resolution invalidates everything measured through the old one.
            for part in ("belt", "encoder", "arms", "fluorescence"):
                self.data.pop(part, None)
        sec = dict(section)
        sec["id"] = _digest(sec["K"], sec["dist"])
        self.data["camera"] = {"name": sec.get("camera", "") or self.camera_name, "image_size": size}
        self.data["intrinsics"] = sec
        self._stamp()

    def set_belt(self, section: dict) -> None:
        if not self.has("intrinsics"):
            raise MissingPartError(f"no intrinsics yet: run '{self._how('intrinsics')}' first")
        sec = dict(section)
        sec["intrinsics_id"] = self.data["intrinsics"]["id"]
        sec["id"] = _belt_id(sec)
        self.data["belt"] = sec
        self._stamp()

    def set_encoder(self, section: dict, *, align: bool = True) -> float:
        """Store the encoder section. With ``align`` the belt frame is turned about its
        origin so +x follows the measured travel exactly; arm transforms are carried over
        (they stay valid). Returns the angle turned (degrees)."""
        if not self.has("belt"):
            raise MissingPartError(f"no belt calibration yet: run '{self._how('belt')}' first")
        sec = dict(section)
        angle = 0.0
        if align:
            d = np.asarray(sec["travel_dir"], dtype=np.float64)
            angle = float(np.arctan2(d[1], d[0]))
            if abs(angle) > 1e-12:
                from scallop.calibration.belt import turn_about

                belt = self.data["belt"]
                pivot = belt.get("placement", {}).get("origin_mm", (0.0, 0.0))
                # X_old = Rz @ X_new + shift: turn about the board's stated origin.
                Rz, shift = turn_about(angle, pivot)
                old_id = belt["id"]
                R_old = np.asarray(belt["R"], dtype=np.float64)
                belt["R"] = (R_old @ Rz).tolist()
                belt["t"] = (np.asarray(belt["t"], dtype=np.float64) + R_old @ shift).tolist()
                belt["travel_angle_deg"] = float(belt.get("travel_angle_deg", 0.0)) + np.degrees(angle)
                belt["id"] = _belt_id(belt)
                for arm in self.data.get("arms", {}).values():
                    if arm.get("belt_id") == old_id:
                        m = np.asarray(arm["robot_from_belt"], dtype=np.float64)
                        m[:3, 3] = m[:3, 3] + m[:3, :3] @ shift
                        m[:3, :3] = m[:3, :3] @ Rz
                        arm["robot_from_belt"] = m.tolist()
                        arm["belt_id"] = belt["id"]
                        arm["aligned_to_travel_deg"] = float(np.degrees(angle))
            sec["travel_dir"] = [1.0, 0.0]
            sec["aligned"] = True
        sec["belt_id"] = self.data["belt"]["id"]
        self.data["encoder"] = sec
        self._stamp()
        return float(np.degrees(angle))

    def set_arm(self, name: str, section: dict) -> None:
        if not self.has("belt"):
            raise MissingPartError(f"no belt calibration yet: run '{self._how('belt')}' first")
        if not name or not str(name).replace("-", "").replace("_", "").isalnum():
            raise CalibrationFileError(f"arm name {name!r}: use letters, digits, - and _")
        sec = dict(section)
        sec["belt_id"] = self.data["belt"]["id"]
        self.data.setdefault("arms", {})[name] = sec
        self._stamp()

    def set_fluorescence(self, section: dict) -> None:
        """Store the fluorescence camera's registration (``FluorescenceResult.section()``):
        ``homography`` (3×3, undistorted fluorescence pixels → undistorted colour pixels, on the
        belt plane), ``image_size`` ([w, h] of the fluorescence camera), optionally its ``K`` and
        ``dist``, and the step's figures and verdict. It is tied to the colour intrinsics it was
        measured through: redoing them makes it stale."""
        if not self.has("intrinsics"):
            raise MissingPartError(f"no intrinsics yet: run '{self._how('intrinsics')}' first")
        sec = dict(section)
        sec["homography"] = np.asarray(sec.get("homography"), dtype=np.float64).tolist()
        check_fluorescence_section(str(self.path or "calibration"), sec)
        sec["intrinsics_id"] = self.data["intrinsics"]["id"]
        sec["id"] = _digest(sec["homography"], sec.get("K", np.zeros(0)), sec.get("dist", np.zeros(0)))
        self.data["fluorescence"] = sec
        self._stamp()

    # ------------------------------------------------------------- mappings
    @property
    def camera(self) -> CameraModel:
        """Intrinsics and belt pose as one CameraModel (needs both parts)."""
        if self._camera is None:
            if not self.has("intrinsics") or not self.has("belt"):
                missing = "intrinsics" if not self.has("intrinsics") else "belt"
                raise MissingPartError(
                    f"{self.path or 'calibration'}: has no {missing} calibration; run '{self._how(missing)}'"
                )
            i, b = self.data["intrinsics"], self.data["belt"]
            self._camera = CameraModel(K=i["K"], dist=i["dist"], R=b["R"], t=b["t"], image_size=self.image_size)
        return self._camera

    @property
    def fluorescence_homography(self) -> np.ndarray | None:
        """(3, 3) float64 from the fluorescence camera's undistorted pixels to the colour camera's
        undistorted pixels on the belt plane (for lenses without distortion, raw pixels to raw
        pixels: ``cv2.warpPerspective(fluo, H, colour size)``); None without the part.
        ``scallop.calibration.fluorescence.Registration.from_calibration`` maps raw pixels
        exactly with distortion too."""
        sec = self.data.get("fluorescence")
        if not sec:
            return None
        return np.asarray(sec["homography"], dtype=np.float64).reshape(3, 3)

    @property
    def fluorescence_size(self) -> tuple[int, int] | None:
        """(w, h) of the fluorescence camera's images; None without the part."""
        sec = self.data.get("fluorescence")
        if not sec:
            return None
        w, h = sec["image_size"]
        return int(w), int(h)

    @property
    def fluorescence_intrinsics(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(K (3, 3), dist) of the fluorescence camera when the part holds them, else None
        (its lens was taken to be distortion-free)."""
        sec = self.data.get("fluorescence")
        if not sec or "K" not in sec:
            return None
        return np.asarray(sec["K"], dtype=np.float64), np.asarray(sec["dist"], dtype=np.float64)

    @property
    def fluorescence_camera(self) -> CameraModel | None:
        """The fluorescence camera's intrinsics and pose on the belt when the part holds them
        (measured with its intrinsics), else None."""
        sec = self.data.get("fluorescence")
        if not sec or "R" not in sec:
            return None
        return CameraModel(K=sec["K"], dist=sec["dist"], R=sec["R"], t=sec["t"], image_size=tuple(sec["image_size"]))

    @property
    def K(self) -> np.ndarray:
        return np.asarray(self.data["intrinsics"]["K"], dtype=np.float64)

    @property
    def dist(self) -> np.ndarray:
        return np.asarray(self.data["intrinsics"]["dist"], dtype=np.float64)

    def pixel_to_belt(self, px, z_mm: float = 0.0) -> np.ndarray:
        """Pixels (N, 2) → belt mm (N, 2) on the plane z = ``z_mm``."""
        return self.camera.pixel_to_belt(px, z_mm=z_mm)

    def mm_per_px_center(self) -> float:
        """Scale on the belt (mm per pixel) at the image centre."""
        w, h = self.image_size
        return float(self.camera.mm_per_px_at([(w - 1) / 2.0, (h - 1) / 2.0])[0])

    def belt_to_pixel(self, xy, z_mm: float = 0.0) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return self.camera.project(np.column_stack([xy, np.full(len(xy), float(z_mm))]))

    def robot_from_belt(self, arm: str) -> RigidTransform:
        arms = self.data.get("arms", {})
        if arm not in arms:
            raise MissingPartError(
                f"{self.path or 'calibration'}: no calibration for arm {arm!r} (calibrated: "
                f"{', '.join(arms) or 'none'}); run 'scallop calibrate robot --arm {arm} …'"
            )
        return RigidTransform.from_matrix(arms[arm]["robot_from_belt"])

    def belt_to_robot(self, arm: str, xy, z_mm: float = 0.0) -> np.ndarray:
        """Belt points (N, 2) at height ``z_mm`` (or (N, 3)) → that arm's frame (N, 3), mm."""
        p = np.asarray(xy, dtype=np.float64)
        p = p.reshape(-1, p.shape[-1])
        if p.shape[1] == 2:
            p = np.column_stack([p, np.full(len(p), float(z_mm))])
        return self.robot_from_belt(arm).apply(p)

    def robot_to_belt(self, arm: str, xyz) -> np.ndarray:
        return self.robot_from_belt(arm).inverse().apply(xyz)

    @property
    def counts_per_mm(self) -> float:
        self.check(require=("encoder",))
        return float(self.data["encoder"]["counts_per_mm"])

    @property
    def count_sign(self) -> int:
        self.check(require=("encoder",))
        return int(self.data["encoder"]["count_sign"])

    @property
    def travel_dir(self) -> np.ndarray:
        self.check(require=("encoder",))
        return np.asarray(self.data["encoder"]["travel_dir"], dtype=np.float64)

    def belt_shift_mm(self, delta_counts) -> np.ndarray:
        """Belt travel (N, 2) mm, in the belt frame, for encoder count differences (N,)."""
        dc = np.atleast_1d(np.asarray(delta_counts, dtype=np.float64))
        return (dc * self.count_sign / self.counts_per_mm)[:, None] * self.travel_dir[None, :]

    # ------------------------------------------------------------- output
    def summary(self) -> dict:
        """Per-part status for ``scallop calibrate show``."""
        stale = self.stale_parts()
        parts = {}
        for part in ("intrinsics", "belt", "encoder"):
            sec = self.data.get(part)
            parts[part] = (
                None if not sec else {"when": sec.get("when"), "verdict": sec.get("verdict"), "stale": stale.get(part)}
            )
        parts["arms"] = {
            name: {
                "when": a.get("when"),
                "verdict": a.get("verdict"),
                "rms_mm": a.get("rms_mm"),
                "stale": stale.get(f"arm {name}"),
            }
            for name, a in self.data.get("arms", {}).items()
        }
        fl = self.data.get("fluorescence")
        parts["fluorescence"] = (
            None
            if not fl
            else {
                "when": fl.get("when"),
                "verdict": fl.get("verdict"),
                "residual_max_mm": fl.get("residual_max_mm"),
                "image_size": fl.get("image_size"),
                "stale": stale.get("fluorescence"),
            }
        )
        return {
            "file": str(self.path) if self.path else None,
            "format": FORMAT,
            "version": VERSION,
            "written": self.data.get("written"),
            "camera": self.data.get("camera"),
            "parts": parts,
        }

    def to_json_text(self) -> str:
        return _dumps(self.data) + "\n"

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the file (atomically: a crash mid-write leaves the old file intact)."""
        p = Path(path) if path else self.path
        if p is None:
            raise CalibrationFileError("no file to save the calibration to: pass --out FILE")
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(self.to_json_text(), encoding="utf-8")
        os.replace(tmp, p)
        self.path = p
        return p


def load_calibration(
    path: str | os.PathLike,
    *,
    image_size: tuple[int, int] | None = None,
    camera_name: str | None = None,
    require: Iterable[str] = ("intrinsics", "belt"),
    arms: Iterable[str] = (),
    accept_redo: Iterable[str] = (),
) -> LineCalibration:
    """Load a line calibration for mapping pixels to the belt (intrinsics + belt by default;
    pass ``require=RUNTIME_PARTS`` for the whole chain). See :meth:`LineCalibration.load`."""
    return LineCalibration.load(
        path, image_size=image_size, camera_name=camera_name, require=require, arms=arms, accept_redo=accept_redo
    )
