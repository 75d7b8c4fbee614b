"""Vision controller for a scallop uro-removal line.

One namespace, one package per layer (docs/architecture.md):

* ``scallop.errors`` — the error root and the validation helper, below everything;
  ``scallop.imagefiles`` — which files are frames (a ``x.uv.png`` is a companion, never a frame);
* ``scallop.vision``, ``scallop.robot``, ``scallop.calibration``, ``scallop.models`` — the
  libraries: cameras and detection, the arms and the belt over Modbus, calibration, the model;
* ``scallop.sim`` — the simulator, implementing the libraries' device interfaces;
* ``scallop.app`` — the application that wires them together (config, CLI, line, screen).
"""
