"""Typed calibration errors.

Every failure an engineer can cause on the plant floor (a bad photo, a board spec with a
typo, robot points on one line, a calibration file from another camera) raises a subclass of
:class:`CalibrationError` whose message names the problem and says what to do. The CLI
prints it as one line; no traceback reaches the operator.
"""

from __future__ import annotations

from scallop.errors import ConfigError, DataError


class CalibrationError(DataError):
    """Base of every calibration failure; the message names the problem and the fix."""


class BoardSpecError(ConfigError, CalibrationError):
    """A board description such as ``chessboard:9x6:25`` that cannot be parsed or used (an
    option's value: a configuration error, exit code 2)."""


class ImageError(CalibrationError):
    """A photo that cannot be used at all: unreadable, corrupt, or of another resolution."""


class BoardNotFoundError(CalibrationError):
    """No usable board in any of the photos (or in the one photo a step needs)."""


class NotEnoughViewsError(CalibrationError):
    """Too few usable views (or points) left to solve for the parameters."""


class DegenerateGeometryError(CalibrationError):
    """Points that do not pin down a transform: too few, collinear, or too close together."""


class CalibrationFileError(CalibrationError):
    """A calibration file that cannot be loaded or does not fit this line."""


class FormatVersionError(CalibrationFileError):
    """A calibration file written in a format version this program does not know."""


class MissingPartError(CalibrationFileError):
    """A calibration file that lacks a part the caller needs (intrinsics, belt, encoder, an arm)."""


class CameraMismatchError(CalibrationFileError):
    """A calibration file made for another camera or another resolution."""


class StalePartError(CalibrationFileError):
    """A part that was measured on top of an older version of another part (e.g. a belt pose
    measured with intrinsics that have since been redone)."""


class RedoVerdictError(CalibrationFileError):
    """A part whose own verdict was REDO (its figures say it must not be used), loaded without
    the engineer's explicit override."""


class InputFileError(CalibrationError):
    """A points or counts file (CSV) that cannot be read: missing columns, bad numbers."""
