"""Calibration from pixels to the robot's millimetres, with verdicts an engineer can trust.

* :mod:`~scallop.calibration.camera_model` — a calibrated camera over the belt plane;
* :mod:`~scallop.calibration.boards` — chessboard and ChArUco detection;
* :mod:`~scallop.calibration.intrinsics`, :mod:`~scallop.calibration.belt`,
  :mod:`~scallop.calibration.robot`, :mod:`~scallop.calibration.encoder` — one step each;
* :mod:`~scallop.calibration.check` — drift checks against a saved calibration;
* :mod:`~scallop.calibration.store` — the line calibration file;
* :mod:`~scallop.calibration.pictures` — reading an engineer's photo folders;
  :mod:`~scallop.calibration.errors` — the typed errors.
"""
