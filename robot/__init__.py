"""The machine side of the cell, over Modbus: the arms and the belt.

* :mod:`~scallop.robot.belt` — the conveyor: encoder scale and direction, belt motion, the
  encoder sources (a Modbus counter);
* :mod:`~scallop.robot.registers` and ``profiles/*.toml`` — register maps as data, one per
  robot program;
* :mod:`~scallop.robot.transport` — Modbus TCP/RTU with reconnect back-off;
* :mod:`~scallop.robot.arm` — the controller's side of the pick handshake (at most once);
* :mod:`~scallop.robot.planning` — pick targets on the belt → checked trajectories;
* :mod:`~scallop.robot.scheduler` — which arm picks which scallop, and when.

Takes belt-frame pick targets, never vision's detections; imports neither ``scallop.vision``
nor the application.
"""
