"""The scallop row: one scallop's pick or skip, checked before it is queued."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from scallop.app.line.states import DISPOSITIONS as LINE_DISPOSITIONS
from scallop.app.record.schema import RecordError

RESULTS = ("picked", "failed", "skipped")
# Where a scallop left the belt (scallop.app.line.states.Disposition); '' when the line has no
# disposition for it (a record written by hand, a test, one before schema 5).
DISPOSITIONS = ("", *LINE_DISPOSITIONS)
LOT_MAX = 40


def check_lot(lot: object) -> str:
    """A production lot as the record keeps it: 1 to 40 characters, letters (of any script) and
    digits, with ``-``, ``/``, ``.``, ``_`` and single inner spaces between them; it starts
    with a letter or a digit (so a spreadsheet never reads a lot as a formula). Surrounding
    spaces are dropped; '' ends the lot."""
    if not isinstance(lot, str):
        raise RecordError(f"lot={lot!r}: expected the lot as text")
    s = lot.strip()
    if not s:
        return ""
    ok = (
        len(s) <= LOT_MAX
        and s[0].isalnum()
        and all(c.isalnum() or c in "-/._ " for c in s)
        and "  " not in s
        and all(c.isprintable() for c in s)
    )
    if not ok:
        raise RecordError(
            f"lot={lot!r}: allowed 1 to {LOT_MAX} letters and digits, with - / . _ and single spaces between "
            "them, starting with a letter or a digit"
        )
    return s


_REASON_RE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def _opt_float(name: str, v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise RecordError(f"{name}={v!r}: expected a finite number or None")
    return float(v)


@dataclass
class ScallopRecord:
    """One scallop's row. Belt-frame coordinates in mm (x along travel, y across) at ``encoder_mm``."""

    track_id: int  # the runtime's id for this scallop, unique within a run
    time: float  # wall clock (epoch s) of the pick/skip decision
    encoder_mm: float  # belt position (encoder, mm) of the view that decided
    result: str  # "picked" (pick executed), "failed" (pick aborted/errored), "skipped"
    skip_reason: str = ""  # required for "skipped": e.g. "no_uro", "border", "no_arm_free"
    arm: str = ""  # the arm that picked; required for picked/failed
    x_mm: float | None = None  # scallop centre
    y_mm: float | None = None
    diameter_mm: float | None = None
    score: float | None = None  # detection confidence 0..1
    views: int = 1  # frames the scallop was seen in
    uro_found: bool = False
    uro_x_mm: float | None = None  # uro centre
    uro_y_mm: float | None = None
    uro_score: float | None = None  # uro confidence 0..1
    grasp_x_mm: float | None = None  # where the gripper closes
    grasp_y_mm: float | None = None
    pull_angle_deg: float | None = None  # pull direction, degrees from +x toward +y
    uro_removed: bool | None = None  # None: not known (no grading, no sensor)
    adductor_hit: bool | None = None
    doubtful: bool = False  # low confidence, or the runtime is unsure of the result
    detail: dict = field(default_factory=dict)  # anything else, JSON-serialisable
    disposition: str = ""  # where it left the belt: picked, passed, diverted, not_diverted
    lot: str = ""  # the production lot ('' = the writer's current lot)

    def __post_init__(self) -> None:
        if isinstance(self.track_id, bool) or not isinstance(self.track_id, int):
            raise RecordError(f"track_id={self.track_id!r}: expected an integer")
        for name in ("time", "encoder_mm"):
            if _opt_float(name, getattr(self, name)) is None:
                raise RecordError(f"{name}=None: a scallop row needs it")
        for name in (
            "x_mm",
            "y_mm",
            "diameter_mm",
            "score",
            "uro_x_mm",
            "uro_y_mm",
            "uro_score",
            "grasp_x_mm",
            "grasp_y_mm",
            "pull_angle_deg",
        ):
            _opt_float(name, getattr(self, name))
        if self.result not in RESULTS:
            raise RecordError(f"result={self.result!r} is not allowed: choose one of {', '.join(RESULTS)}")
        if self.result == "skipped":
            if not _REASON_RE.match(self.skip_reason or ""):
                raise RecordError(
                    f"skip_reason={self.skip_reason!r}: a skipped scallop needs a reason "
                    "like 'no_uro' (lowercase letters, digits, '_', up to 40)"
                )
        elif self.skip_reason:
            raise RecordError(
                f"skip_reason={self.skip_reason!r} given for result={self.result!r}: only skipped scallops have one"
            )
        if self.result in ("picked", "failed") and not self.arm:
            raise RecordError(f"arm='': a {self.result} scallop names the arm that picked it")
        if isinstance(self.views, bool) or not isinstance(self.views, int) or self.views < 1:
            raise RecordError(f"views={self.views!r} is out of range: allowed 1 or more")
        if self.disposition not in DISPOSITIONS:
            raise RecordError(
                f"disposition={self.disposition!r} is not allowed: choose one of {', '.join(DISPOSITIONS[1:])}"
            )
        self.lot = check_lot(self.lot)
        try:
            json.dumps(self.detail)
        except (TypeError, ValueError) as e:
            raise RecordError(f"detail: not JSON-serialisable: {e}") from None

    @property
    def wants_snapshot(self) -> bool:
        """Whether its frame is worth keeping for retraining: failed, doubtful or a bad grade."""
        return self.result == "failed" or self.doubtful or self.uro_removed is False or bool(self.adductor_hit)
