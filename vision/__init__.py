"""Cameras and detection.

* :mod:`~scallop.vision.camera` — the :class:`Camera` base class, :class:`Frame`, the OpenCV
  source (devices, files, streams, image folders);
* :mod:`~scallop.vision.pipeline` — the detection pipeline (ONNX model + geometry):
  scallops, their uro and adductor, a grasp point and a pull direction;
* :mod:`~scallop.vision.grasp` — the per-pixel geometry inside a crop: which class wins, where
  the jaws close;
* :mod:`~scallop.vision.aravis`, :mod:`~scallop.vision.genicam` — GenICam cameras through
  Aravis, and their configuration and clock maps (no Aravis needed);
* :mod:`~scallop.vision.detections` — :class:`Detections`, the one type every consumer of
  vision takes, and the reasons a scallop is not pickable;
* :mod:`~scallop.vision.evaluate` — scoring detections against labelled truth;
* :mod:`~scallop.vision.annotate` — drawing detections on a frame.

Imports neither ``scallop.robot`` nor the application.
"""
